#!/usr/bin/env python3
"""Verify an agentledger JSON Lines export with nothing but the Python standard library.

This is an independent implementation of docs/hash-chain.md: it shares no code
with the server, so the specification and the server cannot drift apart unnoticed.

Usage: verify_export.py EXPORT.jsonl [--expect-head SESSION=HEXHASH ...]
                        [--log-proof FILE ... [--log-key VKEY [--witness-policy FILE]]]
Exit status 0 when every chain verifies, 1 otherwise (the first broken seq is printed).

With --log-key or --log-proof, each intact session must be in its project's transparency
log (docs/transparency.md, "Offline verification"): the export's log proof line for the
session (a C2SP tlog-proof of its newest event in a signed checkpoint), or a --log-proof file
(from GET /log/proof/inclusion/{id}?format=text) of its last event, must include the event's
leaf, by RFC 9162's algorithm, in the tree of the checkpoint of the session's project's log.
With --log-key the checkpoint's Ed25519 signature is checked too when the `cryptography`
package is installed (the standard library has no Ed25519); otherwise the script says it did
not check it. With --witness-policy (a C2SP tlog-policy file; its log lines are ignored, the
log is the one --log-key names) the checkpoint must also carry C2SP tlog-cosignature/v1
cosignatures by witnesses meeting the policy's quorum, and any cosignature by a listed witness
must verify; that needs the `cryptography` package, and without it the script refuses rather
than pass unchecked.
"""
import base64
import datetime
import hashlib
import json
import re
import sys

_WS = " \t\r\n"
_DECODER = json.JSONDecoder()

# The members an export line may have (docs/hash-chain.md, "Export format").
# Everything else is refused: a member the hash does not cover could say
# anything, and a reader shown it could not tell.
_REQUIRED = (
    "v", "project", "session_id", "seq", "id", "agent_id", "kind", "source_type",
    "dialect", "severity", "client_ts", "server_ts", "payload", "metadata",
    "payload_sha256", "prev_hash", "hash",
)
# An erased event (payload null): {"by", "at", "record_seq"}, checked against
# the chained event_erased record that must follow it in its session.
_OPTIONAL = ("erased",)
# Members that only some envelope versions hash, with those versions.
_VERSIONED = {
    "verdict": (2, 3),
    "original_payload_sha256": (2,),
    "original_metadata_sha256": (2,),
    "original_payload_hmac": (3,),
    "original_metadata_hmac": (3,),
    # The session header, on a session's first line (v3 hashes it there).
    "session_agent_id": (3,),
    "session_system_prompt": (3,),
    "session_metadata": (3,),
    "session_created_at": (3,),
}
_KNOWN = frozenset(_REQUIRED + _OPTIONAL) | frozenset(_VERSIONED)
SUPPORTED_VERSIONS = (1, 2, 3)


class BadLine(ValueError):
    """A line that cannot mean one thing to every reader."""


def _unique_members(pairs):
    """object_pairs_hook: refuse a member name given twice in one object.

    Python's json keeps the last value, other readers the first; I-JSON
    (RFC 7493) forbids the repetition, so neither reading is trusted. The hook
    runs for every object at every depth (payload, metadata, verdict too), and
    sees names after escapes are decoded ("verd\\u0069ct" is "verdict").
    """
    seen = set()
    for name, _ in pairs:
        if name in seen:
            raise BadLine("member %s appears twice in one object" % json.dumps(name))
        seen.add(name)
    return dict(pairs)


def _no_constant(name):
    # Python reads NaN and Infinity; JSON (and the server) do not.
    raise BadLine("not JSON: %s" % name)


def _finite_float(text):
    # I-JSON: a number beyond a double's range (1e400) reads as infinity here
    # and as an error elsewhere, so it is refused like the server refuses it.
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadLine("number %s is out of the range of a double" % text[:32])
    return value


