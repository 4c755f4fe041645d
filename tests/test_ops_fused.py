"""The fused ops of bertfast/ops.py: dense_gelu's GEMM choice and embeddings, Triton path (interpreter on CPU)
against the torch path, and the torch path against what BertEmbeddings computes."""
from __future__ import annotations

import pytest
import torch

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.modeling import BertEmbeddings
from conftest import TINY

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


@pytest.fixture
def triton_path(monkeypatch, device):
    """Switch bertfast.ops to the Triton kernels (on CPU: through the interpreter conftest enables)."""
    monkeypatch.setenv("BERTFAST_BACKEND", "triton")
    return device


def test_gemm_choice(monkeypatch):
    monkeypatch.delenv("BERTFAST_GEMM", raising=False)
    assert ops.gemm_choice() == ops.AUTO_GEMM
    for choice in ("cublas", "triton"):
        monkeypatch.setenv("BERTFAST_GEMM", choice.upper())
        assert ops.gemm_choice() == choice
    monkeypatch.setenv("BERTFAST_GEMM", "cutlass")
    with pytest.raises(ValueError, match="BERTFAST_GEMM='cutlass' is not one of"):
        ops.gemm_choice()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("gemm", ["cublas", "triton"])
def test_dense_gelu_triton_path_matches_torch_path(gemm, approximate, triton_path, monkeypatch):
    x = torch.randn(2, 7, 32, device=triton_path)  # (B, S, H)
    weight, bias = torch.randn(37, 32, device=triton_path) / 32**0.5, torch.randn(37, device=triton_path)
    monkeypatch.setenv("BERTFAST_GEMM", gemm)
    fused = ops.dense_gelu(x, weight, bias, approximate)
    monkeypatch.setenv("BERTFAST_BACKEND", "torch")
    reference = ops.dense_gelu(x, weight, bias, approximate)
    assert fused.shape == (2, 7, 37)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_dense_gelu_takes_the_chosen_gemm(triton_path, monkeypatch):
    """BERTFAST_GEMM=triton calls kernels.linear with the GELU epilogue; cublas never does."""
    calls = []
    monkeypatch.setattr(ops.kernels, "linear", lambda *args, **kwargs: calls.append(kwargs["activation"]))
    x, weight, bias = torch.randn(3, 8, device=triton_path), torch.randn(16, 8, device=triton_path), None
    monkeypatch.setenv("BERTFAST_GEMM", "cublas")
    ops.dense_gelu(x, weight, bias, "tanh")
    monkeypatch.setenv("BERTFAST_GEMM", "triton")
    ops.dense_gelu(x, weight, bias, "tanh")
    ops.dense_gelu(x, weight, bias, "none")
    assert calls == ["gelu_tanh", "gelu"]
    with pytest.raises(ValueError, match="approximate must be one of"):
        ops.dense_gelu(x, weight, bias, "sigmoid")


def _embeddings_module(device: torch.device) -> BertEmbeddings:
    module = BertEmbeddings(BertConfig(**TINY)).to(device).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
        module.word_embeddings.weight[module.word_embeddings.padding_idx] = 0
    return module


def _ops_embeddings(module: BertEmbeddings, input_ids, token_type_ids, position_ids) -> torch.Tensor:
    """ops.embeddings with the module's parameters, as BertEmbeddings will call it."""
    return ops.embeddings(input_ids, module.word_embeddings.weight, module.position_embeddings.weight,
                          module.token_type_embeddings.weight, module.LayerNorm.weight, module.LayerNorm.bias,
                          module.LayerNorm.eps, token_type_ids, position_ids,
                          padding_idx=module.word_embeddings.padding_idx)


@pytest.mark.parametrize("given", ["neither", "token_types", "both"])
def test_embeddings_both_paths(given, triton_path, monkeypatch):
    """The torch path (what BertEmbeddings.forward runs) is bit-identical to BERT's embeddings written with
    the module's own nn.Embedding / nn.LayerNorm, as transformers computes them; the Triton path matches (fp32)."""
    module = _embeddings_module(triton_path)
    ids = torch.randint(0, TINY["vocab_size"], (3, 11), device=triton_path)
    ids[:, 8:] = 0  # padding
    token_types = torch.randint(0, 2, ids.shape, device=triton_path) if given != "neither" else None
    positions = torch.randint(0, TINY["max_position_embeddings"], ids.shape, device=triton_path)
    positions = positions if given == "both" else None
    fused = _ops_embeddings(module, ids, token_types, positions)
    monkeypatch.setenv("BERTFAST_BACKEND", "torch")
    with torch.no_grad():
        reference = module(ids, token_types, positions)
        token_types = torch.zeros_like(ids) if token_types is None else token_types
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids) if positions is None else positions
        summed = (module.word_embeddings(ids) + module.token_type_embeddings(token_types)
                  + module.position_embeddings(positions))  # (B, S, H)
        expected = module.LayerNorm(summed)
    assert torch.equal(reference, expected)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_embeddings_triton_path_fp16_and_gradients(triton_path, monkeypatch, leaf):
    """fp16 tables within the dtype's rounding of the torch path; gradients equal the torch path's."""
    module = _embeddings_module(triton_path).half()
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), device=triton_path)
    params = [leaf(p.detach()) for p in (module.word_embeddings.weight, module.position_embeddings.weight,
                                         module.token_type_embeddings.weight, module.LayerNorm.weight,
                                         module.LayerNorm.bias)]
    dy = torch.randn(2, 9, TINY["hidden_size"], device=triton_path).half()
    results = []
    for backend in ("triton", "torch"):
        monkeypatch.setenv("BERTFAST_BACKEND", backend)
        out = ops.embeddings(ids, *params, module.LayerNorm.eps, padding_idx=0)
        results.append((out, torch.autograd.grad(out, params, dy)))
    (fused, fused_grads), (reference, reference_grads) = results
    torch.testing.assert_close(fused, reference, atol=2e-3, rtol=0)
    for g, g_ref in zip(fused_grads, reference_grads):
        torch.testing.assert_close(g, g_ref, atol=0, rtol=0)
