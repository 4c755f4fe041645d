"""Rotary position embedding of a fused QKV projection (ModernBERT's): a Triton kernel and the torch reference.

qkv (N, 3, H, D): N tokens, then query / key / value, heads, head dim. The query and key blocks are
rotated, the value block is copied, into a new contiguous (N, 3, H, D) tensor; the input may be any
strided view (e.g. of the (N, 3 H D) output of the QKV projection), read in place. Rotation as
transformers' ``apply_rotary_pos_emb`` with ``rotate_half``: dims d and d + D/2 form a pair (not
interleaved), rotated by the angle ``pos * inv_freq[d]``, ``inv_freq = 1 / theta ** (arange(0, D, 2) / D)``:

    out[d] = x[d] cos - x[d + D/2] sin,    out[d + D/2] = x[d + D/2] cos + x[d] sin

The kernel takes inv_freq from torch (computed exactly as transformers does) and forms the angles as
the same fp32 product; cos, sin and the rotation are fp32, with cos / sin kept in fp32 (transformers
rounds them to the input dtype first: the reference does). The backward is the same kernel rotating
by -angle (the transpose of a rotation), the value gradient copied.
"""
from __future__ import annotations

import functools

import torch

from bertfast_kernels.launch import DTYPES, cdiv, check_launchable, jit, row_launch_settings, tl

MAX_HEAD_DIM = 256


@jit
def _rotary_kernel(
    x_ptr,  # (N, 3, H, D) input (forward: qkv; backward: the output gradient), any strides
    pos_ptr,  # (N,) int32/int64 position of each token
    inv_freq_ptr,  # (D / 2,) fp32 inverse frequencies
    out_ptr,  # (N, 3, H, D) contiguous output, dtype of x
    stride_xn, stride_xw, stride_xh, stride_xd,  # x's strides: token, which of q/k/v, head, dim
    n_tokens,
    heads,
    HALF: tl.constexpr,  # D / 2
    BLOCK_T: tl.constexpr,  # tokens per program
    BLOCK_HALF: tl.constexpr,  # next power of two >= HALF
    INVERSE: tl.constexpr,  # rotate by -angle (the backward)
):
    tokens = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)  # (BLOCK_T,) int64 rows
    h = tl.program_id(1).to(tl.int64)
    dims = tl.arange(0, BLOCK_HALF)
    token_in = tokens < n_tokens
    mask = token_in[:, None] & (dims < HALF)[None, :]  # (BLOCK_T, BLOCK_HALF)
    pos = tl.load(pos_ptr + tokens, mask=token_in, other=0).to(tl.float32)
    inv_freq = tl.load(inv_freq_ptr + dims, mask=dims < HALF, other=0.0)
    angle = pos[:, None] * inv_freq[None, :]  # (BLOCK_T, BLOCK_HALF) fp32, the product torch forms
    cos = tl.cos(angle)
    sin = tl.sin(angle)
    if INVERSE:
        sin = -sin
    x_rows = x_ptr + tokens[:, None] * stride_xn + h * stride_xh + dims[None, :] * stride_xd
    o_rows = out_ptr + tokens[:, None] * (3 * heads * 2 * HALF) + h * (2 * HALF) + dims[None, :]
    for which in range(2):  # query, key: rotated
        x1_ptrs = x_rows + which * stride_xw
        x1 = tl.load(x1_ptrs, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x1_ptrs + HALF * stride_xd, mask=mask, other=0.0).to(tl.float32)
        o1_ptrs = o_rows + which * (heads * 2 * HALF)
        tl.store(o1_ptrs, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(o1_ptrs + HALF, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty), mask=mask)
    v1_ptrs = x_rows + 2 * stride_xw  # value: copied
    o1_ptrs = o_rows + 2 * (heads * 2 * HALF)
    tl.store(o1_ptrs, tl.load(v1_ptrs, mask=mask, other=0.0), mask=mask)
    tl.store(o1_ptrs + HALF, tl.load(v1_ptrs + HALF * stride_xd, mask=mask, other=0.0), mask=mask)


def _inv_freq(head_dim: int, theta: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(D / 2,) ``1 / theta ** (arange(0, D, 2) / D)`` in ``dtype``, as transformers computes it (in fp32)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=dtype, device=device) / head_dim))


@functools.lru_cache(maxsize=32)
def _kernel_inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """The kernel's fp32 inverse frequencies, computed once per (D, theta, device)."""
    return _inv_freq(head_dim, theta, torch.float32, device)