def parse_line(line):
    """The line's members, refusing repeated, unknown and misplaced ones."""
    try:
        ev = json.loads(
            line,
            object_pairs_hook=_unique_members,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except BadLine:
        raise
    except ValueError as e:
        raise BadLine("not JSON: %s" % e)
    if not isinstance(ev, dict):
        raise BadLine("not a JSON object")
    for name in ev:
        if name not in _KNOWN:
            raise BadLine("unknown member %s" % json.dumps(name))
    missing = [n for n in _REQUIRED if n not in ev]
    if missing:
        raise BadLine("missing member %s" % json.dumps(missing[0]))
    for name in ("client_ts", "server_ts"):
        if not (ev[name] is None and name == "client_ts") and not _canonical_ts(ev[name]):
            raise BadLine(
                "member %s is not a canonical timestamp "
                "(YYYY-MM-DDTHH:MM:SS.ffffffZ, UTC, years 0001 to 9999)" % json.dumps(name)
            )
    v = ev["v"]
    if v in SUPPORTED_VERSIONS:
        for name, versions in _VERSIONED.items():
            if name in ev and v not in versions:
                raise BadLine(
                    "member %s is not part of envelope version %d" % (json.dumps(name), v)
                )
    return ev


def _canonical_ts(text):
    """Whether `text` is a timestamp in the one form the server hashes.

    The hash covers the text, so any other spelling of the same instant (an
    offset, fewer digits) or an instant outside years 0001..9999 cannot be
    what the server wrote.
    """
    if not isinstance(text, str):
        return False
    try:
        t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    canonical = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond,
    )
    return canonical == text


def _lenient_location(line):
    """(project, session, seq) of a refused line, as far as a plain parse can tell.

    Only used to say where a refused line is; nothing read here is trusted.
    """
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict):
        return None
    project, session, seq = ev.get("project"), ev.get("session_id"), ev.get("seq")
    if isinstance(project, str) and isinstance(session, str) and type(seq) is int:
        return project, session, seq
    return None


def raw_members(text):
    """Map each top-level member of a JSON object to its exact source text.

    The export writes `payload` and `metadata` verbatim, byte for byte as they
    were hashed; json.loads would normalise them, so we slice them out instead.
    """
    def skip(i):
        while i < len(text) and text[i] in _WS:
            i += 1
        return i

    i = skip(0)
    if text[i] != "{":
        raise ValueError("line is not a JSON object")
    members = {}
    i = skip(i + 1)
    if text[i] == "}":
        return members
    while True:
        key, i = _DECODER.raw_decode(text, skip(i))
        i = skip(i)
        if text[i] != ":":
            raise ValueError("expected ':'")
        start = skip(i + 1)
        _, end = _DECODER.raw_decode(text, start)
        members[key] = text[start:end]
        i = skip(end)
        if text[i] == ",":
            i += 1
            continue
        if text[i] == "}":
            return members
        raise ValueError("expected ',' or '}'")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def jcs(obj):
    """RFC 8785 for the envelope's value types (strings, integers, null; ASCII keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def session_sha256(ev, raw):
    """v3: the hash of the session header carried by a session's first line."""
    header = ("session_agent_id", "session_created_at", "session_metadata")
    present = [name in ev for name in header]
    if ev["v"] < 3:
        return None
    if ev["seq"] == 1 and not all(present):
        raise BadLine("the first event of a v3 session carries the session header (%s)" % ", ".join(header))
    if ev["seq"] != 1:
        if any(present) or "session_system_prompt" in ev:
            raise BadLine("only a session's first line carries its header")
        return None
    if not isinstance(ev["session_created_at"], str) or not _canonical_ts(ev["session_created_at"]):
        raise BadLine("member \"session_created_at\" is not a canonical timestamp")
    if not isinstance(ev["session_metadata"], dict):
        raise BadLine("session_metadata must be a JSON object")
    if not isinstance(ev["session_agent_id"], str) or not isinstance(
        ev.get("session_system_prompt"), (str, type(None))
    ):
        raise BadLine("session_agent_id must be a string, session_system_prompt a string or absent")
    return sha256_hex(jcs({
        "agent_id": ev["session_agent_id"],
        "created_at": ev["session_created_at"],
        "metadata_sha256": sha256_hex(raw["session_metadata"].encode("utf-8")),
        "session_id": ev["session_id"],
        "system_prompt": ev.get("session_system_prompt"),
    }))


