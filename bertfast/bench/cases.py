"""Measuring a case (one workload in one dtype): parity check first, then timing -- one provider at a time, or
several in turns (``--interleave``)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial

import torch

from bertfast.bench import parity
from bertfast.bench.providers import Provider, TransformersEager
from bertfast.bench.timing import MIN_REPEATS, PeakMemory, Summary, time_calls, time_one
from bertfast.bench.workloads import Workload

BASELINE = TransformersEager.name  # speedups are relative to it


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Timing:
    """How a case is timed (see ``bertfast.bench.timing.time_calls``)."""

    device: torch.device
    warmup: int  # untimed calls after the parity-check call
    repeats: int  # most timed calls
    max_time_s: float  # stop timing after this once min_repeats calls are timed
    min_repeats: int = MIN_REPEATS  # timed calls per case even past max_time_s (--quick: QUICK_MIN_REPEATS)


@dataclass
class CaseResult:
    """One provider on one workload in one dtype. Timing fields are None unless status is "ok"."""

    provider: str
    dtype: str
    workload: str
    batch: int
    seq_len: int  # padded length (the longest sequence)
    real_tokens: int
    mixed: bool
    status: str  # "ok", "wrong" (outside tolerance, not timed) or "failed" (raised; reason says what)
    reason: str | None = None
    max_abs_error: float | None = None  # vs transformers fp32 at real positions
    allowed_error: float | None = None
    latency_ms: Summary | None = None
    sequences_per_s: float | None = None
    tokens_per_s: float | None = None  # real tokens
    speedup_vs_eager: float | None = None  # transformers-eager median / this median, same inputs and dtype
    peak_memory_mb: float | None = None
    tflops: float | None = None  # model FLOPs on real tokens / median
    floor_ms: float | None = None  # model FLOPs / matmul peak of this dtype
    precision: str | None = None  # what the provider computes in: the run's dtype, or its own (bfloat16, int8)
    rule: str | None = None  # the accuracy rule it was checked by (bertfast.bench.parity)
    min_cosine: float | None = None  # smallest cosine of a compared row with transformers fp32's

    def fail(self, error: Exception) -> None:
        """The provider raised: reported as failed with the error, the run goes on."""
        self.status, self.reason = "failed", describe(error)


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


@dataclass
class Case:
    """What every provider is measured on: one workload's batch in one dtype, and what to compare it with."""

    workload: Workload
    batch: dict[str, torch.Tensor]  # (B, S) inputs on the device
    reference: parity.Reference
    dtype: torch.dtype
    flops: int  # model FLOPs of the workload
    peak_tflops: float  # matmul peak of this dtype, measured in this run

    def result(self, provider: str, status: str = "ok", reason: str | None = None) -> CaseResult:
        w = self.workload
        return CaseResult(provider, dtype_name(self.dtype), w.name, w.batch, w.seq_len, w.real_tokens, w.mixed,
                          status, reason)


def _passes_check(provider: Provider, case: Case, result: CaseResult) -> bool:
    """Run ``provider`` once and compare with the reference; a wrong or raising provider is marked in ``result``."""
    try:
        with torch.inference_mode():
            verdict = parity.check(provider.run(case.batch), case.batch["attention_mask"], case.reference, case.dtype,
                                   provider.precision)
    except Exception as e:  # e.g. out of memory on the largest shape
        result.fail(e)
        return False
    finite = math.isfinite(verdict.max_abs_error)  # JSON has no inf: None, and the reason says why
    result.max_abs_error, result.allowed_error = verdict.max_abs_error if finite else None, verdict.allowed
    result.precision, result.rule = provider.precision or dtype_name(case.dtype), verdict.rule
    result.min_cosine = verdict.min_cosine if math.isfinite(verdict.min_cosine) else None
    if not verdict.ok:
        result.status, result.reason = "wrong", f"output differs from transformers fp32: {verdict}"
    return verdict.ok


def _record(result: CaseResult, case: Case, times_ms: list[float], memory_mb: float | None) -> CaseResult:
    stats = Summary.of(times_ms)
    seconds = stats.median / 1e3
    result.latency_ms = stats
    result.sequences_per_s = case.workload.batch / seconds
    result.tokens_per_s = case.workload.real_tokens / seconds
    result.peak_memory_mb = memory_mb
    result.tflops = case.flops / seconds / 1e12
    result.floor_ms = case.flops / (case.peak_tflops * 1e12) * 1e3
    return result


def measure(provider: Provider, case: Case, timing: Timing) -> CaseResult:
    """Check ``provider`` on one case; time it (and its peak memory) only when it is within tolerance."""
    result = case.result(provider.name)
    if not _passes_check(provider, case, result):
        return result
    try:
        with torch.inference_mode(), PeakMemory(timing.device) as memory:
            times = time_calls(lambda: provider.run(case.batch), timing.device, timing.warmup, timing.repeats,
                               timing.max_time_s, timing.min_repeats)
    except Exception as e:
        result.fail(e)
        return result
    tracked = provider.torch_memory or timing.device.type == "cpu"
    return _record(result, case, times, memory.mb if tracked else None)


def measure_interleaved(providers: list[Provider], case: Case, timing: Timing) -> list[CaseResult]:
    """Check every provider on one case, then time those within tolerance in turns (one call each per round,
    the order rotating), so that a machine whose load changes slows them all alike. Peak memory is not
    measured: every provider is resident at once. Stops after ``timing.repeats`` rounds, or once
    ``timing.max_time_s`` per provider has passed and ``timing.min_repeats`` rounds are done."""
    results = [case.result(p.name) for p in providers]
    live = [(p, r) for p, r in zip(providers, results) if _passes_check(p, case, r)]
    times: dict[str, list[float]] = {p.name: [] for p, _ in live}
    rounds = -timing.warmup  # negative rounds are warm-up: untimed
    deadline = time.perf_counter() + timing.max_time_s * (len(live) + timing.warmup)
    while live and rounds < timing.repeats and (rounds < timing.min_repeats or time.perf_counter() < deadline):
        shift = rounds % len(live)
        for provider, result in live[shift:] + live[:shift]:
            try:
                with torch.inference_mode():
                    elapsed = time_one(partial(provider.run, case.batch), timing.device)
            except Exception as e:
                result.fail(e)
                live.remove((provider, result))
                continue
            if rounds >= 0:
                times[provider.name].append(elapsed)
        rounds += 1
    return [_record(r, case, times[p.name], None) if r.status == "ok" else r for p, r in zip(providers, results)]


def add_speedups(results: list[CaseResult]) -> None:
    """Fill ``speedup_vs_eager`` where the BASELINE was timed on the same workload and dtype."""
    baseline = {(r.dtype, r.workload): r.latency_ms.median for r in results
                if r.provider == BASELINE and r.latency_ms is not None}
    for r in results:
        if r.latency_ms is not None and (r.dtype, r.workload) in baseline:
            r.speedup_vs_eager = baseline[r.dtype, r.workload] / r.latency_ms.median
