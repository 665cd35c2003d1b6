"""The official MCP Python SDK (PyPI `mcp`, pinned in .ci/run) against the
agentledger server's /mcp endpoint, over Streamable HTTP with the API key in
a header, as a user's MCP client would connect. Run by the ignored Rust test
`mcp::mcp_python_client`, which seeds session `py-session` (a tool call, a
tool response that reveals an AWS key, a memory event) under the documented
policies and passes MCP_URL, MCP_KEY and MCP_OTHER_KEY (another project's).

Both ways the SDK connects are tried: `auto` (it probes server/discover, the
2026-07-28 sessionless protocol) and `legacy` (the initialize handshake).
"""

import asyncio
import os
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

URL = os.environ["MCP_URL"]
KEY = os.environ["MCP_KEY"]
OTHER = os.environ["MCP_OTHER_KEY"]
AWS_KEY = "AKIAZ7Q2MPLEXAB3CD4E"
TOOLS = [
    "check_policy",
    "get_session_timeline",
    "list_open_alerts",
    "search_events",
    "verify_session",
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def connect(http, mode):
    return Client(streamable_http_client(URL, http_client=http), mode=mode)


async def as_owner(mode):
    async with create_mcp_http_client(headers={"x-api-key": KEY}) as http:
        async with connect(http, mode) as client:
            version = client.protocol_version
            info = client.server_info
            check(info is not None and info.name == "agentledger", f"server info {info}")

            listed = await client.list_tools()
            names = sorted(t.name for t in listed.tools)
            check(names == TOOLS, f"tools {names}")
            for t in listed.tools:
                check(t.input_schema.get("type") == "object", f"{t.name} schema {t.input_schema}")
                check(len(t.description or "") > 40, f"{t.name} has a description")
            search = next(t for t in listed.tools if t.name == "search_events")
            check(search.input_schema["properties"]["limit"]["maximum"] == 100, "search limit bounded")

            r = await client.call_tool("search_events", {"q": "user records"})
            check(not r.is_error, f"search_events: {r.content}")
            s = r.structured_content
            check(s["total"] == 1, f"search total {s}")
            ev = s["events"][0]
            check(ev["session_id"] == "py-session" and ev["seq"] == 1, f"search hit {ev}")
            check(ev["payload"]["arguments"]["query"] == "user records", f"payload {ev}")

            r = await client.call_tool("get_session_timeline", {"session_id": "py-session", "limit": 2})
            check(not r.is_error, f"timeline: {r.content}")
            t = r.structured_content
            check([e["seq"] for e in t["events"]] == [1, 2], f"timeline seqs {t}")
            check(t["events"][1]["prev_hash"] == t["events"][0]["hash"], "timeline links")
            check(t["has_more"] is True and t["next_after_seq"] == 2, f"timeline paging {t}")
            c = t["session"]["counters"]
            check(c["events"] == 3 and c["tool_calls"] == 1, f"counters {c}")
            r = await client.call_tool(
                "get_session_timeline", {"session_id": "py-session", "after_seq": 2}
            )
            check([e["seq"] for e in r.structured_content["events"]] == [3], "second page")

            r = await client.call_tool("verify_session", {"session_id": "py-session"})
            check(not r.is_error, f"verify: {r.content}")
            v = r.structured_content
            check(v["valid"] is True and v["events"] == 3, f"verify {v}")
            check(len(v["head_hash"]) == 64, f"head hash {v}")

            # A secret was read earlier in the session: no e-mail may leave.
            r = await client.call_tool(
                "check_policy",
                {"session_id": "py-session", "agent_id": "my-agent", "tool": "send_email",
                 "arguments": {"to": "a@b.c"}},
            )
            check(not r.is_error, f"check_policy: {r.content}")
            d = r.structured_content
            check(d["allowed"] is False and d["decision"] == "deny", f"decision {d}")
            check(d["policies"] == ["deny-email-after-secret"], f"policies {d}")
            check(d["recorded"] is False, "the check is not recorded")
            r = await client.call_tool(
                "check_policy",
                {"session_id": "elsewhere", "agent_id": "my-agent", "tool": "http_request",
                 "arguments": {"body": f"key {AWS_KEY}"}},
            )
            d = r.structured_content
            check(d["decision"] == "deny" and d["findings"][0]["detector"] == "secrets", f"finding {d}")
            check(AWS_KEY not in str(d) and AWS_KEY not in str(r.content), "the secret is not echoed")
            r = await client.call_tool("check_policy", {"session_id": "ok", "agent_id": "a", "tool": "ls"})
            check(r.structured_content["decision"] == "allow", f"allow {r.structured_content}")

            # The Rust test set a rule on denied events: the denied tool call
            # it sent fired one alert.
            r = await client.call_tool("list_open_alerts", {})
            check(not r.is_error, f"list_open_alerts: {r.content}")
            alerts = r.structured_content["alerts"]
            check(len(alerts) == 1, f"open alerts {alerts}")
            check(alerts[0]["session_id"] == "py-alerts", f"alert {alerts[0]}")
            check(alerts[0]["rule_name"] == "denied", f"alert {alerts[0]}")
            r = await client.call_tool("list_open_alerts", {"limit": 1000})
            check(r.is_error and "limit" in r.content[0].text, f"alerts limit {r.content}")

            # Errors are tool errors with a clear message.
            r = await client.call_tool("search_events", {"limit": 1000})
            check(r.is_error, "limit over 100 is an error")
            check("limit" in r.content[0].text, f"error text {r.content}")
            r = await client.call_tool("verify_session", {"session_id": "no-such-session"})
            check(r.is_error and "session not found" in r.content[0].text, f"not found {r.content}")
            return version


async def as_other_project(mode):
    async with create_mcp_http_client(headers={"x-api-key": OTHER}) as http:
        async with connect(http, mode) as client:
            r = await client.call_tool("get_session_timeline", {"session_id": "py-session"})
            check(r.is_error and "session not found" in r.content[0].text, "other project: timeline")
            r = await client.call_tool("verify_session", {"session_id": "py-session"})
            check(r.is_error, "other project: verify")
            r = await client.call_tool("search_events", {"session_id": "py-session"})
            check(r.structured_content["total"] == 0, "other project: search finds nothing")
            r = await client.call_tool("list_open_alerts", {})
            check(r.structured_content["alerts"] == [], "other project: no alerts")


async def without_key():
    async with create_mcp_http_client() as http:
        r = await http.post(
            URL,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
        check(r.status_code == 401, f"no key: {r.status_code}")
    failed = False
    try:
        async with create_mcp_http_client(headers={"x-api-key": "al_wrong_000000000000000000"}) as http:
            async with connect(http, "legacy") as client:
                await client.list_tools()
    except BaseException:  # the SDK raises an exception group on the 401
        failed = True
    check(failed, "a wrong key cannot connect")


async def main():
    for mode in ["auto", "legacy"]:
        version = await as_owner(mode)
        await as_other_project(mode)
        print(f"mode {mode} (protocol {version}): ok", flush=True)
    await without_key()
    print("mcp client: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
