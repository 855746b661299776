"""The trace context a request or a consumed message continues, read without the SDK's
propagator (service/common/tracing.py), must be the one the propagator would read."""

from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.common import tracing

W3C = TraceContextTextMapPropagator()
VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEX = "0123456789abcdefABCDEF"


def propagators_trace_id(traceparent: str) -> int | None:
    context = W3C.extract({"traceparent": traceparent})
    span = trace.get_current_span(context).get_span_context()
    return span.trace_id if span.is_valid else None


# Near-misses of the format, where the rules differ: versions 00 and ff, all-zero ids, upper
# case, what follows the flags, spaces and tabs around it.
near_misses = st.builds(
    lambda pad, version, trace_id, span_id, flags, rest, end: (
        f"{pad}{version}-{trace_id}-{span_id}-{flags}{rest}{end}"
    ),
    st.sampled_from(["", " ", "\t", "\n"]),
    st.sampled_from(["00", "01", "ff", "0g", "0"]),
    st.one_of(st.just("0" * 32), st.text(HEX, min_size=31, max_size=33)),
    st.one_of(st.just("0" * 16), st.text(HEX, min_size=15, max_size=17)),
    st.text(HEX, min_size=1, max_size=3),
    st.sampled_from(["", "-", "-x", "-00", "x"]),
    st.sampled_from(["", " ", "\t", "\n"]),
)


@given(st.one_of(near_misses, st.text(max_size=80)))
@example(VALID)
@example(VALID.replace("00-", "ff-", 1))
@example(VALID + "-extra")
@example("01" + VALID[2:] + "-extra")
@example(" \t" + VALID + "\t ")
def test_the_trace_id_is_the_one_the_w3c_propagator_reads(traceparent: str) -> None:
    assert tracing.trace_id_of(traceparent) == propagators_trace_id(traceparent)


def test_a_context_continues_the_callers_trace_with_a_span_of_its_own() -> None:
    context = tracing.unrecorded_context(VALID)
    span = trace.get_current_span(context).get_span_context()
    assert span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.span_id not in (0, 0xB7AD6B7169203331)
    assert not span.trace_flags.sampled


def test_without_a_valid_caller_a_context_starts_a_trace() -> None:
    for traceparent in (None, "", VALID.replace("0af7", "0AF7")):
        span = trace.get_current_span(tracing.unrecorded_context(traceparent)).get_span_context()
        assert span.is_valid
        assert span.trace_id != 0x0AF7651916CD43DD8448EB211C80319C
