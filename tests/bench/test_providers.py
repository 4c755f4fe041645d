"""bertfast/bench/providers.py: availability reasons and the providers built on bertfast's own features."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

import bertfast
from bertfast.bench import providers as providers_module
from bertfast.bench.providers import (BertfastCudaGraphs, BertfastTorch, BertfastTriton, OnnxRuntimeOptimized,
                                      OnnxRuntimePlain)
from bertfast.bench.tasks import bench_task
from bertfast.bench.workloads import build_workloads
from bertfast.ops import backend_for

CPU = torch.device("cpu")


def test_providers_say_why_they_cannot_run():
    assert BertfastTorch().available(CPU, torch.float32) is None
    assert BertfastTriton().available(CPU, torch.float32) == "Triton kernels need a GPU (the interpreter is for tests)"
    assert BertfastCudaGraphs().available(CPU, torch.float16) == "CUDA graphs need a GPU"

    ort = OnnxRuntimeOptimized()
    assert ort.available(CPU, torch.float32) is None
    assert "bfloat16" in ort.available(CPU, torch.bfloat16)
    assert "for the GPU" in ort.available(CPU, torch.float16)
    if not torch.cuda.is_available():
        assert "CUDA" in ort.available(torch.device("cuda"), torch.float16)


def test_bertfast_provider_forces_its_backend_without_touching_the_environment(monkeypatch):
    """The backend is forced per call through bertfast.ops.force_backend (this thread only): it wins over
    BERTFAST_BACKEND, which is not rewritten, and is released after the call. The variable holds a bad value,
    which ops rejects unless a backend is forced."""
    monkeypatch.setenv("BERTFAST_BACKEND", "bogus")
    seen = []

    def model(**batch):
        seen.append((backend_for(batch["input_ids"]), os.environ["BERTFAST_BACKEND"]))
        return SimpleNamespace(last_hidden_state=batch["input_ids"])

    provider = BertfastTorch()
    provider.model = model
    ids = torch.ones(1, 3, dtype=torch.long)
    assert provider.run({"input_ids": ids}) is ids
    assert seen == [("torch", "bogus")]
    with pytest.raises(ValueError, match="BERTFAST_BACKEND='bogus'"):  # outside the call: the environment again
        backend_for(ids)


def test_onnxruntime_provider_runs_the_export_without_spinning_threads(tiny_checkpoint):
    """The real export and session: the output matches bertfast's, and on CPU the session uses torch's thread
    count and does not spin after a call (spinning threads slowed the next provider of an interleaved round)."""
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = build_workloads([2], [5], mixed=False, max_len=64)[0].inputs(model.config)
    expected = model(**batch).last_hidden_state
    provider = OnnxRuntimePlain()
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    try:
        out = provider.run(batch)
        options = provider.session.session.get_session_options()
    finally:
        provider.close()
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_onnxruntime_provider_runs_a_task_export(qa_checkpoint):
    """With --task the provider exports that task and returns its head's outputs, as bertfast's provider does."""
    task = bench_task("question-answering")
    batch = build_workloads([2], [5], mixed=True, max_len=64)[1].inputs(bertfast.BertConfig(vocab_size=30522))
    providers = [OnnxRuntimePlain(), BertfastTorch()]
    outputs = []
    for provider in providers:
        provider.task = task
        provider.prepare(qa_checkpoint, torch.float32, CPU)
        outputs.append(provider.run(batch))
        provider.close()
        assert provider.task is task  # close drops the model, not the task
    real = batch["attention_mask"].bool()
    assert outputs[0].shape == outputs[1].shape == (*real.shape, 2)
    torch.testing.assert_close(outputs[0][real], outputs[1][real], atol=1e-5, rtol=0)


def test_cudagraph_provider_calls_optimize(monkeypatch, tiny_checkpoint):
    """bertfast.optimize needs CUDA: a stand-in (in the providers module, which calls it) checks the provider's side (cuda_graphs=True, output as is)."""
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    calls = []

    def optimize(m, cuda_graphs):
        calls.append(cuda_graphs)
        return m

    monkeypatch.setattr(providers_module, "optimize", optimize)
    batch = build_workloads([2], [5], mixed=False, max_len=64)[0].inputs(model.config)
    provider = BertfastCudaGraphs()
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    out = provider.run(batch)
    provider.close()
    assert calls == [True] and torch.equal(out, model(**batch).last_hidden_state)
