#!/usr/bin/env python3
"""Verify an agentledger JSON Lines export with nothing but the Python standard library.

This is an independent implementation of docs/hash-chain.md: it shares no code
with the server, so the specification and the server cannot drift apart unnoticed.

Usage: verify_export.py EXPORT.jsonl [--expect-head SESSION=HEXHASH ...]
Exit status 0 when every chain verifies, 1 otherwise (the first broken seq is printed).
"""
import hashlib
import json
import sys

_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


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


def envelope(ev, payload_sha256, metadata_bytes, verdict_text):
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
        env["original_payload_sha256"] = ev.get("original_payload_sha256")
        env["original_metadata_sha256"] = ev.get("original_metadata_sha256")
    return env


def verify(lines, expected_heads=None):
    """Return a list of (project, session, first_bad_seq, reason) failures."""
    state = {}  # (project, session) -> (last_seq, last_hash) or None once broken
    failures = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        ev = json.loads(line)
        raw = raw_members(line.rstrip("\r\n"))
        key = (ev["project"], ev["session_id"])
        if key in state and state[key] is None:
            continue
        last_seq, last_hash = state.get(key, (0, None))

        def fail(seq, reason):
            failures.append((key[0], key[1], seq, reason))
            state[key] = None

        if ev["v"] not in (1, 2):
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
        digest = sha256_hex(
            jcs(envelope(ev, payload_sha256, raw["metadata"].encode("utf-8"), verdict_text))
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
        print("FAIL %s/%s: broken at seq %d: %s" % (project, session, seq, reason))
    events = sum(s[0] for s in state.values() if s)
    print("%d sessions, %d events verified, %d failed" % (len(state), events, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