def envelope(ev, payload_sha256, metadata_bytes, verdict_text, session_hash=None):
    env = {
        "v": ev["v"],
        "project": ev["project"],
        "session_id": ev["session_id"],
        "seq": ev["seq"],
        "event_id": ev["id"],
        "agent_id": ev["agent_id"],
        "kind": ev["kind"],
        "source_type": ev["source_type"],
        "dialect": ev["dialect"],
        "severity": ev["severity"],
        "client_ts": ev["client_ts"],
        "server_ts": ev["server_ts"],
        "payload_sha256": payload_sha256,
        "metadata_sha256": sha256_hex(metadata_bytes),
        "prev_hash": ev["prev_hash"],
    }
    if ev["v"] >= 2:
        # Version 2: the verdict's stored bytes, and the originals of redacted bytes.
        env["verdict_sha256"] = (
            None if verdict_text is None else sha256_hex(verdict_text.encode("utf-8"))
        )
    if ev["v"] == 2:
        env["original_payload_sha256"] = ev.get("original_payload_sha256")
        env["original_metadata_sha256"] = ev.get("original_metadata_sha256")
    elif ev["v"] == 3:
        # Version 3: keyed commitments (HMAC) to the originals instead of plain
        # SHA-256, so a short redacted secret cannot be found by guessing.
        env["original_payload_hmac"] = ev.get("original_payload_hmac")
        env["original_metadata_hmac"] = ev.get("original_metadata_hmac")
        # The session header (agent, system prompt, metadata, creation time),
        # covered by the session's first event.
        env["session_sha256"] = session_hash
    return env


