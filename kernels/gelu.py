"""Bias add + GELU (exact erf, or the tanh approximation): Triton forward/backward kernels and the torch reference.

Math is fp32 whatever the input dtype. The backward recomputes ``x + bias`` from the saved inputs,
writes dx and per-program fp32 partial sums of dbias that torch adds up.

Shared with kernels/linear.py: ``gelu_f32`` (the jit GELU of its GEMM epilogue) and ``bias_gelu_bwd``
(the backward of that epilogue).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from bertfast_kernels.launch import (
    as_rows,
    cdiv,
    check_launchable,
    check_vector,
    interpreting,
    jit,
    reduction_programs,
    row_launch_settings,
    tl,
)

APPROXIMATIONS = ("none", "tanh")  # GELU's ``approximate`` as F.gelu names it: exact erf, or the tanh form


def _constant(value: float) -> Any:
    """A module constant the jit functions can read: compiled kernels take only ``tl.constexpr`` globals; the
    interpreter (and a machine without Triton) takes the plain float."""
    return value if tl is None or interpreting() else tl.constexpr(value)


SQRT1_2 = _constant(1 / math.sqrt(2))  # erf GELU: 0.5 z (1 + erf(z / sqrt 2))
INV_SQRT_2PI = _constant(1 / math.sqrt(2 * math.pi))  # the standard normal pdf's factor
TANH_SCALE = _constant(2 * math.sqrt(2 / math.pi))  # 2 sqrt(2/pi): 1 + tanh(u) = 2 sigmoid(2u)
TANH_CUBIC = _constant(0.044715)  # u = sqrt(2/pi) (z + 0.044715 z^3)
TANH_CUBIC_SLOPE = _constant(3 * 0.044715)  # d/dz of (z + 0.044715 z^3) is 1 + 3 * 0.044715 z^2


@jit
def gelu_f32(z, TANH: tl.constexpr):
    """gelu(z) for fp32 z: 0.5 z (1 + erf(z / sqrt 2)), or with TANH 0.5 z (1 + tanh(u)) = z sigmoid(2u),
    u = sqrt(2/pi) (z + 0.044715 z^3) (the sigmoid form: tl.math has no tanh)."""
    if TANH:
        cdf = tl.sigmoid(TANH_SCALE * (z + TANH_CUBIC * z * z * z))
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(z * SQRT1_2))
    return z * cdf


@jit
def _gelu_grad(z, TANH: tl.constexpr):
    """d gelu(z) / dz for fp32 z, for the same two variants as ``gelu_f32``.

    TANH: with v = 2u, d/dz [z sigmoid(v)] = s + z s (1 - s) dv/dz; 1 - s is computed as sigmoid(-v)
    so that it keeps full precision where s rounds to 1.
    """
    if TANH:
        v = TANH_SCALE * (z + TANH_CUBIC * z * z * z)
        s = tl.sigmoid(v)
        grad = s + z * s * tl.sigmoid(-v) * TANH_SCALE * (1.0 + TANH_CUBIC_SLOPE * z * z)
    else:
        pdf = INV_SQRT_2PI * tl.exp(-0.5 * z * z)
        grad = 0.5 * (1.0 + tl.math.erf(z * SQRT1_2)) + z * pdf
    return grad


@jit
def _load_pre_act(
    x_ptr,  # (M, N) input rows, row stride stride_x, unit column stride
    bias_ptr,  # (N,) bias (ignored unless HAS_BIAS)
    rows,  # (BLOCK_M,) int64 row indices
    cols,  # (BLOCK_N,) column indices
    row_mask,  # (BLOCK_M,) rows in bounds
    col_mask,  # (BLOCK_N,) columns in bounds
    stride_x,
    HAS_BIAS: tl.constexpr,
):
    """(BLOCK_M, BLOCK_N) fp32 tile of x + bias, zero out of bounds."""
    mask = row_mask[:, None] & col_mask[None, :]
    z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return z


@jit
def _bias_gelu_fwd_kernel(
    x_ptr,  # (M, N) input rows, row stride stride_x
    bias_ptr,  # (N,) bias; x_ptr when HAS_BIAS is False
    y_ptr,  # (M, N) output, contiguous, dtype of x
    stride_x,
    M,
    N,
    HAS_BIAS: tl.constexpr,
    TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    z = _load_pre_act(x_ptr, bias_ptr, rows, cols, row_mask, col_mask, stride_x, HAS_BIAS)
    y = gelu_f32(z, TANH)
    mask = row_mask[:, None] & col_mask[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _bias_gelu_bwd_kernel(
    dy_ptr,  # (M, N) output gradient rows, row stride stride_dy
    x_ptr,  # (M, N) input rows, row stride stride_x
    bias_ptr,  # (N,) bias; x_ptr when HAS_BIAS is False
    dx_ptr,  # (M, N) input gradient, contiguous, dtype of x
    dbias_ptr,  # (G, N) fp32 partial bias gradients, one row per program along axis 0
    stride_dy,
    stride_x,
    M,
    N,
    HAS_BIAS: tl.constexpr,
    TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    dbias = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(M, BLOCK_M), tl.num_programs(0)):
        rows = (tile * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        z = _load_pre_act(x_ptr, bias_ptr, rows, cols, row_mask, col_mask, stride_x, HAS_BIAS)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dz = dy * _gelu_grad(z, TANH)
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dz.to(dx_ptr.dtype.element_ty), mask=mask)
        dbias += tl.sum(dz, axis=0)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid * N + cols, dbias, mask=col_mask)


def _bias_gelu_fwd(x: torch.Tensor, bias: torch.Tensor | None, approximate: str) -> torch.Tensor:
    """x: (M, N) with unit column stride -> gelu(x + bias) (M, N)."""
    M, N = x.shape
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M > 0:
        cfg = row_launch_settings(N, whole_row=False)
        _bias_gelu_fwd_kernel[(cdiv(M, cfg.block_rows), cdiv(N, cfg.block_cols))](
            x, x if bias is None else bias.contiguous(), y, x.stride(0), M, N,
            HAS_BIAS=bias is not None, TANH=approximate == "tanh",
            BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols, num_warps=cfg.num_warps,
        )
    return y


def bias_gelu_bwd(
    dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, approximate: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dy, x: (M, N) with unit column stride -> (dx (M, N), dbias (N,) or None)."""
    M, N = x.shape
    cfg = row_launch_settings(N, whole_row=False)
    programs = reduction_programs(cdiv(M, cfg.block_rows), x.device)
    dx = torch.empty((M, N), dtype=x.dtype, device=x.device)
    dbias_partial = torch.zeros((programs, N), dtype=torch.float32, device=x.device)
    if M > 0:
        _bias_gelu_bwd_kernel[(programs, cdiv(N, cfg.block_cols))](
            dy, x, x if bias is None else bias.contiguous(), dx, dbias_partial, dy.stride(0), x.stride(0), M, N,
            HAS_BIAS=bias is not None, TANH=approximate == "tanh",
            BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols, num_warps=cfg.num_warps,
        )
    return dx, None if bias is None else dbias_partial.sum(0).to(bias.dtype)


