"""One measurement: a provider on one workload in one dtype — parity check first, then timing."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks import parity
from benchmarks.providers import Provider
from benchmarks.timing import PeakMemory, Summary, time_calls
from benchmarks.workloads import Workload

BASELINE = "transformers-eager"  # speedups are relative to it


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Timing:
    """How a case is timed (see ``benchmarks.timing.time_calls``)."""

    device: torch.device
    warmup: int  # untimed calls after the parity-check call
    repeats: int  # most timed calls
    max_time_s: float  # stop timing after this once MIN_REPEATS calls are timed


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

    @classmethod
    def start(cls, provider: str, dtype: torch.dtype, workload: Workload, status: str = "ok",
              reason: str | None = None) -> "CaseResult":
        return cls(provider, dtype_name(dtype), workload.name, workload.batch, workload.seq_len,
                   workload.real_tokens, workload.mixed, status, reason)


def measure(provider: Provider, workload: Workload, batch: dict[str, torch.Tensor], reference: parity.Reference,
            dtype: torch.dtype, timing: Timing, flops: int, peak_tflops: float) -> CaseResult:
    """Check ``provider`` on one workload against the reference; time it only when it is within tolerance.
    A provider that raises is reported as failed (the run goes on with the next case)."""
    result = CaseResult.start(provider.name, dtype, workload)
    try:
        with torch.inference_mode():
            verdict = parity.check(provider.run(batch), batch["attention_mask"], reference, dtype)
            finite = math.isfinite(verdict.max_abs_error)  # JSON has no inf: None, and the reason says why
            result.max_abs_error, result.allowed_error = verdict.max_abs_error if finite else None, verdict.allowed
            if not verdict.ok:
                result.status, result.reason = "wrong", f"output differs from transformers fp32: {verdict}"
                return result
            with PeakMemory(timing.device) as memory:
                times = time_calls(lambda: provider.run(batch), timing.device, timing.warmup, timing.repeats,
                                   timing.max_time_s)
    except Exception as e:  # e.g. out of memory on the largest shape
        result.status, result.reason = "failed", f"{type(e).__name__}: {e}"
        return result
    stats = Summary.of(times)
    seconds = stats.median / 1e3
    result.latency_ms = stats
    result.sequences_per_s = workload.batch / seconds
    result.tokens_per_s = workload.real_tokens / seconds
    if provider.torch_memory or timing.device.type == "cpu":
        result.peak_memory_mb = memory.mb
    result.tflops = flops / seconds / 1e12
    result.floor_ms = flops / (peak_tflops * 1e12) * 1e3
    return result


def add_speedups(results: list[CaseResult]) -> None:
    """Fill ``speedup_vs_eager`` where transformers-eager was timed on the same workload and dtype."""
    baseline = {(r.dtype, r.workload): r.latency_ms.median for r in results
                if r.provider == BASELINE and r.latency_ms is not None}
    for r in results:
        if r.latency_ms is not None and (r.dtype, r.workload) in baseline:
            r.speedup_vs_eager = baseline[r.dtype, r.workload] / r.latency_ms.median
