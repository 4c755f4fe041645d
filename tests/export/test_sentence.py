"""Exports of sentence-transformers folders (bertfast.export.sentence): which files travel, what is refused before
anything is traced, and what an overwrite leaves. The pipelines' results on such exports are checked against the
torch pipelines in tests/pipelines (test_feature_extraction.py, test_sparse_embedding.py)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import bertfast
from bertfast.export import onnx as onnx_export
from bertfast.export.onnx import export_onnx
from tests.helpers import st_folder


def edit_modules(folder: str, edit) -> None:
    path = os.path.join(folder, "modules.json")
    with open(path, encoding="utf-8") as f:
        modules = json.load(f)
    edit(modules)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(modules, f)


@pytest.fixture
def no_trace(monkeypatch):
    """Tracing fails the test: a refusal must come before the slow part of an export."""
    def trace(*args, **kwargs):
        raise AssertionError("the export was traced")

    monkeypatch.setattr(onnx_export, "_trace", trace)


def test_a_module_the_pipelines_cannot_run_is_refused_before_tracing(tmp_path, tiny_vocab_checkpoint, no_trace):
    folder = st_folder(tmp_path / "st", tiny_vocab_checkpoint, "mean", normalize=True)
    edit_modules(folder, lambda modules: modules[2].update(
        type="sentence_transformers.sentence_transformer.modules.LayerNorm"))
    with pytest.raises(ValueError, match=r"modules.json lists \['Transformer', 'Pooling', 'LayerNorm'\].*An export "
                                         r"carries .* export a copy of the checkpoint without modules.json"):
        export_onnx(folder, tmp_path / "out", task="feature-extraction")
    with pytest.raises(ValueError, match="export a copy of the checkpoint without modules.json"):
        export_onnx(folder, tmp_path / "out", task="fill-mask")  # the task sparse-embedding runs on
    assert not (tmp_path / "out").exists()


def test_a_module_folder_outside_the_model_folder_is_refused(tmp_path, tiny_vocab_checkpoint, no_trace):
    folder = st_folder(tmp_path / "st", tiny_vocab_checkpoint, "mean", normalize=True)
    edit_modules(folder, lambda modules: modules[2].update(path="../outside"))
    with pytest.raises(ValueError, match="outside the model folder"):
        export_onnx(folder, tmp_path / "out", task="feature-extraction")
    assert not (tmp_path / "out").exists()


def test_an_overwrite_drops_the_previous_sentence_files_and_keeps_the_users(tmp_path, tiny_vocab_checkpoint):
    folder = st_folder(tmp_path / "st", tiny_vocab_checkpoint, "cls", dense=True, normalize=True)
    out = tmp_path / "out"
    report = export_onnx(folder, out, task="feature-extraction")
    assert report.sentence_files == ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                                     "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors",
                                     "3_Normalize/config.json"]
    assert "sentence-transformers configuration carried: modules.json, " in report.summary()
    assert bertfast.pipeline("sentence-embedding", model=out, backend="onnxruntime")("a text").shape == (24,)
    (out / "notes.txt").write_text("mine")
    plain = export_onnx(tiny_vocab_checkpoint, out, task="feature-extraction", overwrite=True)
    assert plain.sentence_files == [] and "sentence-transformers" not in plain.summary()
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx", "notes.txt", "special_tokens_map.json",
                                       "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    embed = bertfast.pipeline("sentence-embedding", model=out, backend="onnxruntime")
    assert embed.sentence_config.pooling == ("mean",) and not embed.sentence_config.normalize  # a plain checkpoint's


def test_tasks_the_embedding_pipelines_do_not_run_on_carry_no_sentence_files(tmp_path, task_checkpoint):
    folder = shutil.copytree(task_checkpoint("BertForSequenceClassification"), tmp_path / "classifier")
    (folder / "modules.json").write_text('[{"idx": 0, "path": "", "type": "sentence_transformers.models.Router"}]')
    report = export_onnx(folder, tmp_path / "out", task="text-classification")
    assert report.sentence_files == [] and "modules.json" not in os.listdir(tmp_path / "out")
