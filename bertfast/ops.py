"""The single dispatch point for every fusable op the model calls: Triton kernel or torch reference.

Rule: a CUDA tensor with Triton importable uses the Triton kernel; anything else uses the torch
reference. ``BERTFAST_BACKEND=torch|triton`` forces one; forcing Triton on CPU tensors needs
``TRITON_INTERPRET=1`` (set before ``bertfast_kernels`` is imported), which runs the kernels through Triton's
interpreter: that is how CI tests them. Tracing for ONNX / torch.export always uses the reference.

On the Triton path the intermediate projection (``dense_gelu``) has two implementations, picked by
``gemm_choice``: "cublas" (``F.linear``, then the ``bertfast_kernels.gelu.bias_gelu`` pass) or "triton" (``bertfast_kernels.linear.linear``,
one Triton GEMM with the bias + GELU epilogue). ``BERTFAST_GEMM=cublas|triton`` forces one; ``auto``
(the default) follows ``AUTO_GEMM``.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast_kernels.attention import attention as triton_attention
from bertfast_kernels.attention import attention_ref, varlen_attention_ref
from bertfast_kernels.attention import varlen_attention as triton_varlen_attention
from bertfast_kernels.embedding import embedding_layer_norm, embedding_layer_norm_ref
from bertfast_kernels.geglu import geglu as triton_geglu
from bertfast_kernels.geglu import geglu_ref
from bertfast_kernels.gelu import APPROXIMATIONS, bias_gelu
from bertfast_kernels.layer_norm import layer_norm as triton_layer_norm
from bertfast_kernels.layer_norm import layer_norm_ref
from bertfast_kernels.linear import linear as triton_linear
from bertfast_kernels.launch import interpreting, triton_installed
from bertfast_kernels.rotary import rotary_qkv as triton_rotary_qkv
from bertfast_kernels.rotary import rotary_qkv_ref

BACKENDS = ("auto", "torch", "triton")
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("bertfast_backend", default=None)


@contextlib.contextmanager
def force_backend(name: str) -> Iterator[None]:
    """Force "torch" or "triton" for the ops run inside the block (this thread/task only; it takes
    precedence over ``BERTFAST_BACKEND``)."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {BACKENDS}")
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)
GEMMS = ("auto", "cublas", "triton")
# What BERTFAST_GEMM=auto picks. Not measured: no GPU was available when the Triton GEMM was written,
# so cuBLAS + bias_gelu stays the default until the Triton GEMM is shown faster on the device machine
# at both bert-base row counts (M = 4096 and 128, N = 3072, K = 768; fp16 and bf16), with
#     python -m pytest benchmarks/bench_kernels.py -k dense_gelu --benchmark-enable \
#         --benchmark-json=benchmarks/results/<gpu>.json
# (providers "triton" = bertfast_kernels.linear, "cublas+bias_gelu" = this default, "cublas+gelu" = torch alone).
# Flip it only where the medians say so; make it a rule on the row count if the winner depends on it.
AUTO_GEMM = "cublas"


def exporting() -> bool:
    """True while tracing for ONNX / torch.export / TorchScript: always the torch reference then."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def backend_for(t: torch.Tensor) -> str:
    """Which implementation runs for a tensor: "triton" or "torch" (see the module docstring)."""
    forced = _FORCED.get() or os.environ.get("BERTFAST_BACKEND", "auto").strip().lower() or "auto"
    if forced not in BACKENDS:
        raise ValueError(f"BERTFAST_BACKEND={forced!r} is not one of {BACKENDS}")
    if forced == "torch" or exporting():
        return "torch"
    if forced == "triton":
        if not triton_installed():
            raise RuntimeError("BERTFAST_BACKEND=triton but Triton is not installed: pip install triton")
        if not (t.is_cuda or interpreting()):
            raise RuntimeError(
                "BERTFAST_BACKEND=triton needs CUDA tensors, or TRITON_INTERPRET=1 to run the kernels on CPU"
            )
        return "triton"
    return "triton" if t.is_cuda and triton_installed() else "torch"


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNorm(x + residual) over the last dim; ``bias`` None: none (ModernBERT's norms)."""
    if backend_for(x) == "triton":
        if bias is None:
            bias = weight.new_zeros(weight.shape)
        return triton_layer_norm(x, weight, bias, eps, residual=residual)
    return layer_norm_ref(x, weight, bias, eps, residual=residual)


def gemm_choice() -> str:
    """The GEMM of ``dense_gelu`` on the Triton path: "cublas" or "triton" (see the module docstring)."""
    forced = os.environ.get("BERTFAST_GEMM", "auto").strip().lower() or "auto"
    if forced not in GEMMS:
        raise ValueError(f"BERTFAST_GEMM={forced!r} is not one of {GEMMS}")
    return AUTO_GEMM if forced == "auto" else forced


