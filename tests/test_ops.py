"""The dispatch rule of bertfast/ops.py, and the whole encoder on the Triton path (interpreter on CPU)."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from bertfast import ops
from conftest import TINY, padded_batch


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
