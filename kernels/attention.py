"""Scaled dot-product attention with key padding: a flash-style Triton kernel (padded, varlen) and torch references.

One kernel serves both layouts. Padded: q/k/v (B, H, S, D) with any strides (views into a fused QKV
projection need no copy) and a (B, S) bool key padding mask. Varlen (``VARLEN``): q/k/v packed
(total_tokens, H, D) with (B + 1,) int32 cumulative sequence lengths, each sequence attending only
within itself. Scores and the online softmax are fp32 (``tl.dot`` accumulates in fp32; fp32 inputs
use IEEE products, not TF32); the (S, S) probabilities are never materialised.

Padding semantics. A padded key gets exactly zero weight whenever its row has at least one real key.
A query whose keys are *all* padding outputs the uniform average of the values of all its sequence's
keys: padded scores are replaced by one finite constant, as transformers adds the dtype's finite
minimum instead of -inf. That is what ``attention_ref`` gives in fp32 and bf16 and what the eager
path (``need_weights=True``) gives in every dtype; only torch's fp16 SDPA on CPU differs (it adds
the fp16 minimum to fp32 scores, which leaves the softmax of the raw scores).

Sliding window. ``window=(left, right)`` restricts query i to the keys ``i - left <= j <= i + right``
(indices within the sequence for varlen, padded row indices for the padded layout; ModernBERT's
local layers: (64, 64)). Each query block loops only over the key blocks that meet its band
(``key_block_range``): the others are never loaded; inside those blocks the band is applied
elementwise (out-of-band scores are -inf, so they get exactly zero weight, like padding outside a
row's band). A window that covers the whole sequence is no window. With key padding, a query whose
band holds no real key outputs an average of the values within its band (the reference: of all its
keys); in self-attention that is only ever a padding query, whose output is unspecified. A query
with no key in its band at all (S_q > S_k + left) outputs zeros.

Backward: recomputed through the torch reference (``attention_ref`` / ``varlen_attention_ref``)
with torch autograd, so gradients are the reference's (for all-padding rows in fp16 too). The references
and the window's checks live in ``attention_ref`` (this module re-exports them: ``attention_ref``,
``varlen_attention_ref``, ``REF_CHUNK``).
"""
from __future__ import annotations

import math

import torch

from bertfast_kernels.attention_ref import (REF_CHUNK, attention_ref, check_window, effective_window,
                                           varlen_attention_ref)
from bertfast_kernels.launch import DTYPES, attention_launch_settings, cdiv, check_launchable, jit, next_power_of_2, tl

__all__ = ["MAX_HEAD_DIM", "REF_CHUNK", "attention", "attention_ref", "key_block_range", "varlen_attention",
           "varlen_attention_ref"]

LOG2E = math.log2(math.e)  # the kernel computes exp(x) as exp2(x * log2(e))
MAX_HEAD_DIM = 128


@jit
def key_block_range(q_start, seqlen_q, seqlen_k, window_left, window_right, BLOCK_M, BLOCK_N):
    """[lo, hi): the keys the query block starting at ``q_start`` visits, lo a multiple of BLOCK_N.

    The band of queries [q_start, q_end), q_end = min(q_start + BLOCK_M, seqlen_q), is the keys
    [q_start - left, q_end - 1 + right], clipped to [0, seqlen_k); lo is rounded down to its key
    block, so the loop ``range(lo, hi, BLOCK_N)`` visits exactly the key blocks that meet the band
    (and loads no key at or past hi).
    Plain integer arithmetic: the kernel calls it, and so can Python (``key_block_range.fn``).
    """
    lo = q_start - window_left
    if lo < 0:
        lo = 0
    lo = lo // BLOCK_N * BLOCK_N
    q_end = q_start + BLOCK_M
    if q_end > seqlen_q:
        q_end = seqlen_q
    hi = q_end + window_right
    if hi > seqlen_k:
        hi = seqlen_k
    return lo, hi