def dense_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x @ weight.T + bias): the intermediate (feed-forward up) projection; approximate "none" | "tanh"."""
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    if backend_for(x) == "triton":
        if gemm_choice() == "triton":
            return triton_linear(x, weight, bias, gelu=approximate)
        return bias_gelu(F.linear(x, weight), bias, approximate)
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


def linear_gelu(x: torch.Tensor, dense: nn.Module, approximate: str = "none") -> torch.Tensor:
    """gelu(dense(x)) for the layer's ``dense``: an nn.Linear (``dense_gelu``, fused on the Triton path) or a CPU
    replacement of it (bertfast.cpu: int8, packed fp32), which fuses the GELU when it has ``gelu``."""
    if type(dense) is nn.Linear:
        return dense_gelu(x, dense.weight, dense.bias, approximate)
    fused = getattr(dense, "gelu", None)
    return fused(x, approximate) if fused is not None else F.gelu(dense(x), approximate=approximate)


def linear_residual_layer_norm(x: torch.Tensor, dense: nn.Module, residual: torch.Tensor, ln_weight: torch.Tensor,
                               ln_bias: torch.Tensor, eps: float, dropout_p: float = 0.0,
                               training: bool = False) -> torch.Tensor:
    """LayerNorm(dropout(dense(x)) + residual) for an nn.Linear or a CPU replacement of it (see ``linear_gelu``)."""
    if type(dense) is nn.Linear:
        return dense_residual_layer_norm(x, dense.weight, dense.bias, residual, ln_weight, ln_bias, eps, dropout_p,
                                         training)
    return layer_norm(F.dropout(dense(x), p=dropout_p, training=training), ln_weight, ln_bias, eps, residual=residual)


def embeddings(input_ids: torch.Tensor, *, word_weight: torch.Tensor, position_weight: torch.Tensor,
               token_type_weight: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float,
               token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
               padding_idx: int | None = None) -> torch.Tensor:
    """LayerNorm(word[input_ids] + token_type[token_type_ids] + position[position_ids]): input_ids (B, S) -> (B, S, H).

    Everything after input_ids is keyword-only (the tables share a shape: a positional swap would pass).
    Absent token types / positions mean type 0 and positions 0..S-1 (the reference broadcasts those
    rows). Ids must already be validated (the Triton kernel does not range-check them). Dropout is the
    caller's. The reference is exactly BertEmbeddings' torch computation; padding_idx (the word
    table's) only affects gradients.
    """
    kwargs = dict(word_weight=word_weight, position_weight=position_weight, token_type_weight=token_type_weight,
                  ln_weight=ln_weight, ln_bias=ln_bias, eps=eps, token_type_ids=token_type_ids,
                  position_ids=position_ids, padding_idx=padding_idx)
    if backend_for(word_weight) == "triton":
        return embedding_layer_norm(input_ids, **kwargs)
    return embedding_layer_norm_ref(input_ids, **kwargs)


def dense_residual_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                              ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float,
                              dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """LayerNorm(dropout(x @ weight.T + bias) + residual): the output projection of attention and FFN."""
    h = F.dropout(F.linear(x, weight, bias), p=dropout_p, training=training)
    return layer_norm(h, ln_weight, ln_bias, eps, residual=residual)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
              scale: float | None = None, dropout_p: float = 0.0, need_weights: bool = False,
              window: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention; q/k/v (B, H, S, D), key_padding_mask (B, S) bool, True = real token; ``window``
    (left, right): query i sees keys i - left .. i + right only (ModernBERT's sliding layers), None = all.

    Returns (output (B, H, S, D), probabilities (B, H, S, S) or None). The fused kernel never
    materialises the probabilities, so ``need_weights=True`` (and attention dropout) use the reference.
    """
    if need_weights:
        out, probs = attention_ref(q, k, v, key_padding_mask, scale, dropout_p, need_weights=True, window=window)
    elif dropout_p == 0.0 and backend_for(q) == "triton":
        out, probs = triton_attention(q, k, v, key_padding_mask, scale, window=window), None
    else:
        out, probs = attention_ref(q, k, v, key_padding_mask, scale, dropout_p, window=window), None
    if window is not None and key_padding_mask is not None:
        out = out * _sees_a_key(key_padding_mask, window)[:, None, :, None]
    return out, probs


def _sees_a_key(key_padding_mask: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, S) bool: whether query i has a real key among i - left .. i + right. A query without one (a padding
    position farther than the window from every real token) outputs zeros, as transformers' SDPA path gives it."""
    seq_len = key_padding_mask.shape[-1]
    counts = F.pad(key_padding_mask.long().cumsum(-1), (1, 0))  # (B, S + 1): real keys before each position
    i = torch.arange(seq_len, device=key_padding_mask.device)
    last, first = (i + window[1] + 1).clamp(max=seq_len), (i - window[0]).clamp(min=0)
    return (counts[:, last] - counts[:, first]) > 0


def varlen_attention(qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                     scale: float | None = None, window: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention over packed sequences (padding-free): qkv (T, 3, heads, D) -> context (T, heads, D).

    Sequence i is rows ``cu_seqlens[i]:cu_seqlens[i + 1]`` and attends only within itself (and within ``window``,
    as ``attention``'s, where given: the kernel and the reference skip what is outside the band, so memory stays
    linear in length); q/k/v are read as strided views of the fused projection, without copies.
    """
    q, k, v = qkv.unbind(1)  # each (T, heads, D)
    if backend_for(qkv) == "triton":
        return triton_varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale, window=window)
    return varlen_attention_ref(q, k, v, cu_seqlens, scale, window=window)


def rotary_qkv(qkv: torch.Tensor, position_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embeddings on a fused projection's queries and keys: qkv (N, 3, heads, D), position_ids
    (N,) -> a new (N, 3, heads, D), values unchanged (transformers' rotate_half convention, fp32 math)."""
    if backend_for(qkv) == "triton":
        return triton_rotary_qkv(qkv, position_ids, theta)
    return rotary_qkv_ref(qkv, position_ids, theta)


def geglu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(x[..., :I]) * x[..., I:]: (..., 2I) -> (..., I), in one pass on the Triton path."""
    if backend_for(x) == "triton":
        return triton_geglu(x, approximate)
    return geglu_ref(x, approximate)


def linear_geglu(x: torch.Tensor, dense: nn.Module, approximate: str = "none") -> torch.Tensor:
    """geglu(dense(x)) for an nn.Linear or a CPU replacement of it (bertfast.cpu: int8, packed fp32)."""
    return geglu(dense(x), approximate)
