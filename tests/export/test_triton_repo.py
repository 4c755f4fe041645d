"""Triton Inference Server repositories for the task exports: config.pbtxt parsed with Triton's own schema."""
from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import bertfast
from bertfast.export.onnx_model import INPUT_NAMES
from tests.helpers import exported

# task -> (class, input dims and output dims after the implicit batch axis; -1 = dynamic); 3 labels
TASKS = {
    "text-classification": ("BertForSequenceClassification", [-1], {"logits": [3]}),
    "token-classification": ("BertForTokenClassification", [-1], {"logits": [-1, 3]}),
    "question-answering": ("BertForQuestionAnswering", [-1], {"start_logits": [-1], "end_logits": [-1]}),
    "multiple-choice": ("BertForMultipleChoice", [-1, -1], {"logits": [-1]}),
}


@pytest.mark.parametrize("task", TASKS)
def test_task_repositories_give_each_output_its_dims(task, tmp_path_factory, tmp_path, task_checkpoint):
    name, input_dims, outputs = TASKS[task]
    out, _ = exported(tmp_path_factory, task_checkpoint(name), task)
    model_dir = bertfast.write_triton_repository(out, tmp_path / "repo", name="bert", kind="cpu")
    text = (tmp_path / "repo" / "bert" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert model_dir == str(tmp_path / "repo" / "bert") and config.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (n, model_config_pb2.TYPE_INT64, input_dims) for n in INPUT_NAMES]
    assert {o.name: list(o.dims) for o in config.output} == outputs
    assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in config.output)
    assert bertfast.OnnxModel(tmp_path / "repo" / "bert" / "1" / "model.onnx").task == task
