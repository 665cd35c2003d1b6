"""Emit a small agent trace with the real OpenTelemetry Python SDK.

Configured the way a user configures any OTel-instrumented agent: through
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS and
OTEL_EXPORTER_OTLP_COMPRESSION. With --json the same spans are encoded with
the SDK's own OTLP encoder and sent in the OTLP JSON mapping (the Python SDK
ships no JSON exporter). Exits non-zero if any export fails.

    python emit.py CONVERSATION_ID [--json]
"""

import base64
import json
import os
import sys
import urllib.request

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status, StatusCode

FAILURES = []


class Checked(SpanExporter):
    """Wraps an exporter and remembers failed exports."""

    def __init__(self, inner):
        self.inner = inner

    def export(self, spans):
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            FAILURES.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


class JsonExporter(SpanExporter):
    """OTLP/HTTP with the JSON encoding: ids as hex, enums as integers,
    64-bit integers as strings (the OTLP JSON mapping)."""

    def __init__(self):
        base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/")
        self.url = base + "/v1/traces"
        self.headers = {"Content-Type": "application/json"}
        for pair in os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "").split(","):
            if "=" in pair:
                k, v = pair.split("=", 1)
                self.headers[k.strip()] = v.strip()

    def export(self, spans):
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True)

        def hexify(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                        node[k] = base64.b64decode(v).hex()
                    else:
                        hexify(v)
            elif isinstance(node, list):
                for v in node:
                    hexify(v)

        hexify(doc)
        req = urllib.request.Request(
            self.url, data=json.dumps(doc).encode(), headers=self.headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read() or b"{}")
            if resp.status != 200 or (body.get("partialSuccess") or {}).get("rejectedSpans"):
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def main():
    conversation = sys.argv[1]
    exporter = JsonExporter() if "--json" in sys.argv else OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-travel-agent"}))
    provider.add_span_processor(BatchSpanProcessor(Checked(exporter)))
    tracer = provider.get_tracer("agentledger.sdk-test", "1.0")

    with tracer.start_as_current_span(
        "invoke_agent travel-planner",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "travel-planner",
            "gen_ai.conversation.id": conversation,
        },
    ):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 40,
                "gen_ai.response.finish_reasons": ["tool_calls"],
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": "call_1",
                "gen_ai.tool.call.arguments": '{"city": "Paris"}',
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool book_hotel",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "book_hotel"},
        ) as span:
            try:
                raise RuntimeError("no rooms left")
            except RuntimeError as e:
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, "no rooms left"))

    provider.force_flush()
    provider.shutdown()
    if FAILURES:
        print(f"export failed: {FAILURES}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
