"""bertfast_kernels.bias_gelu (Triton, forward and backward) against fp64 and same-dtype torch references."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from bertfast_kernels.gelu import bias_gelu, bias_gelu_ref
from bertfast_kernels.launch import row_launch_settings
from tests.helpers import needs_cuda

WIDTHS = [32, 96, 384, 781]
DTYPES = [torch.float32, torch.float16]
APPROXIMATIONS = ["none", "tanh"]
# The interpreter evaluates exp with numpy, which warns where sigmoid's exp(-v) overflows to inf (as intended)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def _inputs(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, with_bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (shape) spread over gelu's curved region and both tails, bias (N,) or None, in ``dtype``."""
    x = (3 * torch.randn(shape, device=device)).to(dtype)
    bias = torch.randn(shape[-1], device=device).to(dtype) if with_bias else None
    return x, bias


def _run(
    leaf: Callable[[torch.Tensor | None], torch.Tensor | None],
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    bias: torch.Tensor | None,
    approximate: str,
    dy: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward (and, given dy, backward) of ``fn`` on leaf copies: (out, [dx, dbias if bias])."""
    leaves = [leaf(t) for t in (x, bias)]
    out = fn(leaves[0], leaves[1], approximate)
    if dy is None:
        return out, []
    return out, list(torch.autograd.grad(out, [t for t in leaves if t is not None], dy))


def _check(check_error, leaf, x, bias, approximate: str, what: str, backward: bool) -> None:
    """Kernel vs torch same dtype vs fp64 reference, forward and optionally the gradients."""
    dy = torch.randn(x.shape, device=x.device).to(x.dtype) if backward else None
    out, grads = _run(leaf, bias_gelu, x, bias, approximate, dy)
    out_torch, grads_torch = _run(leaf, bias_gelu_ref, x, bias, approximate, dy)
    bias64 = None if bias is None else bias.double()
    out_ref, grads_ref = _run(leaf, bias_gelu_ref, x.double(), bias64, approximate, None if dy is None else dy.double())
    check_error(out, out_torch, out_ref, f"{what} output")
    for name, g, g_torch, g_ref in zip(["dx", "dbias"], grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} {name}")


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", WIDTHS)
def test_forward_backward(width, dtype, approximate, device, check_error, leaf):
    x, bias = _inputs((7, 3, width), dtype, device)
    _check(check_error, leaf, x, bias, approximate, f"N={width} {approximate}", backward=True)


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_without_bias(approximate, device, check_error, leaf):
    x, _ = _inputs((33, 96), torch.float16, device, with_bias=False)
    _check(check_error, leaf, x, None, approximate, "no bias", backward=True)


@pytest.mark.parametrize("shape", [(1, 96), (7, 96), (1, 1, 96), (2, 7, 1, 96)], ids=str)
def test_leading_shapes(shape, device, check_error, leaf):
    x, bias = _inputs(shape, torch.float32, device)
    _check(check_error, leaf, x, bias, "none", f"shape={shape}", backward=True)


@pytest.mark.parametrize("layout", ["row_slice", "transposed", "column_stride"])
def test_non_contiguous(layout, device, check_error, leaf):
    """Row-strided views run in place; other layouts are copied to rows first."""
    base = 3 * torch.randn(2, 7, 3 * 96, device=device)
    views = {
        "row_slice": base[..., 5:101],  # (2, 7, 96), row stride 288
        "transposed": base[..., :96].transpose(0, 1),  # (7, 2, 96)
        "column_stride": base[..., ::3],  # (2, 7, 96), column stride 3
    }
    x = views[layout]
    assert not x.is_contiguous()
    _, bias = _inputs((96,), torch.float32, device)
    _check(check_error, leaf, x, bias, "none", layout, backward=True)


def test_wide_rows_split_into_column_tiles(device, check_error, leaf):
    """Rows wider than one column tile (3072: BERT's intermediate size) go through several programs."""
    x, bias = _inputs((2, 3072), torch.float16, device)
    _check(check_error, leaf, x, bias, "none", "N=3072", backward=True)


def test_empty_input(device):
    x, bias = _inputs((0, 32), torch.float32, device)
    assert bias_gelu(x, bias).shape == (0, 32)


def test_bad_input(device):
    x, bias = _inputs((4, 32), torch.float32, device)
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(x, bias[:16])
    with pytest.raises(ValueError, match="approximate"):
        bias_gelu(x, bias, "sigmoid")


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.gelu import bias_gelu, bias_gelu_ref\n"
        "x, b = torch.randn(2, 8), torch.randn(8)",
        ["torch.testing.assert_close(bias_gelu_ref(x, b), torch.nn.functional.gelu(x + b))"],
        ["bias_gelu(x, b)"],
    )


@pytest.mark.parametrize("kernel", ["_bias_gelu_fwd_kernel", "_bias_gelu_bwd_kernel"])
def test_compiles_for_gpu(kernel, compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): bf16 tanh with bias at 3072, fp16 erf without at 96."""
    variants = []
    for dtype, width, bias, tanh in (("bf16", 3072, True, True), ("fp16", 96, False, False)):
        cfg = row_launch_settings(width, whole_row=False)
        constexprs = {"HAS_BIAS": bias, "TANH": tanh, "BLOCK_M": cfg.block_rows, "BLOCK_N": cfg.block_cols}
        types = {"dbias_ptr": "*fp32"}
        variants.append({"dtype": dtype, "types": types, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.gelu", kernel, variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 4"


@needs_cuda
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_bert_base(dtype, approximate, check_error, leaf):
    x, bias = _inputs((32, 128, 3072), dtype, torch.device("cuda"))
    _check(check_error, leaf, x, bias, approximate, "bert-base intermediate", backward=True)
