"""OnnxModel (an export called like the torch model) and the pipelines on the onnxruntime backend."""
from __future__ import annotations

import dataclasses
import os

import onnx
import onnxruntime
import pytest
import torch

import bertfast
from bertfast.export.onnx_model import EXPORT_TASKS
from tests.helpers import TASK_CLASSES, needs_cuda, padded_batch, task_batch
from tests.helpers import exported

CUDA_EP = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
VOCAB = 30522  # tiny_vocab_checkpoint: the bert-base-uncased vocabulary
FILL = ["The capital of France is [MASK].", "I [MASK] to the store and bought some [MASK].", "[MASK]"]


def assert_same_output(ours, theirs, atol: float) -> None:
    assert type(ours) is type(theirs)
    for field in dataclasses.fields(theirs):
        expected = getattr(theirs, field.name)
        if expected is None:
            assert getattr(ours, field.name) is None, field.name
        else:
            torch.testing.assert_close(getattr(ours, field.name).cpu(), expected.cpu(), atol=atol, rtol=0)


def split_scores(result) -> tuple[list, torch.Tensor]:
    """A fill-mask result (nested lists of predictions) -> (the predictions without scores, all scores)."""
    if isinstance(result, dict):
        return [{k: v for k, v in result.items() if k != "score"}], torch.tensor([result["score"]])
    parts = [split_scores(r) for r in result]
    return [p for rest, _ in parts for p in rest], torch.cat([scores for _, scores in parts])


@pytest.mark.parametrize("task", sorted(EXPORT_TASKS))
def test_onnx_model_returns_what_the_torch_model_returns(tmp_path_factory, tiny_vocab_checkpoint, task_checkpoint,
                                                         task):
    """The pretraining tasks on a BertForPreTraining checkpoint, the task models on their own (with a head)."""
    name = EXPORT_TASKS[task].model_class.__name__
    source = task_checkpoint(name) if name in TASK_CLASSES else tiny_vocab_checkpoint
    out, report = exported(tmp_path_factory, source, task)
    model = bertfast.OnnxModel(out, provider="cpu")
    torch_model = EXPORT_TASKS[task].model_class.from_pretrained(source)
    assert (model.task, model.config, model.device, model.providers) == (
        task, torch_model.config, torch.device("cpu"), ["CPUExecutionProvider"])
    assert model.output_names == report.outputs
    for lengths in ([5], [7, 3], [12, 1, 9, 12]):
        batch = task_batch(name, torch_model.config.vocab_size, lengths)
        with torch.inference_mode():
            assert_same_output(model(**batch), torch_model(**batch), atol=1e-4)


def test_onnx_multiple_choice_checks_inputs_like_the_torch_model(tmp_path_factory, task_checkpoint):
    out, _ = exported(tmp_path_factory, task_checkpoint("BertForMultipleChoice"), "multiple-choice")
    model = bertfast.OnnxModel(out, provider="cpu")
    batch = task_batch("BertForMultipleChoice", 99, [6, 3], num_choices=2)
    with pytest.raises(ValueError, match=r"takes input_ids of shape \(batch, num_choices, sequence\), got \(2, 6\)"):
        model(batch["input_ids"][:, 0])
    with pytest.raises(ValueError, match=r"input_ids has values in \[.*\] but must be in \[0, 99\)"):
        model(batch["input_ids"] + 99)
    assert model(batch["input_ids"]).logits.shape == (2, 2)  # no mask: no padding, as in the torch model


def test_onnx_model_defaults_and_input_errors_match_the_torch_model(tmp_path_factory, tiny_vocab_checkpoint):
    out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "feature-extraction")
    model = bertfast.OnnxModel(out, provider="cpu")
    torch_model = bertfast.BertModel.from_pretrained(tiny_vocab_checkpoint)
    ids = torch.randint(1, VOCAB, (2, 6), dtype=torch.int32)
    with torch.inference_mode():
        assert_same_output(model(ids), torch_model(ids), atol=1e-5)  # no mask, no token types, int32 ids
    with pytest.raises(TypeError, match=r"takes only input_ids, attention_mask, token_type_ids; got \['output_hid"):
        model(ids, output_hidden_states=True)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\) but input_ids has shape \(2, 6\)"):
        model(ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"input_ids has values in \[.*\] but must be in \[0, 30522\)"):
        model(ids + VOCAB)
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor"):
        model(ids.tolist())


