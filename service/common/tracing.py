"""OpenTelemetry tracing: one trace from the HTTP request to the ticket provider.

The W3C trace context crosses every hop: the API honours an incoming `traceparent` (or starts a
trace; service/api/observability.py), the booking stores it on its outbox row, the relay
publishes each event inside that context (aio-pika injects the AMQP header `traceparent`), the
consumers continue it (aio-pika extracts it) and the provider call carries it (aiohttp client).

With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are sampled (honouring the caller's decision) and
exported over OTLP/HTTP in batches, and database calls get spans too. Without it, no span is
recorded: the SDK still makes trace and span ids, so context flows and every log line names its
trace, at the cost of an id per span and no export.
"""

from __future__ import annotations

import logging

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import format_trace_id

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
NO_TRACE_ID = "-"
_configured = False


def configure_tracing(service_name: str, otlp_endpoint: str) -> None:
    """Set up the tracer provider and the instrumentations, once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    exporting = bool(otlp_endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=_sampler(exporting),
    )
    if exporting:
        _export(provider, otlp_endpoint)
    trace.set_tracer_provider(provider)
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    AioPikaInstrumentor().instrument(tracer_provider=provider)
    if exporting:
        # A span per statement is worth its cost only when someone looks at it.
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(  # type: ignore[no-untyped-call]
            tracer_provider=provider
        )


def _sampler(exporting: bool) -> Sampler:
    # Not exporting: record nothing, even when the caller sampled, but still make ids, so the
    # context flows and the logs name it. Exporting: sample unless the caller said not to.
    return ParentBased(root=ALWAYS_ON) if exporting else ALWAYS_OFF


def _export(provider: TracerProvider, endpoint: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("exporting traces to %s", endpoint)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with work that leaves the process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | None) -> otel_context.Context:
    """The trace context a stored traceparent names (an empty context if none)."""
    return propagate.extract({TRACEPARENT: traceparent} if traceparent else {})


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return format_trace_id(span_context.trace_id) if span_context.is_valid else NO_TRACE_ID
