"""bertfast_kernels.layer_norm (Triton, forward and backward) against fp64 and same-dtype torch references."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from bertfast_kernels.layer_norm import layer_norm, layer_norm_ref
from bertfast_kernels.launch import MAX_ROW_COLS, row_launch_settings
from tests.helpers import needs_cuda

WIDTHS = [32, 96, 384, 781]
DTYPES = [torch.float32, torch.float16]
EPS = 1e-5


def _inputs(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, residual: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x (shape) off-centre, weight/bias (N,), residual (shape) or None; all leaves in ``dtype``."""
    n = shape[-1]
    x = (2 * torch.randn(shape, device=device) + 1).to(dtype)
    weight = (1 + 0.5 * torch.randn(n, device=device)).to(dtype)
    bias = torch.randn(n, device=device).to(dtype)
    res = torch.randn(shape, device=device).to(dtype) if residual else None
    return x, weight, bias, res


def _run(
    leaf: Callable[[torch.Tensor | None], torch.Tensor | None],
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    res: torch.Tensor | None,
    dy: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward (and, given dy, backward) of ``fn`` on leaf copies: (out, grads of x, weight, bias, residual)."""
    leaves = [leaf(t) for t in (x, weight, bias, res)]
    out = fn(leaves[0], leaves[1], leaves[2], EPS, residual=leaves[3])
    if dy is None:
        return out, []
    present = [t for t in leaves if t is not None]
    return out, list(torch.autograd.grad(out, present, dy))


def _check(check_error, leaf, x, weight, bias, res, what: str, backward: bool) -> None:
    """Kernel vs torch same dtype vs fp64 reference, forward and optionally all gradients."""
    dy = torch.randn(x.shape, device=x.device).to(x.dtype) if backward else None
    out, grads = _run(leaf, layer_norm, x, weight, bias, res, dy)
    out_torch, grads_torch = _run(leaf, layer_norm_ref, x, weight, bias, res, dy)
    as64 = [t.double() if t is not None else None for t in (x, weight, bias, res)]
    out_ref, grads_ref = _run(leaf, layer_norm_ref, *as64, None if dy is None else dy.double())
    check_error(out, out_torch, out_ref, f"{what} output")
    names = ["dx", "dweight", "dbias", "dresidual"]
    for name, g, g_torch, g_ref in zip(names, grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} {name}")


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", WIDTHS)
def test_forward(width, dtype, residual, device, check_error, leaf):
    x, weight, bias, res = _inputs((7, 3, width), dtype, device, residual)
    _check(check_error, leaf, x, weight, bias, res, f"N={width}", backward=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", WIDTHS)
def test_backward_with_residual(width, dtype, device, check_error, leaf):
    x, weight, bias, res = _inputs((7, 3, width), dtype, device)
    _check(check_error, leaf, x, weight, bias, res, f"N={width}", backward=True)


def test_backward_without_residual(device, check_error, leaf):
    x, weight, bias, _ = _inputs((33, 96), torch.float16, device, residual=False)
    _check(check_error, leaf, x, weight, bias, None, "no residual", backward=True)


@pytest.mark.parametrize("shape", [(1, 96), (7, 96), (1, 1, 96), (2, 7, 1, 96)], ids=str)
def test_leading_shapes(shape, device, check_error, leaf):
    x, weight, bias, res = _inputs(shape, torch.float32, device)
    _check(check_error, leaf, x, weight, bias, res, f"shape={shape}", backward=True)


@pytest.mark.parametrize("layout", ["row_slice", "transposed", "column_stride"])
def test_non_contiguous(layout, device, check_error, leaf):
    """Row-strided views run in place; other layouts are copied to rows first."""
    base = torch.randn(2, 7, 3 * 96, device=device)
    views = {
        "row_slice": lambda t: t[..., 5:101],  # (2, 7, 96), row stride 288
        "transposed": lambda t: t[..., :96].transpose(0, 1),  # (7, 2, 96)
        "column_stride": lambda t: t[..., ::3],  # (2, 7, 96), column stride 3
    }
    x = views[layout](base)
    res = views[layout](torch.randn_like(base))
    _, weight, bias, _ = _inputs((96,), torch.float32, device, residual=False)
    assert not x.is_contiguous()
    _check(check_error, leaf, x, weight, bias, res, layout, backward=True)


def test_wide_rows(device, check_error, leaf):
    x, weight, bias, res = _inputs((3, 4096), torch.float16, device)
    _check(check_error, leaf, x, weight, bias, res, "N=4096", backward=True)


def test_empty_input(device):
    x, weight, bias, res = _inputs((0, 32), torch.float32, device)
    assert layer_norm(x, weight, bias, EPS, residual=res).shape == (0, 32)


def test_bad_input(device):
    x, weight, bias, res = _inputs((4, 32), torch.float32, device)
    with pytest.raises(ValueError, match="weight"):
        layer_norm(x, weight[:16], bias, EPS)
    with pytest.raises(ValueError, match="bias"):
        layer_norm(x, weight, bias[None], EPS)
    with pytest.raises(ValueError, match="residual shape"):
        layer_norm(x, weight, bias, EPS, residual=res[:2])
    wide = torch.randn(2, MAX_ROW_COLS + 1, device=device)
    ones = torch.ones(MAX_ROW_COLS + 1, device=device)
    with pytest.raises(ValueError, match="row width"):
        layer_norm(wide, ones, ones, EPS)


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.layer_norm import layer_norm, layer_norm_ref\n"
        "x, w, b = torch.randn(2, 8), torch.ones(8), torch.zeros(8)\n"
        "expected = torch.nn.functional.layer_norm(x, (8,), w, b, 1e-5)",
        ["torch.testing.assert_close(layer_norm_ref(x, w, b, 1e-5), expected)"],
        ["layer_norm(x, w, b, 1e-5)"],
    )


@pytest.mark.parametrize("kernel", ["_layer_norm_fwd_kernel", "_layer_norm_bwd_kernel"])
def test_compiles_for_gpu(kernel, compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): bf16 with residual at 768, fp16 without at 32."""
    stats = {"mean_ptr": "*fp32", "rstd_ptr": "*fp32", "dw_ptr": "*fp32", "db_ptr": "*fp32", "eps": "fp32"}
    variants = []
    for dtype, width, residual in (("bf16", 768, True), ("fp16", 32, False)):
        cfg = row_launch_settings(width, whole_row=True)
        constexprs = {"HAS_RESIDUAL": residual, "BLOCK_M": cfg.block_rows, "BLOCK_N": cfg.block_cols}
        variants.append({"dtype": dtype, "types": stats, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.layer_norm", kernel, variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 4"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_bert_base(dtype, check_error, leaf):
    x, weight, bias, res = _inputs((32, 128, 768), dtype, torch.device("cuda"))
    _check(check_error, leaf, x, weight, bias, res, "bert-base", backward=True)


@needs_cuda
def test_gpu_bf16_fp32_params(check_error):
    """bf16 activations with fp32 weight/bias (mixed precision): the kernel reads params in any dtype."""
    x, _, _, res = _inputs((4096, 1024), torch.bfloat16, torch.device("cuda"))
    _, weight, bias, _ = _inputs((1024,), torch.float32, torch.device("cuda"), residual=False)
    out = layer_norm(x, weight, bias, EPS, residual=res)
    out_ref = layer_norm_ref(x.double(), weight.double(), bias.double(), EPS, residual=res.double())
    out_torch = layer_norm_ref(x.float(), weight, bias, EPS, residual=res.float()).to(torch.bfloat16)
    check_error(out, out_torch, out_ref, "bf16 x, fp32 params")
