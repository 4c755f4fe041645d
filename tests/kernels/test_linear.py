"""bertfast_kernels.linear (Triton GEMM with bias + GELU epilogue, forward and backward) against fp64 and same-dtype torch."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from bertfast_kernels import launch
from bertfast_kernels.linear import linear, linear_ref
from bertfast_kernels.launch import gemm_m_bucket, interpreting
from bertfast_kernels.linear import _linear_fwd_tuned
from tests.helpers import needs_cuda

DTYPES = [torch.float32, torch.float16]
ACTIVATIONS = [None, "none", "tanh"]  # no activation, exact GELU, tanh GELU
# The interpreter evaluates exp with numpy, which warns where sigmoid's exp(-v) overflows to inf (as intended)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def _inputs(
    rows: tuple[int, ...], k: int, n: int, dtype: torch.dtype, device: torch.device, with_bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x (*rows, K) ~ N(0, 1), weight (N, K) scaled like nn.Linear's init, bias (N,) or None, in ``dtype``."""
    x = torch.randn(*rows, k, device=device).to(dtype)
    weight = (torch.randn(n, k, device=device) / k**0.5).to(dtype)
    bias = torch.randn(n, device=device).to(dtype) if with_bias else None
    return x, weight, bias


def _run(
    leaf: Callable[[torch.Tensor | None], torch.Tensor | None],
    fn: Callable[..., torch.Tensor],
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    activation: str | None,
    dy: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fn(x, weight, bias, activation)`` on same-strided leaf copies; with dy, also [dx, dweight, dbias]."""
    leaves = [leaf(t) for t in tensors]
    out = fn(*leaves, activation)
    if dy is None:
        return out, []
    return out, list(torch.autograd.grad(out, [t for t in leaves if t is not None], dy))


def _check(check_error, leaf, tensors, activation: str | None, what: str, backward: bool = True) -> None:
    """Kernel vs torch same dtype vs fp64 reference, forward and (optionally) the gradients."""
    x = tensors[0]
    n = tensors[1].shape[0]
    dy = torch.randn(*x.shape[:-1], n, device=x.device).to(x.dtype) if backward else None
    out, grads = _run(leaf, linear, tensors, activation, dy)
    out_torch, grads_torch = _run(leaf, linear_ref, tensors, activation, dy)
    tensors64 = tuple(None if t is None else t.double() for t in tensors)
    out_ref, grads_ref = _run(leaf, linear_ref, tensors64, activation, None if dy is None else dy.double())
    check_error(out, out_torch, out_ref, f"{what} output")
    for name, g, g_torch, g_ref in zip(["dx", "dweight", "dbias"], grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k, n", [(32, 96), (96, 130), (130, 32)], ids=lambda v: str(v))
@pytest.mark.parametrize("m", [1, 7, 33, 130])
def test_shapes(m, k, n, dtype, device, check_error, leaf):
    """Edges in every dimension: partial row, column and K tiles, a partial group of row tiles (M=130)."""
    _check(check_error, leaf, _inputs((m,), k, n, dtype, device), "none", f"M={m} K={k} N={n}")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_epilogues(activation, with_bias, device, check_error, leaf):
    tensors = _inputs((33,), 96, 130, torch.float16, device, with_bias)
    _check(check_error, leaf, tensors, activation, f"{activation} bias={with_bias}")


@pytest.mark.parametrize("shape", [(2, 7), (1, 1), (2, 3, 5)], ids=str)
def test_leading_dims(shape, device, check_error, leaf):
    tensors = _inputs(shape, 96, 32, torch.float32, device)
    _check(check_error, leaf, tensors, "none", f"rows={shape}")


@pytest.mark.parametrize("layout", ["row_slice", "transposed", "column_stride", "weight_transposed"])
def test_non_contiguous(layout, device, check_error, leaf):
    """Row-strided x runs in place; other layouts (and a weight stored transposed) are copied to rows first."""
    base = torch.randn(7, 5, 3 * 96, device=device)
    x, weight, bias = _inputs((7, 5), 96, 33, torch.float32, device)
    views = {
        "row_slice": base[..., 5:101],  # (7, 5, 96), row stride 288
        "transposed": base[..., :96].transpose(0, 1),  # (5, 7, 96)
        "column_stride": base[..., ::3],  # (7, 5, 96), column stride 3
        "weight_transposed": x,
    }
    x = views[layout]
    if layout == "weight_transposed":
        weight = weight.t().contiguous().t()  # (33, 96) with strides (1, 33)
    assert not (x.is_contiguous() and weight.is_contiguous())
    _check(check_error, leaf, (x, weight, bias), "none", layout)


def test_forward_only_gives_no_graph(device):
    """Inference calls (no grad anywhere) produce a plain tensor."""
    x, weight, bias = _inputs((7,), 32, 32, torch.float32, device)
    with torch.no_grad():
        assert linear(x, weight, bias, "none").grad_fn is None


def test_empty_and_k_zero(device):
    x, weight, bias = _inputs((0,), 32, 16, torch.float32, device)
    assert linear(x, weight, bias).shape == (0, 16)
    x, weight, bias = _inputs((3,), 0, 16, torch.float32, device)
    torch.testing.assert_close(linear(x, weight, bias, "none"), linear_ref(x, weight, bias, "none"))


def test_bad_input(device):
    x, weight, bias = _inputs((4,), 32, 16, torch.float32, device)
    with pytest.raises(ValueError, match="gelu must be one of"):
        linear(x, weight, bias, "relu")
    with pytest.raises(ValueError, match="do not fit"):
        linear(x, weight.t(), bias)
    with pytest.raises(ValueError, match="bias"):
        linear(x, weight, bias[:8])
    with pytest.raises(TypeError, match="share one dtype"):
        linear(x.half(), weight, bias)
    with pytest.raises(TypeError, match="share one dtype"):
        linear(x.double(), weight.double(), bias.double())


def test_autotuning_only_on_cuda(monkeypatch):
    """Several candidate tiles on CUDA; one in the interpreter, which has no driver to benchmark with.
    Row tiles far taller than the bucket's rows are not benchmarked."""
    assert (len(_linear_fwd_tuned.configs) == 1) == interpreting()
    assert [gemm_m_bucket(m) for m in (1, 16, 17, 4096, 4097, 10**6)] == [16, 16, 32, 4096, 8192, 8192]
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    gpu_configs = launch._gemm_configs()
    assert len(gpu_configs) == len(launch._GEMM_TILES) > 1
    row_tiles = {bucket: {c.kwargs["BLOCK_M"] for c in launch._prune_gemm_configs(gpu_configs, {"M_BUCKET": bucket})}
                 for bucket in (16, 64, 4096)}
    assert row_tiles == {16: {32}, 64: {32, 64, 128}, 4096: {32, 64, 128, 256}}


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.linear import linear, linear_ref\n"
        "x, w, b = torch.randn(2, 8), torch.randn(4, 8), torch.randn(4)\n"
        "expected = torch.nn.functional.gelu(x @ w.T + b)",
        ["torch.testing.assert_close(linear_ref(x, w, b, 'none'), expected)"],
        ["linear(x, w, b, 'none')"],
    )


