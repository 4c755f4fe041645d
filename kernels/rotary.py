"""Rotary position embedding of a fused QKV projection (ModernBERT's): torch reference.

qkv (N, 3, H, D): N tokens, then query / key / value, heads, head dim. The query and key blocks are
rotated, the value block is copied. Rotation as transformers' ``apply_rotary_pos_emb`` with
``rotate_half``: dims d and d + D/2 form a pair (not interleaved), rotated by the angle
``pos * inv_freq[d]``, ``inv_freq = 1 / theta ** (arange(0, D, 2) / D)``.
"""
from __future__ import annotations

import torch


def _inv_freq(head_dim: int, theta: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(D / 2,) ``1 / theta ** (arange(0, D, 2) / D)`` in ``dtype``, as transformers computes it (in fp32)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=dtype, device=device) / head_dim))


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
