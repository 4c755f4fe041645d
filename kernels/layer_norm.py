"""LayerNorm(x + residual) over the last dimension: Triton forward/backward kernels and the torch reference.

The kernel adds the residual and normalises in one pass over each row, which stays in registers
(rows up to ``MAX_ROW_COLS`` wide). Statistics are fp32 whatever the input dtype; the output has the
input's dtype. The backward is a Triton kernel too: it recomputes ``x + residual`` from the saved
inputs and writes per-program fp32 partial sums of dweight/dbias that torch adds up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertfast_kernels.launch import (
    as_rows,
    cdiv,
    check_launchable,
    check_vector,
    jit,
    reduction_programs,
    row_launch_settings,
    tl,
)


@jit
def _load_pre_norm(
    x_ptr,  # (M, N) input rows, row stride stride_x, unit column stride
    res_ptr,  # (M, N) residual rows, row stride stride_res (ignored unless HAS_RESIDUAL)
    rows,  # (BLOCK_M,) int64 row indices
    cols,  # (BLOCK_N,) column indices
    mask,  # (BLOCK_M, BLOCK_N) in-bounds mask
    stride_x,
    stride_res,
    HAS_RESIDUAL: tl.constexpr,
):
    """(BLOCK_M, BLOCK_N) fp32 tile of x + residual, zero out of bounds."""
    z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        z += tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return z


@jit
def normalize_rows(
    z,  # (BLOCK_M, BLOCK_N) fp32 rows, zero out of bounds
    mask,  # (BLOCK_M, BLOCK_N) in-bounds mask
    w_ptr,  # (N,) weight
    b_ptr,  # (N,) bias
    cols,  # (BLOCK_N,) column indices
    col_mask,  # (BLOCK_N,) columns in bounds
    N,
    eps,
):
    """LayerNorm of each row of z in fp32 -> (y (BLOCK_M, BLOCK_N), mean (BLOCK_M,), rstd (BLOCK_M,)).

    Shared with kernels/embedding.py, which normalises the summed embeddings the same way.
    """
    mean = tl.sum(z, axis=1) / N
    centered = tl.where(mask, z - mean[:, None], 0.0)
    rstd = tl.math.rsqrt(tl.sum(centered * centered, axis=1) / N + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    return centered * rstd[:, None] * w[None, :] + b[None, :], mean, rstd


@jit
def _layer_norm_fwd_kernel(
    x_ptr,  # (M, N) input rows, row stride stride_x
    res_ptr,  # (M, N) residual rows, row stride stride_res; x_ptr when HAS_RESIDUAL is False
    w_ptr,  # (N,) weight
    b_ptr,  # (N,) bias
    y_ptr,  # (M, N) output, contiguous, dtype of x
    mean_ptr,  # (M,) fp32 row means
    rstd_ptr,  # (M,) fp32 row reciprocal standard deviations
    stride_x,
    stride_res,
    M,
    N,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    z = _load_pre_norm(x_ptr, res_ptr, rows, cols, mask, stride_x, stride_res, HAS_RESIDUAL)
    y, mean, rstd = normalize_rows(z, mask, w_ptr, b_ptr, cols, col_mask, N, eps)
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@jit
def _layer_norm_bwd_kernel(
    dy_ptr,  # (M, N) output gradient rows, row stride stride_dy
    x_ptr,  # (M, N) input rows, row stride stride_x
    res_ptr,  # (M, N) residual rows, row stride stride_res; x_ptr when HAS_RESIDUAL is False
    w_ptr,  # (N,) weight
    mean_ptr,  # (M,) fp32 row means from the forward
    rstd_ptr,  # (M,) fp32 row reciprocal standard deviations from the forward
    dx_ptr,  # (M, N) input gradient, contiguous, dtype of x
    dw_ptr,  # (G, N) fp32 partial weight gradients, one row per program
    db_ptr,  # (G, N) fp32 partial bias gradients, one row per program
    stride_dy,
    stride_x,
    stride_res,
    M,
    N,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(pid, tl.cdiv(M, BLOCK_M), tl.num_programs(0)):
        rows = (tile * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        z = _load_pre_norm(x_ptr, res_ptr, rows, cols, mask, stride_x, stride_res, HAS_RESIDUAL)
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        x_hat = tl.where(mask, (z - mean[:, None]) * rstd[:, None], 0.0)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w_dy = w[None, :] * dy
        mean_w_dy_x_hat = tl.sum(w_dy * x_hat, axis=1) / N
        mean_w_dy = tl.sum(w_dy, axis=1) / N
        dx = (w_dy - x_hat * mean_w_dy_x_hat[:, None] - mean_w_dy[:, None]) * rstd[:, None]
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * x_hat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(dw_ptr + pid * N + cols, dw, mask=col_mask)
    tl.store(db_ptr + pid * N + cols, db, mask=col_mask)


def _layer_norm_fwd(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, residual: (M, N) with unit column stride -> (y (M, N), mean (M,) fp32, rstd (M,) fp32)."""
    M, N = x.shape
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    mean = torch.empty(M, dtype=torch.float32, device=x.device)
    rstd = torch.empty(M, dtype=torch.float32, device=x.device)
    if M == 0:
        return y, mean, rstd
    cfg = row_launch_settings(N, whole_row=True)
    res = x if residual is None else residual
    _layer_norm_fwd_kernel[(cdiv(M, cfg.block_rows),)](
        x, res, weight.contiguous(), bias.contiguous(), y, mean, rstd,
        x.stride(0), res.stride(0), M, N, eps,
        HAS_RESIDUAL=residual is not None, BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols,
        num_warps=cfg.num_warps,
    )
    return y, mean, rstd