@jit
def _attention_fwd_kernel(
    q_ptr,  # (B, S_q, H, D) by strides (b, h, s, d) below; varlen: (T, H, D), stride_qb = 0
    k_ptr,  # (B, S_k, H, D) likewise; varlen: (T, H, D)
    v_ptr,  # (B, S_k, H, D) likewise; varlen: (T, H, D)
    o_ptr,  # (B, S_q, H, D) output likewise; varlen: (T, H, D)
    mask_ptr,  # (B, S_k) uint8 key padding mask, nonzero = real key (ignored unless HAS_MASK)
    cu_seqlens_ptr,  # (B + 1,) int32 cumulative sequence lengths (ignored unless VARLEN)
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_mb, stride_ms,
    seqlen_q,  # query length (padded layout; varlen reads it from cu_seqlens)
    seqlen_k,  # key length (padded layout; varlen reads it from cu_seqlens)
    qk_scale,  # softmax scale * log2(e): scores live in the exp2 domain
    window_left,  # query i attends key j only if i - window_left <= j <= i + window_right (HAS_WINDOW)
    window_right,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr,
    VARLEN: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    start = 0
    if VARLEN:
        start = tl.load(cu_seqlens_ptr + b).to(tl.int64)
        seqlen_q = (tl.load(cu_seqlens_ptr + b + 1) - start).to(tl.int32)
        seqlen_k = seqlen_q
    if pid_m * BLOCK_M >= seqlen_q:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_q = start + offs_m.to(tl.int64)  # (BLOCK_M,) int64 token rows
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_mask = (offs_m < seqlen_q)[:, None] & d_mask[None, :]
    q_ptrs = q_ptr + b * stride_qb + h * stride_qh + rows_q[:, None] * stride_qs + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=q_mask, other=0.0)  # (BLOCK_M, BLOCK_D)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (exp2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running numerator @ V
    lo, hi = 0, seqlen_k
    if HAS_WINDOW:  # only the key blocks that meet the band are loaded
        lo, hi = key_block_range(pid_m * BLOCK_M, seqlen_q, seqlen_k, window_left, window_right, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_in = offs_n < hi  # hi <= seqlen_k; keys past it are outside every row's band
        rows_k = start + offs_n.to(tl.int64)  # (BLOCK_N,) int64 token rows
        kv_mask = key_in[:, None] & d_mask[None, :]
        k = tl.load(k_base + rows_k[:, None] * stride_ks + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) fp32
        if HAS_MASK:
            real = tl.load(mask_ptr + b * stride_mb + offs_n.to(tl.int64) * stride_ms, mask=key_in, other=0) != 0
            s = tl.where(real[None, :], s, -1.0e30)  # finite: an all-padding row averages its values
        s = tl.where(key_in[None, :], s, float("-inf"))
        if HAS_WINDOW:  # the band's edges, elementwise within the visited blocks
            offset = offs_n[None, :] - offs_m[:, None]  # (BLOCK_M, BLOCK_N) key index - query index
            s = tl.where((offset >= -window_left) & (offset <= window_right), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_ref = m_new
        if HAS_WINDOW:  # a row may meet its band only in a later block: keep exp2 finite until then
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + rows_k[:, None] * stride_vs + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    if HAS_WINDOW:  # a query with no key in its band (S_q > S_k + left) outputs zeros
        l_i = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_i[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + rows_q[:, None] * stride_os + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=q_mask)


def _bhsd_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of a (B, H, S, D) tensor, or (0, H, S, D)-ordered ones of a packed (T, H, D) tensor."""
    if t.dim() == 4:
        return t.stride(0), t.stride(1), t.stride(2), t.stride(3)
    return 0, t.stride(1), t.stride(0), t.stride(2)


def _attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int,
    scale: float,
    window: tuple[int, int] | None,
) -> torch.Tensor:
    """q/k/v (B, H, S, D) [or packed (T, H, D) with cu_seqlens] -> output of the same layout.

    The padded output is (B, H, S, D) stored as (B, S, H, D), so merging heads afterwards is a view.
    window: (left, right) clipped by ``effective_window``, or None.
    """
    heads, head_dim = q.shape[1], q.shape[-1]  # axis 1 is H in both layouts
    if cu_seqlens is None:
        batch, seqlen_q, seqlen_k = q.shape[0], q.shape[2], k.shape[2]
        o = torch.empty((batch, seqlen_q, heads, head_dim), dtype=q.dtype, device=q.device)  # (B, S_q, H, D)
        o = o.transpose(1, 2)  # (B, H, S_q, D)
    else:
        batch = cu_seqlens.numel() - 1
        seqlen_q = seqlen_k = max_seqlen  # upper bounds: the kernel reads each length from cu_seqlens
        o = torch.empty_like(q, memory_format=torch.contiguous_format)  # (T, H, D)
    if o.numel() == 0 or max_seqlen == 0:
        return o
    block_d = max(16, head_dim)  # tl.dot needs K >= 16: smaller head dims are zero-padded in registers
    cfg = attention_launch_settings(block_d, max_seqlen, q.element_size())
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask is not None else q  # (B, S_k)
    mask_strides = (mask.stride(0), mask.stride(1)) if key_padding_mask is not None else (0, 0)
    # grid: (query blocks, H, B); CUDA allows up to 65535 heads and sequences
    _attention_fwd_kernel[(cdiv(seqlen_q, cfg.block_rows), heads, batch)](
        q, k, v, o, mask, cu_seqlens if cu_seqlens is not None else q,
        *_bhsd_strides(q), *_bhsd_strides(k), *_bhsd_strides(v), *_bhsd_strides(o), *mask_strides,
        seqlen_q, seqlen_k, scale * LOG2E, *(window or (0, 0)),
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols,
        HAS_MASK=key_padding_mask is not None, VARLEN=cu_seqlens is not None, HAS_WINDOW=window is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return o


class _AttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
        max_seqlen: int,
        scale: float,
        window: tuple[int, int] | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(q, k, v, key_padding_mask, cu_seqlens)
        ctx.scale, ctx.window = scale, window
        return _attention_fwd(q, k, v, key_padding_mask, cu_seqlens, max_seqlen, scale, window)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, do: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None, None, None, None]:
        q, k, v, key_padding_mask, cu_seqlens = ctx.saved_tensors
        with torch.enable_grad():
            inputs = tuple(t.detach().requires_grad_() for t in (q, k, v))
            if cu_seqlens is None:
                out = attention_ref(*inputs, key_padding_mask, ctx.scale, window=ctx.window)
            else:
                out = varlen_attention_ref(*inputs, cu_seqlens, ctx.scale, window=ctx.window)
            dq, dk, dv = torch.autograd.grad(out, inputs, do)
        return dq, dk, dv, None, None, None, None, None


def _check_qkv(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str) -> None:
    """Raise on a rank other than ``len(layout)``, unequal D/H/B, a dtype mix or an unsupported head dim."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != len(layout):
            raise ValueError(f"{op}: {name} must be {layout}-shaped ({len(layout)} dims), got {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"{op}: k {tuple(k.shape)} and v {tuple(v.shape)} shapes differ")
    same = [i for i, axis in enumerate(layout) if axis != "S"]  # every axis but the padded sequence must agree
    if [q.shape[i] for i in same] != [k.shape[i] for i in same]:
        axes = "".join(layout[i] for i in same)
        raise ValueError(f"{op}: q {tuple(q.shape)} and k {tuple(k.shape)} must match on axes {axes}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in DTYPES:
        raise TypeError(f"{op}: q/k/v must share one dtype of {DTYPES}, got {q.dtype}/{k.dtype}/{v.dtype}")
    head_dim = q.shape[-1]
    if head_dim > MAX_HEAD_DIM or head_dim != next_power_of_2(head_dim):
        raise ValueError(f"{op}: head dim must be a power of two <= {MAX_HEAD_DIM}, got {head_dim}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Triton flash attention; q (B, H, S_q, D), k/v (B, H, S_k, D), any strides.

    key_padding_mask: (B, S_k) torch.bool, True = real token (other dtypes raise TypeError: an int
    0/1 mask and an additive float mask mean opposite things, convert explicitly). D: a power of two
    <= 128. scale defaults to D ** -0.5. window: (left, right) ints >= 0 or None: query i attends
    key j only if ``i - left <= j <= i + right`` (padded row indices). Returns (B, H, S_q, D) in q's
    dtype (stored as (B, S_q, H, D)). Padding and window semantics and the (reference-recomputed)
    backward: see the module docstring.
    """
    check_launchable("attention", q, k, v, key_padding_mask)
    _check_qkv("attention", q, k, v, "BHSD")
    check_window("attention", window)
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"bertfast_kernels.attention: key_padding_mask must be torch.bool (True = real token), got "
                f"{key_padding_mask.dtype}; for a 1/0 attention mask pass mask.bool()"
            )
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"bertfast_kernels.attention: key_padding_mask must be (B, S_k) = {(k.shape[0], k.shape[2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    window = effective_window(window, q.shape[2], k.shape[2])
    return _AttentionFn.apply(q, k, v, key_padding_mask, None, max(q.shape[2], k.shape[2]), scale, window)


def _check_cu_seqlens(cu_seqlens: torch.Tensor, max_seqlen: int, total: int) -> None:
    """Raise on a malformed cu_seqlens; its values are checked only off CUDA (that would sync the device)."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype != torch.int32:
        raise ValueError(
            f"bertfast_kernels.varlen_attention: cu_seqlens must be (B + 1,) int32, got {tuple(cu_seqlens.shape)} "
            f"{cu_seqlens.dtype}"
        )
    if max_seqlen < 0:
        raise ValueError(f"bertfast_kernels.varlen_attention: max_seqlen must be >= 0, got {max_seqlen}")
    if cu_seqlens.is_cuda:
        return
    lengths = cu_seqlens.diff()  # (B,)
    if cu_seqlens[0] != 0 or cu_seqlens[-1] != total or bool((lengths < 0).any()):
        raise ValueError(f"bertfast_kernels.varlen_attention: cu_seqlens must rise from 0 to {total}, got {cu_seqlens.tolist()}")
    if int(lengths.max()) > max_seqlen:
        raise ValueError(f"bertfast_kernels.varlen_attention: a sequence is longer than max_seqlen={max_seqlen}")


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float | None = None,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Triton flash attention over packed sequences, no padding; q/k/v (T, H, D), any strides.

    cu_seqlens: (B + 1,) int32 cumulative lengths (0, len_0, len_0 + len_1, ..., T); sequence i is
    rows cu_seqlens[i]:cu_seqlens[i + 1] and attends only within itself. max_seqlen: the longest
    length (sizes the launch grid; must not be smaller). window: (left, right) ints >= 0 or None:
    query i of a sequence attends its key j only if ``i - left <= j <= i + right``. Returns (T, H, D)
    in q's dtype.
    """
    check_launchable("varlen_attention", q, k, v, cu_seqlens)
    _check_qkv("varlen_attention", q, k, v, "THD")
    _check_cu_seqlens(cu_seqlens, max_seqlen, q.shape[0])
    check_window("varlen_attention", window)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    window = effective_window(window, max_seqlen, max_seqlen)
    return _AttentionFn.apply(q, k, v, None, cu_seqlens, max_seqlen, scale, window)
