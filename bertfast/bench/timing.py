"""Timing, statistics, peak memory and the matmul peak.

GPU: each timed call starts with the device idle (``torch.cuda.synchronize()``) and is bracketed by CUDA
events, the end event recorded after another device-wide synchronisation, so a time is one call's latency
until all its GPU work is done -- host launch overhead included, and work on streams other than torch's
(onnxruntime's) too. CPU: wall clock (``time.perf_counter``) around each call.
"""
from __future__ import annotations

import ctypes
import gc
import re
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bertfast.cpu import cpu_info

MIN_REPEATS = 3  # timed calls per case even when --max-time is exceeded
QUICK_MIN_REPEATS = 5  # ... with --quick (its repeats too): enough for a median and the 0.2 / 0.8 quantiles
# The fewest timed calls a quantile is printed from (fewer: "-"); the JSON keeps every value with its n.
QUANTILE_MIN_CALLS = {"q20": 5, "q80": 5, "p90": 10, "p99": 100}
MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}  # square matmul edge for the peak (1024 is short of it on CPU)
# ... for a half-precision matmul the CPU has no instructions for (torch emulates it, several times slower than
# float32; at 2048 one call takes seconds, more on one thread): the peak of what the CPU can do in it anyway
EMULATED_MATMUL_SIZE = 512


@dataclass
class Summary:
    """Latency statistics in milliseconds over ``n`` timed calls."""

    median: float
    q20: float
    q80: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, times_ms: list[float]) -> "Summary":
        if not times_ms:
            raise ValueError("no timings to summarise")
        t = np.asarray(times_ms, dtype=np.float64)
        q20, median, q80, p90, p99 = np.quantile(t, [0.2, 0.5, 0.8, 0.9, 0.99]).tolist()
        return cls(median, q20, q80, p90, p99, float(t.mean()), float(t.min()), float(t.max()), len(t))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
               max_time_s: float, min_repeats: int = MIN_REPEATS) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then time up to ``repeats`` calls (ms each), stopping early once
    ``max_time_s`` seconds of timing have passed and at least ``min_repeats`` calls were timed."""
    for _ in range(warmup):
        fn()
    times: list[float] = []  # (time_one waits for the device before each timed call)
    deadline = time.perf_counter() + max_time_s
    while len(times) < repeats and (len(times) < min_repeats or time.perf_counter() < deadline):
        times.append(time_one(fn, device))
    return times


def pedantic_summary(benchmark: Any, fn: Callable[[], object], device: torch.device, rounds: int,
                     warmup: int) -> Summary | None:
    """pytest-benchmark timing of ``fn``, the device synchronised inside the timed target; None under
    ``--benchmark-disable`` (``fn`` then ran once, untimed)."""

    def target() -> None:
        fn()
        synchronize(device)

    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=warmup)
    if benchmark.stats is None:
        return None
    return Summary.of([t * 1e3 for t in benchmark.stats.stats.data])


def throughput_info(stats: Summary, amount: float, unit: str) -> dict[str, Any]:
    """Latency quantiles (ms) and throughput (``amount`` per second, in ``unit``) for pytest-benchmark's
    extra_info; the 0.2 quantile of throughput is the 0.8 one of time."""
    return {"ms_median": stats.median, "ms_q20": stats.q20, "ms_q80": stats.q80, "unit": unit,
            "throughput_median": amount / stats.median * 1e3,
            "throughput_q20": amount / stats.q80 * 1e3,
            "throughput_q80": amount / stats.q20 * 1e3}


def time_one(fn: Callable[[], object], device: torch.device) -> float:
    """Latency of one call of ``fn`` in ms (see the module docstring)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        torch.cuda.synchronize(device)  # every stream, not only the one the events are recorded on
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1e3


def emulated_half(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch emulates ``dtype`` matmuls on this device: float16 on any CPU, bfloat16 on a CPU without
    avx512_bf16 / AMX."""
    if device.type != "cpu" or dtype == torch.float32:
        return False
    return not (dtype == torch.bfloat16 and cpu_info().native_bf16)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """Best TFLOP/s of an n x n x n matmul in ``dtype`` on ``device`` (n = ``MATMUL_SIZE``): the machine's
    practical matmul peak, measured in the same run as the models."""
    n = size or (EMULATED_MATMUL_SIZE if emulated_half(device, dtype) else MATMUL_SIZE[device.type])
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    times = time_calls(lambda: torch.mm(a, b), device, warmup=2, repeats=10, max_time_s=3.0)
    return 2 * n**3 / (min(times) * 1e-3) / 1e12


def release_memory(device: torch.device) -> None:
    """Give freed memory back (Python objects, the CUDA cache, glibc's heap) so the next provider's peak
    memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed pages may stay in the RSS
        pass


class PeakMemory:
    """Peak memory of what runs inside ``with PeakMemory(device) as peak:``, in MB (``peak.mb``) after the block;
    ``PeakMemory.describe(device)`` says what is measured."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb: float | None = None

    @staticmethod
    def describe(device: torch.device) -> str:
        if device.type == "cuda":
            return ("torch.cuda.max_memory_allocated, reset before each case (weights + activations; "
                    "onnxruntime's own arena is not counted)")
        return ("peak RSS of the whole process (VmHWM), reset before each case through /proc/self/clear_refs "
                "(where that is not writable: the process's lifetime peak)")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mb = _peak_rss_kb() / 1024


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS to the current RSS
    except OSError:  # not Linux, or not writable: the peak stays the lifetime one
        pass


def _peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
