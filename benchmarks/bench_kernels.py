"""Kernel benchmarks: each op's Triton kernel against its torch reference (the provider axis).

    python -m pytest benchmarks/bench_kernels.py                       # measure (meaningful on CUDA)
    python -m pytest benchmarks/bench_kernels.py --benchmark-disable   # run each case once (CI smoke)

On CUDA: fp16, 4096x768 and 4096x3072 for layer_norm / bias_gelu; B=32, H=12, S=128 and 512, D=64 for
attention, with and without padding. Without CUDA the Triton provider runs in the interpreter, on tiny
shapes, only to keep this file working. Each case records in ``extra_info`` the median time and the
[0.2, 0.8] quantiles in ms, and the throughput at those points (GB/s moved for the elementwise ops;
TFLOP/s for attention, counting the dense 4 B H S^2 D even when keys are padded).
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from kernels import attention, attention_ref, bias_gelu, bias_gelu_ref, layer_norm, layer_norm_ref

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
ROUNDS, WARMUP = (50, 10) if CUDA else (3, 1)
ROW_SHAPES = [(4096, 768), (4096, 3072)] if CUDA else [(64, 96), (64, 384)]
ATTENTION_SHAPES = [(32, 12, 128, 64), (32, 12, 512, 64)] if CUDA else [(1, 2, 32, 32), (1, 2, 80, 32)]
PROVIDERS = ["triton", "torch"]


def _measure(benchmark, fn: Callable[[], torch.Tensor], amount: float, unit: str) -> None:
    """Time ``fn`` (synchronising CUDA inside the timed target) and record ms and ``unit`` throughput."""

    def target() -> None:
        fn()
        if CUDA:
            torch.cuda.synchronize()

    benchmark.pedantic(target, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    times = torch.tensor(benchmark.stats.stats.sorted_data, dtype=torch.float64)  # seconds
    q20, median, q80 = torch.quantile(times, torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)).tolist()
    per_unit = {"GB/s": 1e9, "TFLOP/s": 1e12}[unit]
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name() if CUDA else "cpu",
        "ms_median": median * 1e3, "ms_q20": q20 * 1e3, "ms_q80": q80 * 1e3,
        "unit": unit,
        "throughput_median": amount / median / per_unit,
        "throughput_q20": amount / q80 / per_unit,  # the 0.2 quantile of throughput is the 0.8 one of time
        "throughput_q80": amount / q20 / per_unit,
    })


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_layer_norm(benchmark, shape, provider):
    x, residual = (torch.randn(shape, device=DEVICE, dtype=DTYPE) for _ in range(2))
    weight, bias = torch.ones(shape[1], device=DEVICE, dtype=DTYPE), torch.zeros(shape[1], device=DEVICE, dtype=DTYPE)
    fn = {"triton": layer_norm, "torch": layer_norm_ref}[provider]
    moved = 3 * x.numel() * x.element_size()  # read x and residual, write y
    _measure(benchmark, lambda: fn(x, weight, bias, 1e-12, residual=residual), moved, "GB/s")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bias_gelu(benchmark, shape, provider):
    x = torch.randn(shape, device=DEVICE, dtype=DTYPE)
    bias = torch.randn(shape[1], device=DEVICE, dtype=DTYPE)
    fn = {"triton": bias_gelu, "torch": bias_gelu_ref}[provider]
    moved = 2 * x.numel() * x.element_size()  # read x, write y
    _measure(benchmark, lambda: fn(x, bias), moved, "GB/s")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: "B{}-H{}-S{}-D{}".format(*s))
def test_attention(benchmark, shape, padded, provider):
    batch, heads, seqlen, head_dim = shape
    qkv = torch.randn(batch, seqlen, 3, heads, head_dim, device=DEVICE, dtype=DTYPE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, S, D) views of a fused projection
    mask = None
    if padded:  # sequence lengths spread uniformly over [S / 4, S], the same for both providers
        lengths = torch.randint(seqlen // 4, seqlen + 1, (batch,), generator=torch.Generator().manual_seed(0))
        mask = (torch.arange(seqlen)[None, :] < lengths[:, None]).to(DEVICE)  # (B, S)
    fn = {"triton": attention, "torch": attention_ref}[provider]
    flops = 4 * batch * heads * seqlen * seqlen * head_dim  # QK^T and PV
    _measure(benchmark, lambda: fn(q, k, v, mask), flops, "TFLOP/s")