def test_compiles_for_gpu(compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): a large autotuned tile (8 warps) in fp16 with bias + erf GELU,
    and the smallest, deepest-pipelined one in fp32 (IEEE dot) with tanh GELU and no bias. (bf16 lowers like
    fp16; the bert-base GPU tests run it.)"""
    variants = []
    for dtype, (bm, bn, bk, warps, stages), bias, gelu, tanh in (
        ("fp16", (128, 128, 64, 8, 4), True, True, False),
        ("fp32", (32, 64, 64, 4, 5), False, True, True),
    ):
        constexprs = {
            "HAS_BIAS": bias, "GELU": gelu, "TANH": tanh, "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
            "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8,
        }
        variants.append({"dtype": dtype, "types": {}, "constexprs": constexprs, "num_warps": warps,
                         "num_stages": stages})
    result = compile_for_gpu("bertfast_kernels.linear", "_linear_fwd_kernel", variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 4"


@needs_cuda
@pytest.mark.parametrize("activation", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [4096, 128])
def test_gpu_bert_base_intermediate(m, dtype, activation, check_error, leaf):
    """bert-base's intermediate dense, H=768 -> 4H=3072, at a large and a small token count."""
    tensors = _inputs((m,), 768, 3072, dtype, torch.device("cuda"))
    _check(check_error, leaf, tensors, activation, f"M={m} {dtype}")


@needs_cuda
@pytest.mark.parametrize("k, n", [(768, 2304), (3072, 768)], ids=["qkv", "output"])
def test_gpu_bert_base_other_projections(k, n, check_error, leaf):
    """The fused QKV and FFN-output projections, bf16, without activation."""
    tensors = _inputs((4096,), k, n, torch.bfloat16, torch.device("cuda"))
    _check(check_error, leaf, tensors, None, f"K={k} N={n}")
