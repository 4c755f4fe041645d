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
with torch autograd, so gradients are the reference's (for all-padding rows in fp16 too).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bertfast_kernels.launch import DTYPES, attention_launch_settings, cdiv, check_launchable, jit, next_power_of_2, tl

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
    window: (left, right) clipped by ``_effective_window``, or None.
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
    _check_window("attention", window)
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
    window = _effective_window(window, q.shape[2], k.shape[2])
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
    _check_window("varlen_attention", window)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    window = _effective_window(window, max_seqlen, max_seqlen)
    return _AttentionFn.apply(q, k, v, None, cu_seqlens, max_seqlen, scale, window)


def _check_window(op: str, window: tuple[int, int] | None) -> None:
    """Raise unless ``window`` is None or a (left, right) pair of non-negative ints."""
    if window is None:
        return
    if (not isinstance(window, (tuple, list)) or len(window) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in window)):
        raise ValueError(f"bertfast_kernels.{op}: window must be None or (left, right) ints >= 0, got {window!r}")


def _effective_window(
    window: tuple[int, int] | None, seqlen_q: int, seqlen_k: int
) -> tuple[int, int] | None:
    """The band clipped to the sequences, or None where it covers every (query, key) pair.

    Query i attends key j when ``i - left <= j <= i + right``; with i < seqlen_q and j < seqlen_k, a left
    of seqlen_q - 1 or more bounds nothing, nor does a right of seqlen_k - 1 or more. Clipping keeps the
    kernel's int32 block arithmetic and the reference's key slices within the sequences.
    """
    if window is None:
        return None
    left, right = min(window[0], max(seqlen_q - 1, 0)), min(window[1], max(seqlen_k - 1, 0))
    if left >= seqlen_q - 1 and right >= seqlen_k - 1:
        return None
    return left, right


def _tracing() -> bool:
    """True while torch.onnx / torch.export / TorchScript trace the reference."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def _band(seqlen_q: int, seqlen_k: int, window: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(S_q, S_k) bool: True where query i may attend key j, ``i - left <= j <= i + right``."""
    offset = torch.arange(seqlen_k, device=device)[None, :] - torch.arange(seqlen_q, device=device)[:, None]
    return (offset >= -window[0]) & (offset <= window[1])  # (S_q, S_k)


