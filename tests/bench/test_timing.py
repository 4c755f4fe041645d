"""bertfast/bench/timing.py: statistics, timed calls and peak memory."""
from __future__ import annotations

import os

import pytest
import torch

import bertfast.bench.timing as timing
from bertfast.bench.timing import MIN_REPEATS, PeakMemory, Summary, matmul_peak_tflops, time_calls
from bertfast.cpu import CpuInfo
from tests.helpers import needs_cuda

CPU = torch.device("cpu")


def test_summary_statistics():
    s = Summary.of([float(x) for x in range(100, 0, -1)])  # 1..100 ms in any order
    # linear interpolation between order statistics: quantile q sits at position 99 q of the sorted values
    assert (s.median, s.q20, s.q80, s.p90, s.p99) == pytest.approx((50.5, 20.8, 80.2, 90.1, 99.01))
    assert (s.min, s.max, s.mean, s.n) == (1.0, 100.0, 50.5, 100)
    assert Summary.of([2.0]).p99 == 2.0
    with pytest.raises(ValueError, match="no timings"):
        Summary.of([])


def test_time_calls_warms_up_then_times_at_least_min_repeats():
    calls = []
    times = time_calls(lambda: calls.append(1), CPU, warmup=2, repeats=7, max_time_s=60)
    assert len(times) == 7 and len(calls) == 9 and all(t >= 0 for t in times)
    calls.clear()
    times = time_calls(lambda: calls.append(1), CPU, warmup=0, repeats=50, max_time_s=1e-9)
    assert len(times) == MIN_REPEATS == len(calls)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS reset needs Linux /proc")
def test_peak_memory_on_cpu_sees_an_allocation_and_is_reset():
    with PeakMemory(CPU) as big:
        x = torch.ones(64, 2**20)  # 256 MB, touched
        del x
    with PeakMemory(CPU) as small:
        pass
    assert big.mb - small.mb > 200


@needs_cuda
def test_cuda_timing_and_memory():
    device = torch.device("cuda")
    a = torch.randn(2048, 2048, device=device)
    times = time_calls(lambda: a @ a, device, warmup=1, repeats=5, max_time_s=5)
    assert len(times) == 5 and all(t > 0 for t in times)
    with PeakMemory(device) as peak:
        y = torch.empty(2**28, dtype=torch.uint8, device=device)  # 256 MB
        del y
    assert peak.mb >= 256
    assert matmul_peak_tflops(device, torch.float16) > 1


def test_the_matmul_peak_of_an_emulated_half_dtype_is_measured_on_a_smaller_matmul(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(timing, "cpu_info", lambda: CpuInfo("Test CPU", frozenset({"avx2"}), "AVX2"))
    assert [timing.emulated_half(cpu, d) for d in (torch.float32, torch.bfloat16, torch.float16)] == [False, True, True]
    assert not timing.emulated_half(cuda, torch.bfloat16)
    monkeypatch.setattr(timing, "cpu_info", lambda: CpuInfo("Test CPU", frozenset({"avx512_bf16"}), "AVX512"))
    assert [timing.emulated_half(cpu, d) for d in (torch.bfloat16, torch.float16)] == [False, True]
    sizes = []
    monkeypatch.setattr(timing, "time_calls", lambda fn, *a, **k: sizes.append(1) or [1.0])
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda n, m, **k: sizes.append(n) or real_randn(2, 2))
    matmul_peak_tflops(cpu, torch.float16)
    matmul_peak_tflops(cpu, torch.float32)
    assert sizes == [timing.EMULATED_MATMUL_SIZE] * 2 + [1] + [timing.MATMUL_SIZE["cpu"]] * 2 + [1]