def test_onnx_model_construction_errors(tmp_path_factory, tmp_path, tiny_vocab_checkpoint):
    out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "feature-extraction")
    with pytest.raises(ValueError, match=r"provider must be one of \['cpu', 'cuda'\]"):
        bertfast.OnnxModel(out, provider="tpu")
    if CUDA_EP:
        assert bertfast.OnnxModel(out, provider="cuda").device.type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="pip install onnxruntime-gpu"):
            bertfast.OnnxModel(out, provider="cuda")
    with pytest.raises(FileNotFoundError, match="no ONNX model at .*export-onnx"):
        bertfast.OnnxModel(tmp_path)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="has no bertfast metadata"):
        bertfast.OnnxModel(tmp_path / "x.onnx")


def test_fill_mask_pipeline_on_onnxruntime_matches_torch(tmp_path_factory, tiny_vocab_checkpoint):
    out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "fill-mask")
    ours = bertfast.pipeline("fill-mask", model=out, backend="onnxruntime")
    assert isinstance(ours.model, bertfast.OnnxModel)
    reference = bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint)
    targets = ["paris", "london"]
    for got, expected in ((ours(FILL, top_k=5), reference(FILL, top_k=5)),
                          (ours(FILL[0], targets=targets), reference(FILL[0], targets=targets))):
        assert split_scores(got)[0] == split_scores(expected)[0]  # tokens, token_str, sequence: identical
        torch.testing.assert_close(split_scores(got)[1], split_scores(expected)[1], atol=1e-5, rtol=0)


def test_fp16_fill_mask_export_keeps_the_top_tokens(tmp_path_factory, tmp_path, tiny_vocab_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, report = exported(tmp_path_factory, tiny_vocab_checkpoint, "fill-mask", optimize=True, fp16=True)
    assert os.listdir(tmp_path) == []  # no debugging dumps of onnxruntime's tools in the working directory
    assert report.top_k["positions"] >= 1 + 7 + 33 + 64  # row 0 of each validation shape is all real tokens
    assert report.top_k["identical"] >= 0.9 * report.top_k["positions"]
    ours = bertfast.pipeline("fill-mask", model=out, backend="onnxruntime")(FILL[0], top_k=5)
    reference = bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint)(FILL[0], top_k=5)
    assert ours[0]["token"] == reference[0]["token"]
    torch.testing.assert_close(torch.tensor([p["score"] for p in ours]),
                               torch.tensor([p["score"] for p in reference]), atol=1e-3, rtol=0)


def test_onnxruntime_pipeline_errors(tmp_path_factory, tiny_vocab_checkpoint):
    out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "fill-mask")
    with pytest.raises(ValueError, match=r"is a 'fill-mask' export; the 'feature-extraction' pipeline needs an export "
                                         r"made with --task feature-extraction"):
        bertfast.pipeline("feature-extraction", model=out, backend="onnxruntime")
    with pytest.raises(ValueError, match="dtype was fixed at export time: export with --fp16"):
        bertfast.pipeline("fill-mask", model=out, backend="onnxruntime", dtype="float16")
    with pytest.raises(ValueError, match=r"unknown backend 'tensorrt'; available: \('torch', 'onnxruntime'\)"):
        bertfast.pipeline("fill-mask", model=out, backend="tensorrt")


@needs_cuda
@pytest.mark.skipif(not CUDA_EP, reason="needs onnxruntime-gpu (the CUDA execution provider)")
def test_cuda_execution_provider_with_io_binding(tmp_path_factory, tiny_vocab_checkpoint):
    for options, atol in (({}, 1e-4), ({"optimize": True, "fp16": True}, 1e-1)):
        out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "pretraining", **options)
        gpu, cpu = bertfast.OnnxModel(out, provider="cuda"), bertfast.OnnxModel(out, provider="cpu")
        assert gpu.device.type == "cuda" and gpu.providers[0] == "CUDAExecutionProvider"
        batch = padded_batch(VOCAB, [17, 5, 11])
        result = gpu(**{k: v.cuda() for k, v in batch.items()})
        assert result.prediction_logits.is_cuda
        assert_same_output(result, cpu(**batch), atol=atol)
