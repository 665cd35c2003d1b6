#!/usr/bin/env python3
"""Verify an agentledger JSON Lines export with nothing but the Python standard library.

This is an independent implementation of docs/hash-chain.md: it shares no code
with the server, so the specification and the server cannot drift apart unnoticed.

Usage: verify_export.py EXPORT.jsonl [--expect-head SESSION=HEXHASH ...]
Exit status 0 when every chain verifies, 1 otherwise (the first broken seq is printed).
"""
import datetime
import hashlib
import json
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
_OPTIONAL = ()
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


def verify(lines, expected_heads=None):
    """Return a list of (project, session, first_bad_seq, reason) failures."""
    state = {}  # (project, session) -> (last_seq, last_hash) or None once broken
    failures = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
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
        payload_sha256 = sha256_hex(raw["payload"].encode("utf-8"))
        if payload_sha256 != ev["payload_sha256"]:
            fail(ev["seq"], "payload bytes do not match payload_sha256")
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
    for session, head in (expected_heads or {}).items():
        matches = [k for k in state if k[1] == session]
        if not matches:
            failures.append(("?", session, 1, "session not in export"))
        elif state[matches[0]] is not None and state[matches[0]][1] != head:
            failures.append((matches[0][0], session, state[matches[0]][0] + 1, "chain does not end at the expected head"))
    return state, failures


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    heads = {}
    args = argv[2:]
    while args:
        if args[0] == "--expect-head" and len(args) > 1:
            session, _, head = args[1].partition("=")
            heads[session] = head
            args = args[2:]
        else:
            print("unknown argument %r" % args[0], file=sys.stderr)
            return 2
    with open(argv[1], encoding="utf-8") as f:
        state, failures = verify(f, heads)
    for project, session, seq, reason in failures:
        if seq is None:
            print("FAIL %s" % reason)
        else:
            print("FAIL %s/%s: broken at seq %d: %s" % (project, session, seq, reason))
    events = sum(s[0] for s in state.values() if s)
    print("%d sessions, %d events verified, %d failed" % (len(state), events, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