class _BiasGeluFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, bias: torch.Tensor | None, approximate: str
    ) -> torch.Tensor:
        x_rows = as_rows(x)  # (M, N)
        ctx.save_for_backward(x_rows, bias)
        ctx.approximate = approximate
        ctx.x_shape = x.shape
        return _bias_gelu_fwd(x_rows, bias, approximate).view(x.shape)  # (..., N)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        x_rows, bias = ctx.saved_tensors
        dx, dbias = bias_gelu_bwd(as_rows(dy), x_rows, bias, ctx.approximate)
        return dx.view(ctx.x_shape), dbias, None  # dx: (..., N)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """Triton ``gelu(x + bias)``, differentiable in x and bias.

    x: (..., N), any strides; bias: (N,) or None; approximate: "none" (exact erf, BERT's "gelu") or
    "tanh" ("gelu_new" checkpoints). Returns (..., N) in x's dtype. (A plain function around
    ``_BiasGeluFn.apply``, which takes no keyword arguments.)
    """
    check_launchable("bias_gelu", x, bias)
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    check_vector("bias", bias, x.shape[-1])
    return _BiasGeluFn.apply(x, bias, approximate)


def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """Torch reference: ``gelu(x + bias)``; x (..., N), bias (N,); approximate is "none" (erf) or "tanh"."""
    if bias is not None:
        x = x + bias
    return F.gelu(x, approximate=approximate)
