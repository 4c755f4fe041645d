"""Kernel benchmarks: each op's Triton kernel against its torch reference (the provider axis).

    python -m pytest benchmarks/bench_kernels.py --benchmark-enable    # measure (meaningful on CUDA)
    python -m pytest benchmarks/bench_kernels.py                       # run each case once (pytest.ini
                                                                       # disables timing: the CI smoke run)

On CUDA: fp16, 4096x768 and 4096x3072 for layer_norm / bias_gelu; B=32, H=12, S=128 and 512, D=64 for attention,
with and without padding, and varlen attention on the padded case's lengths packed (against SDPA on the padded
batch, what the padding-free path replaces); bert-base's projections in fp16 and bf16: the intermediate dense
(M=4096 and 128 tokens, K=768, N=3072) as bertfast_kernels.linear's fused GELU epilogue against cuBLAS + bias_gelu
(bertfast.ops' default) and cuBLAS + F.gelu, which decides ``AUTO_GEMM`` in bertfast/ops.py, and the QKV / output
projections without activation; the embedding layer (B=32, S=128, bert-base tables); ModernBERT-base's kernels in
fp16 and bf16: the rotary embedding of the fused QKV (H=12, D=64) and GeGLU (I=1152) at 512 and 8192 tokens, and the
local layers' windowed varlen attention (window (64, 64)) on 8192 tokens as 16 x 512, 4 x 2048 and 1 x 8192, against
the linear-memory torch reference and against the same kernel without a window (what a global layer costs). Without
CUDA the Triton provider runs in the interpreter, on tiny shapes, only to keep this file working. Each case records
in ``extra_info`` the median time and the [0.2, 0.8] quantiles in ms, and the throughput at those points (GB/s moved
for the elementwise ops and embeddings; TFLOP/s for attention, counting the dense 4 B H S^2 D even when keys are
padded, for varlen attention 4 H D sum(L^2) for both providers, for windowed attention 4 H D x the (query, key)
pairs inside the band for every provider (the unwindowed kernel's figure is then the band's work per its time), and
for the GEMMs, 2 M N K).
The Triton GEMM autotunes on its first call, in the warm-up rounds, which are not timed.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import torch.nn.functional as F

from bertfast.bench.timing import pedantic_summary, throughput_info
from bertfast_kernels.attention import attention, attention_ref, varlen_attention, varlen_attention_ref
from bertfast_kernels.embedding import embedding_layer_norm, embedding_layer_norm_ref
from bertfast_kernels.geglu import geglu, geglu_ref
from bertfast_kernels.gelu import bias_gelu, bias_gelu_ref
from bertfast_kernels.layer_norm import layer_norm, layer_norm_ref
from bertfast_kernels.linear import linear, linear_ref
from bertfast_kernels.rotary import rotary_qkv, rotary_qkv_ref

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
ROUNDS, WARMUP = (50, 10) if CUDA else (3, 1)
ROW_SHAPES = [(4096, 768), (4096, 3072)] if CUDA else [(64, 96), (64, 384)]
ATTENTION_SHAPES = [(32, 12, 128, 64), (32, 12, 512, 64)] if CUDA else [(1, 2, 32, 32), (1, 2, 80, 32)]
PROVIDERS = ["triton", "torch"]
GEMM_DTYPES = [torch.float16, torch.bfloat16] if CUDA else [torch.float32]
INTERMEDIATE_SHAPES = [(4096, 768, 3072), (128, 768, 3072)] if CUDA else [(64, 96, 384), (16, 96, 384)]  # (M, K, N)
PROJECTION_SHAPES = [(4096, 768, 2304), (4096, 3072, 768)] if CUDA else [(64, 96, 288)]  # QKV, output
EMBEDDING_SHAPE = (32, 128, 768, 30522, 512) if CUDA else (2, 16, 96, 50, 32)  # B, S, H, vocab, positions
# ModernBERT-base: heads, head dim, intermediate size, the local layers' window; tokens per call
MODERNBERT = dict(heads=12, head_dim=64, intermediate=1152, window=(64, 64)) if CUDA else \
    dict(heads=2, head_dim=32, intermediate=96, window=(8, 8))
MODERNBERT_DTYPES = [torch.float16, torch.bfloat16] if CUDA else [torch.float32]
MODERNBERT_TOKENS = [512, 8192] if CUDA else [64]
WINDOW_BATCHES = [(16, 512), (4, 2048), (1, 8192)] if CUDA else [(2, 40)]  # (sequences, tokens each)


def _measure(benchmark, fn: Callable[[], torch.Tensor], amount: float, unit: str) -> None:
    """Time ``fn`` and record ms and ``unit`` throughput (``amount`` bytes or FLOPs per call)."""
    stats = pedantic_summary(benchmark, fn, DEVICE, ROUNDS, WARMUP)
    if stats is not None:
        per_unit = {"GB/s": 1e9, "TFLOP/s": 1e12}[unit]
        benchmark.extra_info.update({"device": torch.cuda.get_device_name() if CUDA else "cpu",
                                     **throughput_info(stats, amount / per_unit, unit)})


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


def _padded_lengths(batch: int, seqlen: int) -> torch.Tensor:
    """(B,) sequence lengths spread uniformly over [S / 4, S], the same for every provider."""
    return torch.randint(seqlen // 4, seqlen + 1, (batch,), generator=torch.Generator().manual_seed(0))


def _padded_qkv(shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, heads, seqlen, head_dim = shape
    qkv = torch.randn(batch, seqlen, 3, heads, head_dim, device=DEVICE, dtype=DTYPE)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, S, D) views of a fused projection


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: "B{}-H{}-S{}-D{}".format(*s))
def test_attention(benchmark, shape, padded, provider):
    batch, heads, seqlen, head_dim = shape
    q, k, v = _padded_qkv(shape)
    mask = None
    if padded:
        mask = (torch.arange(seqlen)[None, :] < _padded_lengths(batch, seqlen)[:, None]).to(DEVICE)  # (B, S)
    fn = {"triton": attention, "torch": attention_ref}[provider]
    flops = 4 * batch * heads * seqlen * seqlen * head_dim  # QK^T and PV
    _measure(benchmark, lambda: fn(q, k, v, mask), flops, "TFLOP/s")


@pytest.mark.parametrize("provider", ["triton-varlen", "sdpa-padded"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: "B{}-H{}-S{}-D{}".format(*s))
def test_varlen_attention(benchmark, shape, provider):
    """The padded case's sequences packed (T tokens, no padding) through the varlen kernel, against SDPA on the
    padded batch with its key mask (transformers' SDPA attention)."""
    batch, heads, seqlen, head_dim = shape
    lengths = _padded_lengths(batch, seqlen)
    if provider == "triton-varlen":
        qkv = torch.randn(int(lengths.sum()), 3, heads, head_dim, device=DEVICE, dtype=DTYPE)
        q, k, v = qkv.unbind(1)  # 3 x (T, H, D) views of a fused projection
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(device=DEVICE, dtype=torch.int32)  # (B + 1,)
        fn, args = varlen_attention, (q, k, v, cu_seqlens, int(lengths.max()))
    else:
        mask = (torch.arange(seqlen)[None, :] < lengths[:, None]).to(DEVICE)  # (B, S)
        fn, args = attention_ref, (*_padded_qkv(shape), mask)
    flops = 4 * heads * head_dim * int((lengths**2).sum())  # QK^T and PV over real tokens only
    _measure(benchmark, lambda: fn(*args), flops, "TFLOP/s")


def _gemm_inputs(shape: tuple[int, int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K), weight (N, K) scaled like nn.Linear's init, bias (N,)."""
    m, k, n = shape
    x = torch.randn(m, k, device=DEVICE, dtype=dtype)
    weight = torch.randn(n, k, device=DEVICE, dtype=dtype) / k**0.5
    return x, weight, torch.randn(n, device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("provider", ["triton", "cublas+bias_gelu", "cublas+gelu"])
@pytest.mark.parametrize("dtype", GEMM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", INTERMEDIATE_SHAPES, ids=lambda s: "M{}-K{}-N{}".format(*s))
def test_dense_gelu(benchmark, shape, dtype, provider):
    """gelu(x @ W^T + b): one fused Triton GEMM, cuBLAS + the bias_gelu kernel, or cuBLAS (with bias) + F.gelu."""
    x, weight, bias = _gemm_inputs(shape, dtype)
    fns = {
        "triton": lambda: linear(x, weight, bias, gelu="none"),
        "cublas+bias_gelu": lambda: bias_gelu(F.linear(x, weight), bias),
        "cublas+gelu": lambda: linear_ref(x, weight, bias, gelu="none"),
    }
    m, k, n = shape
    _measure(benchmark, fns[provider], 2 * m * n * k, "TFLOP/s")


@pytest.mark.parametrize("provider", ["triton", "cublas"])
@pytest.mark.parametrize("dtype", GEMM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", PROJECTION_SHAPES, ids=lambda s: "M{}-K{}-N{}".format(*s))
def test_linear(benchmark, shape, dtype, provider):
    """x @ W^T + b without activation: the fused QKV and output projections."""
    x, weight, bias = _gemm_inputs(shape, dtype)
    fn = {"triton": linear, "cublas": linear_ref}[provider]
    m, k, n = shape
    _measure(benchmark, lambda: fn(x, weight, bias), 2 * m * n * k, "TFLOP/s")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_embedding_layer_norm(benchmark, provider):
    """LayerNorm(word[ids] + token_type[tt] + position): one Triton pass against torch's gathers, adds and LN."""
    batch, seq_len, width, vocab, positions = EMBEDDING_SHAPE
    tables = {name: torch.randn(rows, width, device=DEVICE, dtype=DTYPE)
              for name, rows in (("word_weight", vocab), ("position_weight", positions), ("token_type_weight", 2))}
    ln = {"ln_weight": torch.ones(width, device=DEVICE, dtype=DTYPE),
          "ln_bias": torch.zeros(width, device=DEVICE, dtype=DTYPE)}
    ids = torch.randint(0, vocab, (batch, seq_len), device=DEVICE)
    token_types = torch.randint(0, 2, (batch, seq_len), device=DEVICE)
    fn = {"triton": embedding_layer_norm, "torch": embedding_layer_norm_ref}[provider]
    moved = 4 * batch * seq_len * width * DTYPE.itemsize  # read three rows, write one per token
    _measure(benchmark, lambda: fn(ids, **tables, **ln, eps=1e-12, token_type_ids=token_types), moved, "GB/s")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", MODERNBERT_DTYPES, ids=str)
@pytest.mark.parametrize("tokens", MODERNBERT_TOKENS)
def test_rotary(benchmark, tokens, dtype, provider):
    """RoPE on the fused (T, 3, H, D) QKV projection output (a view of its (T, 3 H D) rows), positions of
    sequences of 512 tokens."""
    heads, head_dim = MODERNBERT["heads"], MODERNBERT["head_dim"]
    qkv = torch.randn(tokens, 3 * heads * head_dim, device=DEVICE, dtype=dtype).view(tokens, 3, heads, head_dim)
    positions = (torch.arange(tokens, device=DEVICE) % 512)  # (T,)
    fn = {"triton": rotary_qkv, "torch": rotary_qkv_ref}[provider]
    moved = 2 * qkv.numel() * qkv.element_size() + positions.numel() * 8  # read and write qkv, read positions
    _measure(benchmark, lambda: fn(qkv, positions, 160000.0), moved, "GB/s")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", MODERNBERT_DTYPES, ids=str)
@pytest.mark.parametrize("tokens", MODERNBERT_TOKENS)
def test_geglu(benchmark, tokens, dtype, provider):
    """gelu(a) * b on the (T, 2 I) output of ModernBERT's Wi."""
    x = torch.randn(tokens, 2 * MODERNBERT["intermediate"], device=DEVICE, dtype=dtype)
    fn = {"triton": geglu, "torch": geglu_ref}[provider]
    moved = 1.5 * x.numel() * x.element_size()  # read both halves, write one
    _measure(benchmark, lambda: fn(x), moved, "GB/s")


def _band_pairs(length: int, window: tuple[int, int]) -> int:
    """(query, key) pairs of one sequence inside the band i - left <= j <= i + right."""
    left, right = window
    return sum(min(length - 1, i + right) - max(0, i - left) + 1 for i in range(length))


@pytest.mark.parametrize("provider", ["triton", "torch", "triton-full"])
@pytest.mark.parametrize("dtype", MODERNBERT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", WINDOW_BATCHES, ids=lambda s: "B{}-S{}".format(*s))
def test_window_attention(benchmark, shape, dtype, provider):
    """A local layer's banded attention on packed sequences: the Triton kernel, the torch reference
    (blocks of queries against their key slices), and the Triton kernel without a window."""
    batch, seqlen = shape
    heads, head_dim, window = MODERNBERT["heads"], MODERNBERT["head_dim"], MODERNBERT["window"]
    qkv = torch.randn(batch * seqlen, 3, heads, head_dim, device=DEVICE, dtype=dtype)
    q, k, v = qkv.unbind(1)  # 3 x (T, H, D) views of a fused projection
    cu_seqlens = torch.arange(0, batch * seqlen + 1, seqlen, device=DEVICE, dtype=torch.int32)  # (B + 1,)
    fns = {
        "triton": lambda: varlen_attention(q, k, v, cu_seqlens, seqlen, window=window),
        "torch": lambda: varlen_attention_ref(q, k, v, cu_seqlens, window=window),
        "triton-full": lambda: varlen_attention(q, k, v, cu_seqlens, seqlen),
    }
    flops = 4 * heads * head_dim * batch * _band_pairs(seqlen, window)  # QK^T and PV inside the band
    _measure(benchmark, fns[provider], flops, "TFLOP/s")