def _additive_mask(
    key_padding_mask: torch.Tensor | None,
    window: tuple[int, int] | None,
    seqlen_q: int,
    seqlen_k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """The additive bias of the padding mask and the band: 0 where a query may attend a key, dtype's min elsewhere.

    key_padding_mask: (B, S_k) bool, True = real token. Returns (B, 1, 1, S_k) for padding alone,
    (1 or B, 1, S_q, S_k) with a window, or None for neither. Both masks are combined as booleans
    before the one fill, so a masked score gets the finite minimum once (never -inf): a row with no
    allowed key averages every value uniformly instead of producing NaN, as transformers' masks do.
    """
    if key_padding_mask is None and window is None:
        return None
    allowed = torch.ones(1, 1, 1, seqlen_k, dtype=torch.bool, device=device)  # (1, 1, 1, S_k)
    if key_padding_mask is not None:
        allowed = key_padding_mask[:, None, None, :]  # (B, 1, 1, S_k)
    if window is not None:
        allowed = allowed & _band(seqlen_q, seqlen_k, window, device)  # (1 or B, 1, S_q, S_k)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    window: tuple[int, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Torch reference attention.

    q: (B, H, S_q, D), k/v: (B, H, S_k, D); key_padding_mask: (B, S_k) bool, True = real token;
    window: (left, right) or None, query i attending key j only if ``i - left <= j <= i + right``
    (padded row indices; ModernBERT's local layers use (64, 64)). Returns the output (B, H, S_q, D),
    and with ``need_weights=True`` also the probabilities (B, H, S_q, S_k) computed eagerly (scores,
    additive mask, softmax, dropout) exactly as transformers' eager attention does with its padding
    and sliding-window masks. The band is a dense (S_q, S_k) mask here: the padded fallback path.
    """
    _check_window("attention_ref", window)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    seqlen_q, seqlen_k = q.shape[-2], k.shape[-2]
    if not _tracing():  # a traced graph keeps the band whatever the example's length (its shapes are symbolic)
        window = _effective_window(window, seqlen_q, seqlen_k)
    mask = _additive_mask(key_padding_mask, window, seqlen_q, seqlen_k, q.dtype, q.device)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, S_q, S_k)
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v), probs


REF_CHUNK = 128  # query rows per block of the windowed varlen reference


def _windowed_varlen_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_ids: torch.Tensor, scale: float | None,
    window: tuple[int, int],
) -> torch.Tensor:
    """Banded attention over packed sequences in memory linear in T: q/k/v (T, H, D), seq_ids (T,) -> (T, H, D).

    The T rows are cut into n blocks of C = min(REF_CHUNK, T) queries; block c's keys are the slice
    [c C - left, (c + 1) C + right) of the packed keys (zero-padded at both ends), unfolded into one
    (n, H, C + left + right, D) view. A (n, C, C + left + right) bool mask keeps the band and the
    query's own sequence (within a sequence, the band on packed rows is the band on sequence indices).
    Padding rows share the id -1 with the padding keys, so each of them has at least itself to attend
    (no NaN in the dropped rows, in the forward or the backward). One SDPA call over all blocks.
    """
    left, right = window
    total, heads, head_dim = q.shape
    chunk = min(REF_CHUNK, total)
    blocks = -(-total // chunk)
    span = chunk + left + right
    tail = blocks * chunk - total  # padding query rows of the last block
    pad_keys = (0, 0, 0, 0, left, tail + right)  # F.pad spec for (T, H, D) along T

    def key_blocks(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, pad_keys).unfold(0, span, chunk).permute(0, 1, 3, 2)  # (n, H, span, D)

    queries = F.pad(q, (0, 0, 0, 0, 0, tail)).view(blocks, chunk, heads, head_dim).transpose(1, 2)  # (n, H, C, D)
    query_ids = F.pad(seq_ids, (0, tail), value=-1).view(blocks, chunk)  # (n, C)
    key_ids = F.pad(seq_ids, (left, tail + right), value=-1).unfold(0, span, chunk)  # (n, span)
    band = _band(chunk, span, (0, left + right), q.device)  # (C, span): key row c C - left + j, query row c C + i
    mask = band & (query_ids[:, :, None] == key_ids[:, None, :])  # (n, C, span)
    out = F.scaled_dot_product_attention(queries, key_blocks(k), key_blocks(v), attn_mask=mask[:, None], scale=scale)
    return out.transpose(1, 2).reshape(blocks * chunk, heads, head_dim)[:total]  # (T, H, D)


def varlen_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: float | None = None,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Torch reference for ``varlen_attention``; q, k, v: (T, H, D); cu_seqlens: (B + 1,) cumulative lengths.

    Without a window: ``attention_ref`` on each packed sequence in turn. With window (left, right),
    query i of a sequence attends its key j only if ``i - left <= j <= i + right``, computed in
    blocks of ``REF_CHUNK`` queries against their key slices (``_windowed_varlen_ref``): memory linear
    in T, no (L, L) scores; a window that covers every sequence is no window. Returns (T, H, D).
    """
    _check_window("varlen_attention_ref", window)
    bounds = cu_seqlens.tolist()
    lengths = [end - begin for begin, end in zip(bounds[:-1], bounds[1:])]
    longest = max(lengths, default=0)
    window = _effective_window(window, longest, longest)
    if window is not None:
        seq_ids = torch.repeat_interleave(
            torch.arange(len(lengths), device=q.device), torch.tensor(lengths, device=q.device), output_size=q.shape[0]
        )  # (T,) the sequence of each packed row
        return _windowed_varlen_ref(q, k, v, seq_ids, scale, window)
    outputs = [q[:0]]  # (0, H, D): keeps torch.cat defined when there are no tokens
    for begin, end in zip(bounds[:-1], bounds[1:]):
        if end > begin:
            seq = [t[begin:end].transpose(0, 1)[None] for t in (q, k, v)]  # (1, H, L, D) each
            outputs.append(attention_ref(*seq, scale=scale)[0].transpose(0, 1))  # (L, H, D)
    return torch.cat(outputs)  # (T, H, D)
