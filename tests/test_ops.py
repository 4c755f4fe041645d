"""bertfast/ops.py: the dispatch rule, the whole encoder on the Triton path (interpreter on CPU), and the fused
ops (dense_gelu's GEMM choice, embeddings) on the Triton path against the torch path and BertEmbeddings."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from bertfast import ops
from bertfast.config import BertConfig
from bertfast.models.bert import BertEmbeddings
from tests.helpers import TINY, padded_batch

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def test_dispatch_rule(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv("BERTFAST_BACKEND", raising=False)
    assert ops.backend_for(cpu) == "torch", "CPU tensors use the reference unless Triton is forced"
    monkeypatch.setenv("BERTFAST_BACKEND", "torch")
    assert ops.backend_for(cpu) == "torch"
    monkeypatch.setenv("BERTFAST_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops.backend_for(cpu) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors, or TRITON_INTERPRET=1"):
        ops.backend_for(cpu)
    monkeypatch.setenv("BERTFAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match="BERTFAST_BACKEND='cuda' is not one of"):
        ops.backend_for(cpu)


def test_tracing_always_takes_the_reference(monkeypatch):
    monkeypatch.setenv("BERTFAST_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    seen = []

    def probe(x):
        seen.append(ops.backend_for(x))
        return x + 1

    torch.jit.trace(probe, torch.zeros(2), check_trace=False)
    assert seen == ["torch"]


@pytest.mark.parametrize("padding_free", [True, False], ids=["varlen", "padded"])
def test_encoder_on_triton_path_matches_torch_path_and_transformers(tiny_checkpoint, monkeypatch, padding_free):
    if ops.interpreting() is False and not torch.cuda.is_available():
        pytest.fail("conftest must set TRITON_INTERPRET=1 on machines without CUDA")
    hf = transformers.BertForPreTraining.from_pretrained(tiny_checkpoint).eval()
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    model.bert.padding_free = padding_free
    batch = padded_batch(TINY["vocab_size"], [19, 7, 1])
    with torch.no_grad():
        expected = hf(**batch, output_hidden_states=True)
        monkeypatch.setenv("BERTFAST_BACKEND", "torch")
        reference = model(**batch, output_hidden_states=True)
        monkeypatch.setenv("BERTFAST_BACKEND", "triton")
        fused = model(**batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    for ours, ref, theirs in zip(fused.hidden_states, reference.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.prediction_logits[real], expected.prediction_logits[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(fused.seq_relationship_logits, expected.seq_relationship_logits, atol=1e-4, rtol=0)


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
    """BERTFAST_GEMM=triton calls bertfast_kernels.linear.linear with the GELU epilogue; cublas never does."""
    calls = []
    monkeypatch.setattr(ops, "triton_linear", lambda *args, **kwargs: calls.append(kwargs["gelu"]))
    x, weight, bias = torch.randn(3, 8, device=triton_path), torch.randn(16, 8, device=triton_path), None
    monkeypatch.setenv("BERTFAST_GEMM", "cublas")
    ops.dense_gelu(x, weight, bias, "tanh")
    monkeypatch.setenv("BERTFAST_GEMM", "triton")
    ops.dense_gelu(x, weight, bias, "tanh")
    ops.dense_gelu(x, weight, bias, "none")
    assert calls == ["tanh", "none"]
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
    return ops.embeddings(input_ids, word_weight=module.word_embeddings.weight,
                          position_weight=module.position_embeddings.weight,
                          token_type_weight=module.token_type_embeddings.weight, ln_weight=module.LayerNorm.weight,
                          ln_bias=module.LayerNorm.bias, eps=module.LayerNorm.eps, token_type_ids=token_type_ids,
                          position_ids=position_ids, padding_idx=module.word_embeddings.padding_idx)


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
    params = {name: leaf(p.detach()) for name, p in (
        ("word_weight", module.word_embeddings.weight), ("position_weight", module.position_embeddings.weight),
        ("token_type_weight", module.token_type_embeddings.weight), ("ln_weight", module.LayerNorm.weight),
        ("ln_bias", module.LayerNorm.bias))}
    dy = torch.randn(2, 9, TINY["hidden_size"], device=triton_path).half()
    results = []
    for backend in ("triton", "torch"):
        monkeypatch.setenv("BERTFAST_BACKEND", backend)
        out = ops.embeddings(ids, **params, eps=module.LayerNorm.eps, padding_idx=0)
        results.append((out, torch.autograd.grad(out, list(params.values()), dy)))
    (fused, fused_grads), (reference, reference_grads) = results
    torch.testing.assert_close(fused, reference, atol=2e-3, rtol=0)
    for g, g_ref in zip(fused_grads, reference_grads):
        torch.testing.assert_close(g, g_ref, atol=0, rtol=0)
