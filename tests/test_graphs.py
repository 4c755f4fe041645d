"""CUDA graphs by bucket: the wrapper's logic with capture emulated on CPU; the real capture on a GPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import bertfast
from bertfast.graphs import bucket_for
from tests.helpers import TASK_CLASSES, TINY, needs_cuda, padded_batch, task_batch


class EmulatedGraph:
    """Stands in for torch.cuda.CUDAGraph off CUDA: replay re-runs the recorded function and writes its
    results into the tensors that capture returned, as a real replay does."""

    def __init__(self, fn, outputs):
        self.fn, self.outputs = fn, outputs

    def replay(self) -> None:
        fresh = self.fn()
        for f in dataclasses.fields(self.outputs):
            static = getattr(self.outputs, f.name)
            if isinstance(static, torch.Tensor):
                static.copy_(getattr(fresh, f.name))


class EmulatedCapture:
    def __init__(self):
        self.count = 0

    def __call__(self, fn):
        self.count += 1
        outputs = fn()
        return EmulatedGraph(fn, outputs), outputs


def assert_same_task_outputs(name: str, got, expected, batch: dict[str, torch.Tensor], atol: float) -> None:
    """Every tensor output of a task model of the same shape and close; per-token ones at real tokens."""
    real = batch["attention_mask"].bool()
    per_token = name in ("BertForTokenClassification", "BertForQuestionAnswering")
    for f in dataclasses.fields(expected):
        value = getattr(expected, f.name)
        if isinstance(value, torch.Tensor):
            ours = getattr(got, f.name)
            assert ours.shape == value.shape, f.name
            torch.testing.assert_close(ours[real] if per_token else ours, value[real] if per_token else value,
                                       atol=atol, rtol=0)


@pytest.fixture
def graphed(tiny_checkpoint):
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    capture = EmulatedCapture()
    return model, bertfast.optimize(model, batch_buckets=(2, 4), seq_buckets=(8, 16, 32), capture=capture), capture


def test_bucket_for():
    assert [bucket_for(v, (1, 8, 32)) for v in (1, 2, 8, 9, 32, 33)] == [1, 8, 8, 32, 32, None]


def test_outputs_equal_the_plain_model_and_buckets_are_captured_once(graphed):
    model, runner, capture = graphed
    for lengths in ([13, 9, 4], [16, 16], [5], [11, 2, 7, 3], [30]):
        batch = padded_batch(TINY["vocab_size"], lengths)
        with torch.no_grad():
            expected = model(**batch)
        got = runner(**batch)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(got.prediction_logits[real], expected.prediction_logits[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(got.seq_relationship_logits, expected.seq_relationship_logits, atol=1e-5, rtol=0)
        assert got.prediction_logits.shape == expected.prediction_logits.shape
        assert torch.all(got.prediction_logits[~real] == 0)
    stats = runner.stats()
    assert set(stats["captures"]) == {(4, 16), (2, 16), (2, 8), (2, 32)}, "[11, 2, 7, 3] reuses (4, 16)"
    assert capture.count == 4 and stats["replays"] == 5 and stats["eager_calls"] == 0
    runner(**padded_batch(TINY["vocab_size"], [14, 12, 10]))
    assert capture.count == 4, "a new shape inside a captured bucket must not re-capture"


def test_outputs_are_copies_not_the_static_buffers(graphed):
    _, runner, _ = graphed
    first = runner(**padded_batch(TINY["vocab_size"], [6, 6]))
    kept = first.prediction_logits.clone()
    runner(**padded_batch(TINY["vocab_size"], [7, 5]))
    assert torch.equal(first.prediction_logits, kept)


def test_what_graphs_cannot_serve_runs_the_plain_model(graphed):
    model, runner, capture = graphed
    batch = padded_batch(TINY["vocab_size"], [6, 4])
    out = runner(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    with pytest.warns(UserWarning, match="beyond the largest bucket"):
        runner(**padded_batch(TINY["vocab_size"], [40]))
    runner(**padded_batch(TINY["vocab_size"], [3] * 5))
    assert capture.count == 0 and runner.stats()["eager_calls"] == 3


def test_return_packed_runs_the_plain_model(tiny_checkpoint):
    """Packed outputs have a data-dependent shape, which a graph cannot replay."""
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    capture = EmulatedCapture()
    runner = bertfast.optimize(model, batch_buckets=(2,), seq_buckets=(8,), capture=capture)
    batch = padded_batch(TINY["vocab_size"], [6, 4])
    out = runner(**batch, return_packed=True)
    torch.testing.assert_close(out.last_hidden_state, model(**batch, return_packed=True).last_hidden_state)
    assert out.last_hidden_state.shape == (10, TINY["hidden_size"])
    assert capture.count == 0 and runner.stats()["eager_calls"] == 1
    runner(**batch, return_packed=False)
    assert capture.count == 1 and runner.stats()["eager_calls"] == 1


@pytest.mark.parametrize("name", TASK_CLASSES)
def test_task_models_outputs_are_sliced_back_along_their_axes(name, task_checkpoint):
    """Per-token logits (B, S, ...) and (B, S) come back at the call's sequence length, sequence and choice
    logits at its batch (and number of choices); multiple choice buckets (B, num_choices, S) inputs."""
    model = getattr(bertfast, name).from_pretrained(task_checkpoint(name))
    capture = EmulatedCapture()
    runner = bertfast.optimize(model, batch_buckets=(2, 4), seq_buckets=(8, 16), capture=capture)
    for lengths, choices in (([13, 9, 4], 3), ([5], 3), ([7, 2], 2)):
        batch = task_batch(name, TINY["vocab_size"], lengths, num_choices=choices)
        with torch.no_grad():
            expected = model(**batch)
        got = runner(**batch)
        assert_same_task_outputs(name, got, expected, batch, atol=1e-5)
    expected_buckets = {(4, 3, 16), (2, 3, 8), (2, 2, 8)} if name == "BertForMultipleChoice" else {(4, 16), (2, 8)}
    assert set(runner.stats()["captures"]) == expected_buckets and runner.stats()["eager_calls"] == 0


def test_multiple_choice_inputs_must_be_three_dimensional(task_checkpoint):
    model = bertfast.BertForMultipleChoice.from_pretrained(task_checkpoint("BertForMultipleChoice"))
    runner = bertfast.optimize(model, batch_buckets=(2,), seq_buckets=(8,), capture=EmulatedCapture())
    with pytest.raises(ValueError, match=r"takes input_ids of shape \(batch, num_choices, sequence\), got \(2, 5\)"):
        runner(**padded_batch(TINY["vocab_size"], [5, 3]))


def test_bad_input_is_still_validated(graphed):
    _, runner, _ = graphed
    with pytest.raises(ValueError, match="input_ids has values"):
        runner(input_ids=torch.full((1, 4), TINY["vocab_size"]))


def test_configuration_errors(tiny_checkpoint):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(RuntimeError, match="CUDA graphs need the model on a CUDA device"):
        bertfast.optimize(model)
    with pytest.raises(ValueError, match="seq_buckets must be increasing"):
        bertfast.optimize(model, seq_buckets=(64, 32), capture=EmulatedCapture())
    with pytest.raises(ValueError, match="sequences of at most 64 tokens"):
        bertfast.optimize(model, seq_buckets=(32, 128), capture=EmulatedCapture())
    assert bertfast.optimize(model, cuda_graphs=False) is model
    with pytest.raises(TypeError, match="expects a bertfast model"):
        bertfast.optimize(torch.nn.Linear(2, 2))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_real_cuda_graphs_match_the_plain_model(base_checkpoint, dtype):
    model = bertfast.BertModel.from_pretrained(base_checkpoint, dtype=dtype, device="cuda")
    runner = bertfast.optimize(model, batch_buckets=(1, 8), seq_buckets=(64, 128))
    for lengths in ([128], [100, 64, 7], [128] * 8):
        batch = {k: v.cuda() for k, v in padded_batch(30522, lengths).items()}
        with torch.no_grad():
            expected = model(**batch).last_hidden_state
        got = runner(**batch).last_hidden_state
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(got[real].float(), expected[real].float(), atol=2e-2, rtol=0)
    stats = runner.stats()
    assert len(stats["captures"]) == 2 and stats["memory_bytes"] > 0


@needs_cuda
@pytest.mark.parametrize("name", TASK_CLASSES)
def test_real_cuda_graphs_of_task_models_match_the_plain_model(name, task_checkpoint):
    model = getattr(bertfast, name).from_pretrained(task_checkpoint(name), dtype=torch.float16, device="cuda")
    runner = bertfast.optimize(model, batch_buckets=(4,), seq_buckets=(16,))
    for lengths in ([13, 9, 4], [16, 1]):
        batch = {k: v.cuda() for k, v in task_batch(name, TINY["vocab_size"], lengths).items()}
        with torch.no_grad():
            expected = model(**batch)
        got = runner(**batch)
        assert_same_task_outputs(name, got, expected, batch, atol=2e-2)
    assert len(runner.stats()["captures"]) == 1 and runner.stats()["replays"] == 2


def test_validation_can_be_switched_off_for_trusted_inputs(tiny_checkpoint):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    runner = bertfast.optimize(model, batch_buckets=(2,), seq_buckets=(8,), capture=EmulatedCapture(),
                               validate=False)
    batch = padded_batch(TINY["vocab_size"], [8, 3])
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(runner(**batch).last_hidden_state[real], expected[real], atol=1e-5, rtol=0)
    with pytest.raises(IndexError):
        runner(input_ids=torch.full((1, 4), TINY["vocab_size"]))