def parse_proof_line(line):
    """(project, session, seq, tlog-proof bytes) of an export's log proof line."""
    obj = json.loads(line, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    body = obj.get("log_proof") if isinstance(obj, dict) and len(obj) == 1 else None
    members = ("project", "session_id", "seq", "event_id", "tlog_proof")
    if not isinstance(body, dict) or sorted(body) != sorted(members):
        raise BadLine("a log proof line has exactly the members %s" % ", ".join(members))
    if type(body["seq"]) is not int or not all(
        isinstance(body[m], str) for m in ("project", "session_id", "event_id", "tlog_proof")
    ):
        raise BadLine("a log proof line's members have the wrong types")
    return body["project"], body["session_id"], body["seq"], body["tlog_proof"].encode("utf-8")


def verify(lines, expected_heads=None, log=None):
    """Return the sessions' state and a list of (project, session, first_bad_seq, reason)
    failures. With a dict `log`, it is filled with "hashes" ((project, session) -> every
    hash, seq 1 first) and "proofs" (the log proof lines, parsed)."""
    state = {}  # (project, session) -> (last_seq, last_hash) or None once broken
    # (project, session) -> ({erased seq: line's erased event}, {seqs with a record})
    erasures = {}
    failures = []
    hashes = {}
    proofs = []
    if log is not None:
        log["hashes"], log["proofs"] = hashes, proofs
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith('{"log_proof"'):
            try:
                proofs.append(("line %d" % number,) + parse_proof_line(line))
            except (BadLine, ValueError) as e:
                failures.append((None, None, None, "line %d (log proof): %s" % (number, e)))
            continue
        try:
            ev = parse_line(line)
        except BadLine as e:
            # The line's session, if a plain reading can name it, is broken
            # here; otherwise the line is reported on its own.
            where = _lenient_location(line)
            if where is None:
                failures.append((None, None, None, "line %d: %s" % (number, e)))
                continue
            key = (where[0], where[1])
            if not (key in state and state[key] is None):
                failures.append((key[0], key[1], where[2], "line %d: %s" % (number, e)))
                state[key] = None
            continue
        raw = raw_members(line.rstrip("\r\n"))
        key = (ev["project"], ev["session_id"])
        if key in state and state[key] is None:
            continue
        last_seq, last_hash = state.get(key, (0, None))

        def fail(seq, reason):
            failures.append((key[0], key[1], seq, reason))
            state[key] = None

        if ev["v"] not in SUPPORTED_VERSIONS:
            fail(ev["seq"], "unsupported envelope version %r" % ev["v"])
            continue
        if ev["seq"] != last_seq + 1:
            if ev["seq"] > last_seq + 1:
                fail(last_seq + 1, "event seq %d is missing" % (last_seq + 1))
            else:
                fail(ev["seq"], "seq %d is out of order or repeated" % ev["seq"])
            continue
        pending, recorded = erasures.setdefault(key, ({}, set()))
        if "erased" in ev:
            # The payload is gone: its digest is taken as given, and only
            # once a later event_erased record in this chain confirms it.
            problem = _erased_problem(ev)
            if problem:
                fail(ev["seq"], "line %d: %s" % (number, problem))
                continue
            pending[ev["seq"]] = ev
            payload_sha256 = ev["payload_sha256"]
        else:
            payload_sha256 = sha256_hex(raw["payload"].encode("utf-8"))
            if payload_sha256 != ev["payload_sha256"]:
                fail(ev["seq"], "payload bytes do not match payload_sha256")
                continue
            if ev["kind"] == "event_erased":
                problem = _record_problem(ev, pending, recorded)
                if problem:
                    fail(ev["seq"], "line %d: %s" % (number, problem))
                    continue
        if ev["prev_hash"] != last_hash:
            fail(ev["seq"], "prev_hash does not match the previous event")
            continue
        verdict_text = raw.get("verdict")
        if verdict_text == "null":
            verdict_text = None
        try:
            session_hash = session_sha256(ev, raw)
        except BadLine as e:
            fail(ev["seq"], "line %d: %s" % (number, e))
            continue
        digest = sha256_hex(
            jcs(envelope(ev, payload_sha256, raw["metadata"].encode("utf-8"), verdict_text, session_hash))
        )
        if digest != ev["hash"]:
            fail(ev["seq"], "hash does not match the recomputed envelope hash")
            continue
        state[key] = (ev["seq"], digest)
        hashes.setdefault(key, []).append(digest)
    for key, (pending, _) in erasures.items():
        if state.get(key) is not None and pending:
            failures.append((key[0], key[1], min(pending),
                             "the payload is erased but no event_erased record in the chain names it"))
            state[key] = None
    for session, head in (expected_heads or {}).items():
        matches = [k for k in state if k[1] == session]
        if not matches:
            failures.append(("?", session, 1, "session not in export"))
        elif state[matches[0]] is not None and state[matches[0]][1] != head:
            failures.append((matches[0][0], session, state[matches[0]][0] + 1, "chain does not end at the expected head"))
    return state, failures


def _erased_problem(ev):
    """Why an erased line cannot be taken as erased, or None."""
    e = ev["erased"]
    if ev["payload"] is not None:
        return "an erased event still holds a payload"
    if not isinstance(e, dict) or set(e) != {"by", "at", "record_seq"}:
        return "member \"erased\" is not {by, at, record_seq}"
    if not isinstance(e["by"], str) or not _canonical_ts(e["at"]):
        return "member \"erased\" has no valid by / at"
    if not isinstance(e["record_seq"], int) or e["record_seq"] <= ev["seq"]:
        return "the erasure's record does not follow the erased event"
    if ev["kind"] == "event_erased":
        return "an erasure record cannot itself be erased"
    return None


def _record_problem(ev, pending, recorded):
    """Why an event_erased record does not match the erased line it names, or None."""
    r = ev["payload"]
    fields = {"erasedEventId", "erasedSeq", "payloadSha256", "erasedBy", "reason", "usage"}
    if (not isinstance(r, dict) or set(r) - {"tool"} != fields
            or not isinstance(r["erasedSeq"], int) or not isinstance(r.get("tool"), (str, type(None)))):
        return "the event_erased payload is not an erasure record"
    seq = r["erasedSeq"]
    if seq >= ev["seq"]:
        return "an event_erased record names an event that does not precede it"
    if seq in recorded:
        return "seq %d has a second event_erased record" % seq
    recorded.add(seq)
    erased = pending.pop(seq, None)
    if erased is None:
        return "an event_erased record names seq %d, whose payload is not erased" % seq
    e = erased["erased"]
    if (r["erasedEventId"] != erased["id"] or r["payloadSha256"] != erased["payload_sha256"]
            or r["erasedBy"] != e["by"] or e["at"] != ev["server_ts"] or e["record_seq"] != ev["seq"]):
        return ("the event_erased record does not match erased seq %d (its id, payload_sha256, "
                "who erased it, when, or where the record is)" % seq)
    return None


# ---- transparency log (docs/transparency.md) ----------------------------------------------

def leaf_entry(session, seq, hash_hex):
    """The log leaf of an event: 0x01, u16 BE session id length, session id, u64 BE seq, hash."""
    sid = session.encode("utf-8")
    return b"\x01" + len(sid).to_bytes(2, "big") + sid + seq.to_bytes(8, "big") + bytes.fromhex(hash_hex)


def _node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf_hash, index, size, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def parse_tlog_proof(data):
    """(index, [hashes], note text, [signature lines]) of a C2SP tlog-proof."""
    head, sep, note = data.partition(b"\n\n")
    lines = head.split(b"\n")
    if not sep or lines[0] != b"c2sp.org/tlog-proof@v1":
        raise ValueError("not a c2sp.org/tlog-proof@v1")
    lines = lines[1:]
    if lines and lines[0].startswith(b"extra "):
        lines = lines[1:]
    if not lines or not lines[0].startswith(b"index "):
        raise ValueError("no index line")
    index = _decimal(lines[0][6:], "index")
    proof = [base64.b64decode(h, validate=True) for h in lines[1:]]
    if any(len(h) != 32 for h in proof):
        raise ValueError("a proof hash is not 32 bytes")
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise ValueError("the checkpoint note has no signature block")
    text, sigs = note[: cut + 1], note[cut + 2 :].decode("utf-8").split("\n")
    return index, proof, text, [s for s in sigs if s]


def _decimal(text, what):
    """A non-negative integer written as C2SP writes them: ASCII decimal, no leading zeros (int()
    would also take "07", "0_7", " 7" and "-1")."""
    if not re.fullmatch(rb"0|[1-9][0-9]{0,19}", text):
        raise ValueError("%s %r is not a decimal number without leading zeros" % (what, text.decode("utf-8", "replace")))
    value = int(text)
    if value >= 1 << 64:
        raise ValueError("%s %d is out of range" % (what, value))
    return value


def _signatures_by(sigs, name, key_id):
    """The signature bytes (after the 4-byte key ID) of a note's signature lines by key
    (name, key_id), in order."""
    for line in sigs:
        if not line.startswith("\u2014 "):
            continue
        signer, _, b64 = line[2:].rpartition(" ")
        if signer != name:
            continue  # another key's line: not read (it may not even decode)
        try:
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            continue
        if raw[:4] == key_id:
            yield raw[4:]


def note_signed_by(text, sigs, vkey):
    """True/False if the note carries a valid signature by vkey; None without an Ed25519 library."""
    name, _, key = _vkey(vkey, (b"\x01",))
    want_id = hashlib.sha256(name.encode() + b"\n\x01" + key).digest()[:4]
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        return None
    public = Ed25519PublicKey.from_public_bytes(key)
    for signature in _signatures_by(sigs, name, want_id):
        try:
            public.verify(signature, text)
            return True
        except InvalidSignature:
            return False
    return False


# Public key lengths by signature type: Ed25519 note keys and cosigners, ML-DSA-44 cosigners.
_KEY_LENGTHS = {0x01: 32, 0x04: 32, 0x06: 1312}


def _vkey(text, allowed):
    """(name, algorithm byte, public key) of a note verifier key of an allowed type."""
    # The base64 key may hold "+" itself: name and key ID never do.
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError("not a verifier key (name+keyid+key)")
    name, key_id, material = parts
    material = base64.b64decode(material, validate=True)
    if material[:1] not in allowed or len(material) != 1 + _KEY_LENGTHS[material[0]]:
        raise ValueError("not a key of type %s" % " or ".join("0x%02x" % a[0] for a in allowed))
    if hashlib.sha256(name.encode() + b"\n" + material).digest()[:4].hex() != key_id:
        raise ValueError("the key's ID does not match its key")
    return name, material[0], material[1:]


def parse_witness_policy(data):
    """A C2SP tlog-policy: {"witnesses": [(name, vkey name, type, key)], "groups": {name: (k, members)},
    "quorum": name or None}. Log lines are read and ignored (--log-key names the log)."""
    witnesses, groups, used, quorum = [], {}, set(), False
    names = set()
    for number, line in enumerate(data.decode("utf-8").split("\n"), 1):
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in line):
            raise ValueError("line %d: control character other than tab" % number)
        items = line.replace("\t", " ").split()
        if not items or items[0].startswith("#"):
            continue
        word = items[0]
        if word == "log":
            if not 2 <= len(items) <= 3:
                raise ValueError("line %d: wrong number of items for log" % number)
            _vkey(items[1], (b"\x01",))
        elif word == "witness":
            if not 3 <= len(items) <= 4:
                raise ValueError("line %d: wrong number of items for witness" % number)
            if items[1] in names or items[1] == "none":
                raise ValueError("line %d: name %r is already defined or reserved" % (number, items[1]))
            try:
                key_name, alg, key = _vkey(items[2], (b"\x04", b"\x01", b"\x06"))
                if alg == 0x06 and len(key_name.encode()) > 255:
                    raise ValueError("an ML-DSA-44 cosigner's name is at most 255 bytes")
            except ValueError as e:
                raise ValueError("line %d: %s" % (number, e))
            if any(key == w[3] for w in witnesses):
                raise ValueError("line %d: this public key is already listed" % number)
            names.add(items[1])
            witnesses.append((items[1], key_name, 0x06 if alg == 0x06 else 0x04, key))
        elif word == "group":
            if len(items) < 4:
                raise ValueError("line %d: wrong number of items for group" % number)
            if items[1] in names or items[1] == "none":
                raise ValueError("line %d: name %r is already defined or reserved" % (number, items[1]))
            members = items[3:]
            for m in members:
                if m not in names:
                    raise ValueError("line %d: name %r is not defined on an earlier line" % (number, m))
                if m in used or members.count(m) > 1:
                    raise ValueError("line %d: %r is already a member of a group" % (number, m))
            used.update(members)
            k = {"all": len(members), "any": 1}.get(items[2])
            if k is None:
                if not items[2].isdigit() or items[2] != str(int(items[2])) or not 1 <= int(items[2]) <= len(members):
                    raise ValueError("line %d: threshold must be all, any or a decimal 1..=members" % number)
                k = int(items[2])
            names.add(items[1])
            groups[items[1]] = (k, members)
        elif word == "quorum":
            if len(items) != 2:
                raise ValueError("line %d: wrong number of items for quorum" % number)
            if quorum is not False:
                raise ValueError("line %d: more than one quorum line" % number)
            if items[1] != "none" and items[1] not in names:
                raise ValueError("line %d: name %r is not defined on an earlier line" % (number, items[1]))
            quorum = None if items[1] == "none" else items[1]
        else:
            raise ValueError("line %d: unknown keyword %r (want log, witness, group or quorum)" % (number, word))
    if quorum is False:
        raise ValueError("the policy has no quorum line")
    return {"witnesses": witnesses, "groups": groups, "quorum": quorum}