def _rotate(x: torch.Tensor, position_ids: torch.Tensor, inv_freq: torch.Tensor, inverse: bool) -> torch.Tensor:
    """x (N, 3, H, D), any strides -> contiguous (N, 3, H, D): q and k rotated by (-)angle, v copied."""
    n_tokens, _, heads, head_dim = x.shape
    out = torch.empty((n_tokens, 3, heads, head_dim), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    half = head_dim // 2
    cfg = row_launch_settings(half, whole_row=True)  # tokens x half-dims tiles of about 1024 elements
    # grid: (token blocks, H)
    _rotary_kernel[(cdiv(n_tokens, cfg.block_rows), heads)](
        x, position_ids, inv_freq, out, *x.stride(), n_tokens, heads,
        HALF=half, BLOCK_T=cfg.block_rows, BLOCK_HALF=cfg.block_cols, INVERSE=inverse, num_warps=cfg.num_warps,
    )
    return out


class _RotaryFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, qkv: torch.Tensor, position_ids: torch.Tensor, theta: float
    ) -> torch.Tensor:
        inv_freq = _kernel_inv_freq(qkv.shape[-1], float(theta), qkv.device)
        ctx.save_for_backward(position_ids, inv_freq)
        return _rotate(qkv, position_ids, inv_freq, inverse=False)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        position_ids, inv_freq = ctx.saved_tensors
        return _rotate(grad, position_ids, inv_freq, inverse=True), None, None


def rotary_qkv(qkv: torch.Tensor, position_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Triton rotary embedding of a fused QKV, out of place, differentiable in qkv.

    qkv: (N, 3, H, D), any strides, D even and <= 256 (any even D: non-powers of two are masked);
    position_ids: (N,) int64/int32, the position of each token (restarting per packed sequence);
    theta: the rope base. Returns a new contiguous (N, 3, H, D) in qkv's dtype: query and key rotated,
    value copied. Same math as ``rotary_qkv_ref`` except that cos / sin stay fp32.
    """
    check_launchable("rotary_qkv", qkv, position_ids)
    _check("rotary_qkv", qkv, position_ids)
    if qkv.dtype not in DTYPES:
        raise TypeError(f"bertfast_kernels.rotary_qkv: qkv must be one of {DTYPES}, got {qkv.dtype}")
    if qkv.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"bertfast_kernels.rotary_qkv: the head dim must be <= {MAX_HEAD_DIM}, got {qkv.shape[-1]}")
    return _RotaryFn.apply(qkv, position_ids, theta)


def _check(op: str, qkv: torch.Tensor, position_ids: torch.Tensor) -> None:
    """Raise unless qkv is (N, 3, H, D) with an even D and position_ids is (N,) integer."""
    if qkv.dim() != 4 or qkv.shape[1] != 3:
        raise ValueError(f"bertfast_kernels.{op}: qkv must be (N, 3, H, D), got {tuple(qkv.shape)}")
    if qkv.shape[-1] % 2:
        raise ValueError(f"bertfast_kernels.{op}: the head dim must be even, got {qkv.shape[-1]}")
    if position_ids.dtype not in (torch.int64, torch.int32) or tuple(position_ids.shape) != (qkv.shape[0],):
        raise ValueError(
            f"bertfast_kernels.{op}: position_ids must be ({qkv.shape[0]},) int64 or int32, got "
            f"{tuple(position_ids.shape)} {position_ids.dtype}"
        )


def rotary_qkv_ref(qkv: torch.Tensor, position_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Torch reference: transformers' rotary embedding on the query and key blocks of a fused QKV.

    qkv: (N, 3, H, D), any strides; position_ids: (N,) int64/int32 (restarting per packed sequence);
    theta: the rope base (ModernBERT: 160000 global, 10000 local layers). Returns a new (N, 3, H, D)
    tensor in qkv's dtype. Exactly transformers' arithmetic for fp32 / fp16 / bf16: angles in fp32,
    cos and sin cast to qkv's dtype, then ``x.float() * cos + rotate_half(x.float()) * sin`` cast
    back. fp64 inputs are computed in fp64 throughout (a high-precision reference for tests).
    """
    _check("rotary_qkv_ref", qkv, position_ids)
    compute = torch.promote_types(qkv.dtype, torch.float32)
    half = qkv.shape[-1] // 2
    freqs = position_ids.to(compute)[:, None] * _inv_freq(qkv.shape[-1], theta, compute, qkv.device)  # (N, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (N, 1, D): broadcast over heads
    cos, sin = emb.cos().to(qkv.dtype), emb.sin().to(qkv.dtype)
    qk = qkv[:, :2].to(compute)  # (N, 2, H, D)
    rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)  # rotate_half
    qk = (qk * cos[:, None]) + (rotated * sin[:, None])  # (N, 2, H, D)
    return torch.cat((qk.to(qkv.dtype), qkv[:, 2:]), dim=1)  # (N, 3, H, D)
