"""The sampler's decision, made before OpenTelemetry is called, is the one OpenTelemetry's own samplers make from the
standard variables: a parent's flag for the parent-based ones, the trace id against the ratio for `traceidratio`."""

from __future__ import annotations

import random

import pytest

from finalmile import tracing
from finalmile.errors import InvalidInputError

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, TraceIdRatioBased  # noqa: E402
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context  # noqa: E402


def _use(monkeypatch: pytest.MonkeyPatch, name: str, arg: str | None = None) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    ratio, parent_based = tracing.sampler_from_environment()
    monkeypatch.setattr(tracing, "_ratio", ratio)
    monkeypatch.setattr(tracing, "_parent_based", parent_based)


def _otel_keeps(sampler: object, trace_id: int, parent_flags: int) -> bool:
    parent = SpanContext(trace_id, 0x00F067AA0BA902B7, is_remote=True, trace_flags=TraceFlags(parent_flags))
    context = set_span_in_context(NonRecordingSpan(parent))
    return bool(sampler.should_sample(context, trace_id, "infer p").decision.is_sampled())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["traceidratio", "parentbased_traceidratio"])
def test_a_parents_request_is_kept_exactly_when_opentelemetry_would_keep_it(monkeypatch, name: str) -> None:  # type: ignore[no-untyped-def]
    _use(monkeypatch, name, "0.3")
    sampler = TraceIdRatioBased(0.3) if name == "traceidratio" else ParentBasedTraceIdRatio(0.3)
    draw = random.Random(7)
    kept = 0
    for _ in range(2000):
        trace_id, flags = draw.getrandbits(128) or 1, draw.choice([0, 1])
        header = f"00-{trace_id:032x}-00f067aa0ba902b7-{flags:02x}"
        ours = tracing.sampled({"traceparent": header})
        assert ours == _otel_keeps(sampler, trace_id, flags), header
        kept += ours
    assert 0 < kept < 2000


def test_roots_are_kept_at_the_ratio_and_the_fixed_samplers_hold(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _use(monkeypatch, "parentbased_traceidratio", "0.1")
    kept = sum(tracing.sampled({}) for _ in range(20_000))
    assert 1_600 < kept < 2_400  # 10% of 20,000 within ~7 standard deviations
    assert tracing.sampled({"traceparent": "not a traceparent"}) in (True, False)  # a root, never an error
    _use(monkeypatch, "always_off")
    assert not any(tracing.sampled({}) for _ in range(100))
    _use(monkeypatch, "parentbased_always_off")
    assert tracing.sampled({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})  # the parent decides
    _use(monkeypatch, "always_on")
    assert all(tracing.sampled({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}) for _ in range(10))


@pytest.mark.parametrize(("name", "arg", "field"), [("sometimes", None, "OTEL_TRACES_SAMPLER"),
                                                    ("traceidratio", "half", "OTEL_TRACES_SAMPLER_ARG"),
                                                    ("traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG")])  # fmt: skip
def test_a_sampler_it_cannot_follow_is_named(monkeypatch, name: str, arg: str | None, field: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(InvalidInputError, match=field):
        tracing.sampler_from_environment()