def _layer_norm_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy, x, residual: (M, N) with unit column stride -> (dx (M, N), dweight (N,), dbias (N,))."""
    M, N = x.shape
    cfg = row_launch_settings(N, whole_row=True)
    programs = reduction_programs(cdiv(M, cfg.block_rows), x.device)
    dx = torch.empty((M, N), dtype=x.dtype, device=x.device)
    dw_partial = torch.zeros((programs, N), dtype=torch.float32, device=x.device)
    db_partial = torch.zeros((programs, N), dtype=torch.float32, device=x.device)
    if M > 0:
        res = x if residual is None else residual
        _layer_norm_bwd_kernel[(programs,)](
            dy, x, res, weight.contiguous(), mean, rstd, dx, dw_partial, db_partial,
            dy.stride(0), x.stride(0), res.stride(0), M, N,
            HAS_RESIDUAL=residual is not None, BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols,
            num_warps=cfg.num_warps,
        )
    return dx, dw_partial.sum(0).to(weight.dtype), db_partial.sum(0)


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        eps: float,
        residual: torch.Tensor | None,
    ) -> torch.Tensor:
        x_rows = as_rows(x)  # (M, N)
        res_rows = None if residual is None else as_rows(residual)  # (M, N)
        y, mean, rstd = _layer_norm_fwd(x_rows, res_rows, weight, bias, eps)
        ctx.save_for_backward(x_rows, res_rows, weight, mean, rstd)
        ctx.x_shape = x.shape
        ctx.bias_dtype = bias.dtype
        return y.view(x.shape)  # (..., N)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, torch.Tensor | None]:
        x_rows, res_rows, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = _layer_norm_bwd(as_rows(dy), x_rows, res_rows, weight, mean, rstd)
        dx = dx.view(ctx.x_shape)  # (..., N)
        dres = None if res_rows is None else dx.to(res_rows.dtype)
        return dx, dw, db.to(ctx.bias_dtype), None, dres


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-12,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton ``layer_norm(x + residual)`` over the last dim, differentiable in every tensor argument.

    x, residual: (..., N), any strides, N <= ``MAX_ROW_COLS``; weight, bias: (N,). fp32 statistics;
    returns (..., N) in x's dtype. (A plain function around ``_LayerNormFn.apply``, which takes no
    keyword arguments.)
    """
    check_launchable("layer_norm", x, weight, bias, residual)
    n = x.shape[-1]
    check_vector("weight", weight, n)
    check_vector("bias", bias, n)
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} differs from x shape {tuple(x.shape)}")
    return _LayerNormFn.apply(x, weight, bias, eps, residual)


def layer_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-12,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch reference: ``layer_norm(x + residual)`` over the last dim; x (..., N), weight/bias (N,)."""
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
