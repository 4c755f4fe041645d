"""Dense layer with a fused epilogue, ``act(x @ weight.T + bias)``: a Triton GEMM and the torch reference.

One kernel computes the product with fp32 accumulation, adds the bias and applies the activation
(exact-erf or tanh GELU, the jit ``gelu_f32`` of kernels/gelu.py) on the fp32 accumulator, and writes
the result once: BERT's intermediate projection (H -> 4H, bias, GELU) without the round trip through
memory of a separate bias_gelu pass, and without rounding the pre-activation to the input dtype.

Tiles: 2-D output tiles in grouped order (``GROUP_M`` row tiles sweep the column tiles together so that
the weight columns they share stay in L2); the tile shape and software-pipeline depth (num_stages)
are autotuned on CUDA per (row-count bucket, N, K), see ``gemm_autotune`` in kernels/launch.py.

Backward: torch matmuls. The pre-activation is recomputed with this kernel (no bias, no activation),
the GELU derivative and dbias come from kernels/gelu.py's ``bias_gelu_bwd``, then dx = dz @ W and
dW = dz^T @ x.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertfast_kernels.launch import (DTYPES, as_rows, cdiv, check_launchable, check_vector, gemm_autotune, gemm_m_bucket, jit,
                            tl)
from bertfast_kernels.gelu import APPROXIMATIONS, bias_gelu_bwd, gelu_f32

# The epilogues: None (no activation) or GELU named by its ``approximate`` (F.gelu's and bertfast_kernels.bias_gelu's words)
EPILOGUES = (None, *APPROXIMATIONS)


@jit
def _linear_fwd_kernel(
    x_ptr,  # (M, K) input rows, row stride stride_xm, unit column stride
    w_ptr,  # (N, K) weight (nn.Linear layout), row stride stride_wn, unit column stride
    bias_ptr,  # (N,) bias; x_ptr when HAS_BIAS is False
    y_ptr,  # (M, N) output, contiguous, dtype of x
    M,
    N,
    K,
    M_BUCKET,  # gemm_m_bucket(M): only an autotuning key, unused by the kernel
    stride_xm,
    stride_wn,
    HAS_BIAS: tl.constexpr,
    GELU: tl.constexpr,
    TANH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # program -> (row tile, column tile) in groups of GROUP_M row tiles, column-major inside a group
    pid = tl.program_id(0)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * tiles_n
    first_m = (pid // group_size) * GROUP_M
    group_rows = tl.minimum(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % group_rows
    pid_n = (pid % group_size) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # rows/columns past the edge wrap around (loads stay in bounds without masks); their results are not stored
    x_ptrs = x_ptr + (rows % M).to(tl.int64)[:, None] * stride_xm + ks[None, :]  # (BLOCK_M, BLOCK_K)
    w_ptrs = w_ptr + (cols % N).to(tl.int64)[None, :] * stride_wn + ks[:, None]  # (BLOCK_K, BLOCK_N) of W^T
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_in = ks < K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=k_in[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_in[:, None], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    col_mask = cols < N
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if GELU:
        acc = gelu_f32(acc, TANH)
    y_ptrs = y_ptr + rows.to(tl.int64)[:, None] * N + cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(rows < M)[:, None] & col_mask[None, :])


_linear_fwd_tuned = gemm_autotune(_linear_fwd_kernel)


def _dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 inputs use TF32 only where torch's own fp32 matmuls do."""
    return "tf32" if dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _linear_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str | None
) -> torch.Tensor:
    """x (M, K), weight (N, K), both with unit column stride -> act(x @ weight.T + bias) (M, N).

    approximate: None (no activation), "none" (erf GELU) or "tanh" (tanh GELU).
    """
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    # grid: one program per output tile, ordered inside the kernel
    _linear_fwd_tuned[lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(N, meta["BLOCK_N"]),)](
        x, weight, x if bias is None else bias.contiguous(), y,
        M, N, K, gemm_m_bucket(M), x.stride(0), weight.stride(0),
        HAS_BIAS=bias is not None, GELU=approximate is not None, TANH=approximate == "tanh",
        DOT_PRECISION=_dot_precision(x.dtype),
    )
    return y


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        gelu: str | None,
    ) -> torch.Tensor:
        x_rows = as_rows(x)  # (M, K)
        w_rows = as_rows(weight)  # (N, K)
        ctx.save_for_backward(x_rows, w_rows, bias)
        ctx.approximate = gelu
        ctx.x_shape = x.shape
        y = _linear_fwd(x_rows, w_rows, bias, ctx.approximate)  # (M, N)
        return y.view(*x.shape[:-1], weight.shape[0])  # (..., N)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x_rows, w_rows, bias = ctx.saved_tensors
        dy_rows = as_rows(dy)  # (M, N)
        if ctx.approximate is None:
            dz = dy_rows
            dbias = None if bias is None else dy_rows.sum(0, dtype=torch.float32).to(bias.dtype)
        else:
            z = _linear_fwd(x_rows, w_rows, None, None)  # (M, N) pre-activation without the bias
            dz, dbias = bias_gelu_bwd(dy_rows, z, bias, ctx.approximate)
        dx = (dz @ w_rows).view(ctx.x_shape) if ctx.needs_input_grad[0] else None  # (..., K)
        dw = dz.t() @ x_rows if ctx.needs_input_grad[1] else None  # (N, K)
        return dx, dw, dbias, None


def _check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None) -> None:
    """Raise on an unknown epilogue, mismatched shapes, or a dtype mix / unsupported dtype."""
    if gelu not in EPILOGUES:
        raise ValueError(f"bertfast_kernels.linear: gelu must be one of {list(EPILOGUES)}, got {gelu!r}")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"bertfast_kernels.linear: x (..., K) and weight (N, K) do not fit: x {tuple(x.shape)}, weight {tuple(weight.shape)}"
        )
    check_vector("bias", bias, weight.shape[0])
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if len(dtypes) != 1 or x.dtype not in DTYPES:
        raise TypeError(
            f"bertfast_kernels.linear: x, weight and bias must share one dtype of {DTYPES}, got {sorted(map(str, dtypes))}"
        )


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None
) -> torch.Tensor:
    """Triton ``x @ weight.T + bias``, then GELU if asked, differentiable in x, weight and bias.

    x: (..., K), any strides; weight: (N, K) (nn.Linear layout); bias: (N,) or None; one dtype of fp32 /
    fp16 / bf16 for all three. gelu: None (no activation) or GELU's ``approximate`` as in F.gelu, "none"
    (exact erf, BERT's "gelu") or "tanh" ("gelu_new" checkpoints), applied in fp32 to the fp32 accumulator.
    Returns (..., N) in x's dtype.
    """
    check_launchable("linear", x, weight, bias)
    _check_linear(x, weight, bias, gelu)
    return _LinearFn.apply(x, weight, bias, gelu)


def linear_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: str | None = None
) -> torch.Tensor:
    """Torch reference: ``F.linear``, then ``F.gelu(approximate=gelu)`` unless gelu is None; x (..., K), weight (N, K)."""
    y = F.linear(x, weight, bias)  # (..., N)
    return y if gelu is None else F.gelu(y, approximate=gelu)
