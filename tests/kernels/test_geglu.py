"""bertfast_kernels.geglu (Triton, forward and backward) against fp64 and same-dtype torch references."""
from __future__ import annotations

import pytest
import torch

from bertfast_kernels.geglu import geglu, geglu_ref
from bertfast_kernels.launch import row_launch_settings
from tests.helpers import needs_cuda

DTYPES = [torch.float32, torch.float16]
APPROXIMATIONS = ["none", "tanh"]
# The interpreter evaluates exp with numpy, which warns where sigmoid's exp(-v) overflows to inf (as intended)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def _run(leaf, fn, x, approximate, dy):
    x = leaf(x)
    out = fn(x, approximate)
    return out, [] if dy is None else list(torch.autograd.grad(out, [x], dy))


def _check(check_error, leaf, x: torch.Tensor, approximate: str, what: str, backward: bool = True) -> None:
    """Kernel vs torch same dtype vs fp64 reference, forward and the gradient (both halves of dx)."""
    dy = torch.randn(*x.shape[:-1], x.shape[-1] // 2, device=x.device).to(x.dtype) if backward else None
    out, grads = _run(leaf, geglu, x, approximate, dy)
    out_torch, grads_torch = _run(leaf, geglu_ref, x, approximate, dy)
    out_ref, grads_ref = _run(leaf, geglu_ref, x.double(), approximate, None if dy is None else dy.double())
    check_error(out, out_torch, out_ref, f"{what} output")
    for g, g_torch, g_ref in zip(grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} dx")


def _inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """x spread over gelu's curved region and both tails."""
    return (3 * torch.randn(shape, device=device)).to(dtype)


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", [1, 37, 64, 130])
@pytest.mark.parametrize("rows", [1, 7, 130, 257])
def test_forward_backward(rows, width, dtype, approximate, device, check_error, leaf):
    x = _inputs((rows, 2 * width), dtype, device)
    _check(check_error, leaf, x, approximate, f"M={rows} I={width} {approximate}")


@pytest.mark.parametrize("shape", [(2, 7, 74), (1, 1, 2), (2, 3, 1, 260)], ids=str)
def test_leading_shapes(shape, device, check_error, leaf):
    _check(check_error, leaf, _inputs(shape, torch.float32, device), "none", f"shape={shape}")


@pytest.mark.parametrize("layout", ["row_slice", "transposed"])
def test_non_contiguous(layout, device, check_error, leaf):
    """Row-strided views (the last dim contiguous) run in place; other layouts are copied to rows first."""
    base = _inputs((2, 7, 3 * 74), torch.float16, device)
    x = {"row_slice": base[..., 5:79], "transposed": base[..., :74].transpose(0, 1)}[layout]  # (.., 74)
    assert not x.is_contiguous()
    _check(check_error, leaf, x, "tanh", layout)


def test_wide_rows_split_into_column_tiles(device, check_error, leaf):
    """I = 1152 (ModernBERT-base's intermediate size) is wider than one column tile: several programs per row."""
    _check(check_error, leaf, _inputs((3, 2 * 1152), torch.float16, device), "none", "I=1152")


def test_empty_input(device):
    assert geglu(torch.randn(0, 8, device=device)).shape == (0, 4)


def test_bad_input(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(ValueError, match="even"):
        geglu(torch.randn(4, 7, device=device))
    with pytest.raises(ValueError, match="approximate"):
        geglu(x, "sigmoid")
    with pytest.raises(TypeError, match="must be one of"):
        geglu(x.double())


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.geglu import geglu, geglu_ref\n"
        "x = torch.randn(2, 8)",
        ["torch.testing.assert_close(geglu_ref(x), torch.nn.functional.gelu(x[:, :4]) * x[:, 4:])"],
        ["geglu(x)"],
    )


@pytest.mark.parametrize("kernel", ["_geglu_fwd_kernel", "_geglu_bwd_kernel"])
def test_compiles_for_gpu(kernel, compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): bf16 erf at I=1152 (ModernBERT-base), fp16 tanh at I=37."""
    variants = []
    for dtype, width, tanh in (("bf16", 1152, False), ("fp16", 37, True)):
        cfg = row_launch_settings(width, whole_row=False)
        constexprs = {"TANH": tanh, "BLOCK_M": cfg.block_rows, "BLOCK_N": cfg.block_cols}
        variants.append({"dtype": dtype, "types": {}, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.geglu", kernel, variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 4"


@needs_cuda
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_modernbert_base(dtype, approximate, check_error, leaf):
    """ModernBERT-base's MLP gate: 8192 tokens, Wi output 2 x 1152."""
    _check(check_error, leaf, _inputs((8192, 2 * 1152), dtype, torch.device("cuda")), approximate, "modernbert-base")