def check_quorum(policy, text, sigs):
    """The policy names of the witnesses whose cosignatures verified, or a ValueError saying
    why the checkpoint does not meet the policy (C2SP tlog-cosignature/v1, signed-note)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        raise ValueError("cannot check witness cosignatures: the cryptography package is not installed")
    cosigned, unchecked = [], []
    for name, key_name, alg, key in policy["witnesses"]:
        key_id = hashlib.sha256(key_name.encode() + b"\n" + bytes([alg]) + key).digest()[:4]
        for raw in _signatures_by(sigs, key_name, key_id):
            timestamp = int.from_bytes(raw[:8], "big")
            try:
                if timestamp >= 1 << 63:
                    raise InvalidSignature()
                if alg == 0x04:
                    if len(raw) != 8 + 64:
                        raise InvalidSignature()
                    message = b"cosignature/v1\ntime %d\n" % timestamp + text
                    Ed25519PublicKey.from_public_bytes(key).verify(raw[8:], message)
                else:
                    # ML-DSA-44 subtree/v1: the binary cosigned_message, pure ML-DSA, no context.
                    try:
                        from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey
                    except ImportError:
                        # Not counted; the quorum may still be met without it.
                        if name not in unchecked:
                            unchecked.append(name)
                        continue
                    lines = text.split(b"\n")
                    origin, size = lines[0], _decimal(lines[1], "checkpoint size")
                    root = base64.b64decode(lines[2], validate=True)
                    if len(raw) != 8 + 2420 or not 0 < len(origin) < 256 or len(root) != 32:
                        raise InvalidSignature()
                    message = (b"subtree/v1\n\x00" + bytes([len(key_name.encode())]) + key_name.encode()
                               + raw[:8] + bytes([len(origin)]) + origin
                               + (0).to_bytes(8, "big") + size.to_bytes(8, "big") + root)
                    MLDSA44PublicKey.from_public_bytes(key).verify(raw[8:], message)
            except InvalidSignature:
                raise ValueError("the cosignature of witness %s does not verify" % name)
            if name not in cosigned:
                cosigned.append(name)

    def met(member):
        if member in policy["groups"]:
            k, members = policy["groups"][member]
            return sum(1 for m in members if met(m)) >= k
        return member in cosigned

    if policy["quorum"] is not None and not met(policy["quorum"]):
        why = "cosignatures by %s do not meet the quorum" % (cosigned or "no witness")
        if unchecked:
            why += " (not checked, this cryptography package has no ML-DSA: %s)" % ", ".join(unchecked)
        raise ValueError(why)
    return cosigned


def _encoded_project(project):
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(chr(b) if b in safe else "%%%02X" % b for b in project.encode("utf-8"))


def check_log(state, proof_files, vkey, log, policy=None):
    """Failures (project, session, None, reason) of intact sessions not proved in the log."""
    files = []
    failures = []
    for path in proof_files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            files.append((path,) + parse_tlog_proof(data))
        except ValueError as e:
            # Named once, and not a candidate: other proofs may still prove the sessions.
            failures.append((None, None, None, "--log-proof %s: %s" % (path, e)))
    for (project, session), last in state.items():
        if last is None:
            continue
        chain = log["hashes"].get((project, session), [])
        # Candidates (where, seq, parsed proof): the export's proof lines for this session,
        # then the files (each for the session's last event).
        candidates = []
        for where, p, s, seq, data in log["proofs"]:
            if (p, s) == (project, session):
                try:
                    candidates.append((where, seq, parse_tlog_proof(data)))
                except ValueError as e:
                    failures.append((project, session, None, "%s: %s" % (where, e)))
        candidates += [(f[0], last[0], f[1:]) for f in files]
        proved, why_not = None, []
        for where, seq, (index, proof, text, sigs) in candidates:
            if not 1 <= seq <= len(chain):
                continue
            leaf = hashlib.sha256(b"\x00" + leaf_entry(session, seq, chain[seq - 1])).digest()
            lines = text.split(b"\n")
            try:
                origin, size = lines[0].decode("utf-8"), _decimal(lines[1], "checkpoint size")
                root = base64.b64decode(lines[2], validate=True)
            except (ValueError, IndexError) as e:
                why_not.append("%s: the checkpoint does not parse: %s" % (where, e))
                continue
            if not verify_inclusion(leaf, index, size, proof, root):
                continue
            # The leaf does not name the project: the same session's events copied into another
            # log prove into it too. Each candidate is held to this project's log and the log's
            # key before one is chosen, so a proof of another log cannot displace a valid one.
            if not origin.endswith("/" + _encoded_project(project)):
                why_not.append("%s: the proof is of log %s, not of this project's" % (where, origin))
                continue
            try:
                signed = note_signed_by(text, sigs, vkey) if vkey else None
            except ValueError as e:
                why_not.append("%s: the checkpoint's signatures do not parse: %s" % (where, e))
                continue
            if signed is False:
                why_not.append("%s: the checkpoint is not signed by the given log key" % where)
                continue
            witnesses = None
            if policy is not None:
                try:
                    witnesses = check_quorum(policy, text, sigs)
                except ValueError as e:
                    why_not.append("%s: witness policy: %s" % (where, e))
                    continue
            if proved is None or seq > proved[-3]:
                proved = (where, index, origin, size, seq, signed, witnesses)
        if proved is None:
            reason = "no log proof proves one of its events (last seq %d)" % last[0]
            if why_not:
                reason = "no log proof holds: " + "; ".join(why_not)
            failures.append((project, session, None, reason))
            continue
        path, index, origin, size, seq, signed, witnesses = proved
        how = "signature checked" if signed else "signature NOT checked (give --log-key; needs the cryptography package)"
        if witnesses is not None:
            how += ", cosigned by %s" % ", ".join(witnesses)
        print("OK %s/%s: seq %d of %d is leaf %d of %s at size %d (%s; %s)" % (project, session, seq, last[0], index, origin, size, path, how))
    return failures


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    heads = {}
    proof_files = []
    vkey = None
    policy = None
    args = argv[2:]
    while args:
        if args[0] == "--expect-head" and len(args) > 1:
            session, _, head = args[1].partition("=")
            heads[session] = head
            args = args[2:]
        elif args[0] == "--log-proof" and len(args) > 1:
            proof_files.append(args[1])
            args = args[2:]
        elif args[0] == "--log-key" and len(args) > 1:
            vkey = args[1]
            args = args[2:]
        elif args[0] == "--witness-policy" and len(args) > 1:
            try:
                with open(args[1], "rb") as f:
                    policy = parse_witness_policy(f.read())
            except (OSError, ValueError, UnicodeDecodeError) as e:
                print("--witness-policy %s: %s" % (args[1], e), file=sys.stderr)
                return 2
            args = args[2:]
        else:
            print("unknown argument %r" % args[0], file=sys.stderr)
            return 2
    if policy is not None and vkey is None:
        print("--witness-policy needs --log-key (the policy's quorum is over that log's checkpoints)", file=sys.stderr)
        return 2
    log = {}
    with open(argv[1], encoding="utf-8") as f:
        state, failures = verify(f, heads, log)
    if proof_files or vkey:
        failures += check_log(state, proof_files, vkey, log, policy)
    elif log["proofs"]:
        print("%d log proof lines not checked: pass --log-key to check the sessions are in the transparency log" % len(log["proofs"]))
    for project, session, seq, reason in failures:
        if seq is None and project is not None:
            print("FAIL %s/%s: %s" % (project, session, reason))
        elif seq is None:
            print("FAIL %s" % reason)
        else:
            print("FAIL %s/%s: broken at seq %d: %s" % (project, session, seq, reason))
    events = sum(s[0] for s in state.values() if s)
    print("%d sessions, %d events verified, %d failed" % (len(state), events, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
