"""The real AgentLens SDK (`agentlensai`, unmodified) against agentledger.

A stub OpenAI-compatible server (standard library) answers one chat
completion; the SDK's OpenAI auto-instrumentation records the call into
agentledger; then every SDK read method agentledger serves must return
parsed models whose values match what was sent, and a feature agentledger
does not have must raise the SDK's error for a 501.

Run by crates/server/tests/api/agentlens_sdk.rs with AGENTLEDGER_URL and
AGENTLEDGER_KEY set. Exits non-zero (with the reason) on any mismatch.
"""

import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import agentlensai
import openai
from agentlensai import AgentLensClient
from agentlensai.exceptions import AgentLensError
from agentlensai.models import EventQuery, LlmAnalyticsParams, SessionQuery

COMPLETION = "Paris is the capital of France."
PROMPT = "What is the capital of France?"
MODEL = "gpt-4o-mini"
USAGE = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}


class StubOpenAI(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like OpenAI would (non-streaming)."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions" or request.get("stream"):
            self.send_error(404)
            return
        body = json.dumps({
            "id": "chatcmpl-stub-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": request.get("model", MODEL),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": COMPLETION},
                "finish_reason": "stop",
            }],
            "usage": USAGE,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def check(cond, what, got=None):
    if not cond:
        sys.exit(f"FAIL: {what}" + ("" if got is None else f": got {got!r}"))


def main():
    url = os.environ["AGENTLEDGER_URL"]
    key = os.environ["AGENTLEDGER_KEY"]
    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubOpenAI)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    stub_url = f"http://127.0.0.1:{stub.server_address[1]}/v1"

    session_id = f"sdk-e2e-{uuid.uuid4()}"
    agent_id = "sdk-e2e-agent"
    agentlensai.init(server_url=url, api_key=key, agent_id=agent_id,
                     session_id=session_id, sync_mode=True, integrations=["openai"])
    llm = openai.OpenAI(base_url=stub_url, api_key="sk-stub")
    reply = llm.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}])
    check(reply.choices[0].message.content == COMPLETION, "the stub answered", reply)
    agentlensai.shutdown()  # flushes what the instrumentation queued

    client = AgentLensClient(url, api_key=key)

    # Events: what the instrumentation recorded, through query_events/get_event.
    events = client.query_events(EventQuery(session_id=session_id, order="asc"))
    types = [e.event_type for e in events.events]
    check(types == ["llm_call", "llm_response"], "the call recorded as a pair", types)
    check(events.total == 2 and not events.has_more, "query_events total", events.total)
    call, resp = events.events
    check(call.payload["model"] == MODEL, "llm_call model", call.payload)
    check(any(m.get("content") == PROMPT for m in call.payload["messages"]),
          "the prompt recorded", call.payload["messages"])
    check(resp.payload["completion"] == COMPLETION, "completion text", resp.payload)
    check(resp.payload["usage"]["inputTokens"] == 13
          and resp.payload["usage"]["outputTokens"] == 7, "usage recorded", resp.payload)
    one = client.get_event(resp.id)
    check(one.id == resp.id and one.hash == resp.hash, "get_event", one)
    check(resp.prev_hash == call.hash, "chained", (resp.prev_hash, call.hash))

    # Sessions.
    sessions = client.get_sessions(SessionQuery(agent_id=agent_id))
    check([s.id for s in sessions.sessions] == [session_id], "get_sessions", sessions)
    check(sessions.total == 1 and sessions.has_more is False, "get_sessions total", sessions)
    s = client.get_session(session_id)
    check(s.agent_id == agent_id and s.status == "active", "session agent/status", s)
    check(s.event_count == 2 and s.llm_call_count == 1, "session counts", s)
    check(s.tool_call_count == 0 and s.error_count == 0, "session tool/error counts", s)
    check(s.total_input_tokens == 13 and s.total_output_tokens == 7, "session tokens", s)
    check(s.total_cost_usd == resp.payload["costUsd"], "session cost", (s, resp.payload))
    check(s.tags == [], "session tags", s.tags)
    timeline = client.get_session_timeline(session_id)
    check(timeline.chain_valid is True, "chainValid", timeline.chain_valid)
    check([e.id for e in timeline.events] == [call.id, resp.id], "timeline order", timeline)
    check(timeline.events[1].payload["completion"] == COMPLETION, "timeline completion")

    # Agent, health, analytics.
    agent = client.get_agent(agent_id)
    check(agent.id == agent_id and agent.session_count == 1, "get_agent", agent)
    check(agent.tenant_id == os.environ.get("AGENTLEDGER_PROJECT", "default"), "tenantId", agent)
    check(agent.first_seen_at <= agent.last_seen_at, "agent seen times", agent)
    health = client.health()
    check(health.status == "ok" and health.version, "health", health)
    analytics = client.get_llm_analytics(
        LlmAnalyticsParams(agent_id=agent_id, granularity="hour"))
    check(analytics.summary.total_calls == 1, "analytics calls", analytics.summary)
    check(analytics.summary.total_input_tokens == 13
          and analytics.summary.total_output_tokens == 7, "analytics tokens", analytics.summary)
    check(analytics.summary.total_cost_usd == resp.payload["costUsd"], "analytics cost",
          analytics.summary)
    check(analytics.summary.avg_latency_ms == resp.payload["latencyMs"], "analytics latency",
          (analytics.summary, resp.payload["latencyMs"]))
    check([(m.provider, m.model, m.calls) for m in analytics.by_model]
          == [(resp.payload["provider"], MODEL, 1)], "analytics by model", analytics.by_model)
    check(resp.payload["provider"] == "openai", "provider recorded", resp.payload)
    check(len(analytics.by_time) == 1 and analytics.by_time[0].calls == 1
          and analytics.by_time[0].bucket.endswith(":00:00.000Z"), "analytics by hour",
          analytics.by_time)

    # A feature agentledger does not have: the SDK raises its error for a 501.
    try:
        client.get_optimization_recommendations()
    except AgentLensError as e:
        check(getattr(e, "status", None) == 501, "501 status", getattr(e, "status", None))
        check("optimization recommendations" in str(e), "501 names the feature", str(e))
    else:
        sys.exit("FAIL: get_optimization_recommendations did not raise")
    client.close()
    print("ok: the AgentLens SDK read back everything it recorded")


if __name__ == "__main__":
    main()
