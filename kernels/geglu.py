"""GeGLU, ``gelu(x[..., :I]) * x[..., I:]`` (ModernBERT's MLP gate): Triton forward/backward kernels and the torch reference.

One pass each way: the forward reads both halves of a row once and writes the (..., I) product; the
backward reads the output gradient and both halves and writes both halves of dx,
``d_a = g * b * gelu'(a)``, ``d_b = g * gelu(a)``. Math is fp32 whatever the input dtype, GELU exact
(erf) or the tanh approximation, through kernels/gelu.py's ``gelu_f32`` and its gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertfast_kernels.gelu import APPROXIMATIONS, _gelu_grad, gelu_f32
from bertfast_kernels.launch import DTYPES, as_rows, cdiv, check_launchable, jit, row_launch_settings, tl


@jit
def _geglu_fwd_kernel(
    x_ptr,  # (M, 2 I) input rows, row stride stride_x, unit column stride
    y_ptr,  # (M, I) output, contiguous, dtype of x
    stride_x,
    M,
    I,
    TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < I)[None, :]
    a_ptrs = x_ptr + rows[:, None] * stride_x + cols[None, :]
    a = tl.load(a_ptrs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(a_ptrs + I, mask=mask, other=0.0).to(tl.float32)
    y = gelu_f32(a, TANH) * b
    tl.store(y_ptr + rows[:, None] * I + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _geglu_bwd_kernel(
    dy_ptr,  # (M, I) output gradient rows, row stride stride_dy, unit column stride
    x_ptr,  # (M, 2 I) input rows, row stride stride_x, unit column stride
    dx_ptr,  # (M, 2 I) input gradient, contiguous, dtype of x
    stride_dy,
    stride_x,
    M,
    I,
    TANH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < I)[None, :]
    a_ptrs = x_ptr + rows[:, None] * stride_x + cols[None, :]
    a = tl.load(a_ptrs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(a_ptrs + I, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    da_ptrs = dx_ptr + rows[:, None] * (2 * I) + cols[None, :]
    tl.store(da_ptrs, (dy * b * _gelu_grad(a, TANH)).to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(da_ptrs + I, (dy * gelu_f32(a, TANH)).to(dx_ptr.dtype.element_ty), mask=mask)


def _geglu_fwd(x: torch.Tensor, approximate: str) -> torch.Tensor:
    """x: (M, 2 I) with unit column stride -> gelu(a) * b (M, I)."""
    M, I = x.shape[0], x.shape[1] // 2
    y = torch.empty((M, I), dtype=x.dtype, device=x.device)
    if y.numel() > 0:
        cfg = row_launch_settings(I, whole_row=False)
        # grid: (row tiles, column tiles of one half)
        _geglu_fwd_kernel[(cdiv(M, cfg.block_rows), cdiv(I, cfg.block_cols))](
            x, y, x.stride(0), M, I, TANH=approximate == "tanh",
            BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols, num_warps=cfg.num_warps,
        )
    return y


def _geglu_bwd(dy: torch.Tensor, x: torch.Tensor, approximate: str) -> torch.Tensor:
    """dy: (M, I), x: (M, 2 I), both with unit column stride -> dx (M, 2 I)."""
    M, I = dy.shape
    dx = torch.empty((M, 2 * I), dtype=x.dtype, device=x.device)
    if dy.numel() > 0:
        cfg = row_launch_settings(I, whole_row=False)
        _geglu_bwd_kernel[(cdiv(M, cfg.block_rows), cdiv(I, cfg.block_cols))](
            dy, x, dx, dy.stride(0), x.stride(0), M, I, TANH=approximate == "tanh",
            BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols, num_warps=cfg.num_warps,
        )
    return dx


class _GegluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, approximate: str) -> torch.Tensor:
        x_rows = as_rows(x)  # (M, 2 I)
        ctx.save_for_backward(x_rows)
        ctx.approximate, ctx.x_shape = approximate, x.shape
        return _geglu_fwd(x_rows, approximate).view(*x.shape[:-1], x.shape[-1] // 2)  # (..., I)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x_rows,) = ctx.saved_tensors
        return _geglu_bwd(as_rows(dy), x_rows, ctx.approximate).view(ctx.x_shape), None  # dx: (..., 2 I)


def _check(op: str, x: torch.Tensor, approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(f"bertfast_kernels.{op}: the last dim must be even (2 I), got shape {tuple(x.shape)}")


def geglu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Triton ``gelu(x[..., :I]) * x[..., I:]``, differentiable in x.

    x: (..., 2 I), any I and leading shape; rows are read in place when the last dim is contiguous
    (other layouts are copied to rows first). approximate: "none" (exact erf) or "tanh". Returns a
    contiguous (..., I) in x's dtype.
    """
    check_launchable("geglu", x)
    _check("geglu", x, approximate)
    if x.dtype not in DTYPES:
        raise TypeError(f"bertfast_kernels.geglu: x must be one of {DTYPES}, got {x.dtype}")
    return _GegluFn.apply(x, approximate)


def geglu_ref(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Torch reference: ``a, b = x.chunk(2, -1)``; ``gelu(a, approximate) * b`` as transformers' ModernBertMLP.

    x: (..., 2 I); approximate: "none" (exact erf) or "tanh". Returns (..., I) in x's dtype.
    """
    _check("geglu_ref", x, approximate)
    a, b = x.chunk(2, dim=-1)
    return F.gelu(a, approximate=approximate) * b
