"""export_onnx and both Triton repository backends killed at every step boundary of their swaps: every reader
(OnnxModel, a Triton repository read as TritonServer reads it, from_pretrained on a copied checkpoint; one that
may rename, one that may not) then finds the old version or the new one whole, and the user's files stay."""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings

import onnx
import pytest
import torch

import bertfast
from bertfast.atomic import current_version, recover_directory, recover_entries
from bertfast.export.onnx import _write
from bertfast.export.onnx_model import OnnxModel
from bertfast.serving.repository import write_triton_repository
from tests.helpers import TINY, exported
from tests.kills import killed_after_each_step, read_only_renames

NEW_RANGE = 0.5  # the new export's initializer_range (the old one keeps the checkpoint's)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_checkpoint) -> dict[str, str]:
    """An old and a new next-sentence export of the same graph, told apart by their config's initializer_range."""
    source, report = exported(tmp_path_factory, tiny_checkpoint, "next-sentence")
    model = bertfast.BertForNextSentencePrediction.from_pretrained(tiny_checkpoint)
    model.config.initializer_range = NEW_RANGE
    new = str(tmp_path_factory.mktemp("new-export") / "export")
    _write(onnx.load(os.path.join(source, "model.onnx")), report, model, None, new)
    return {"old": source, "new": new, "report": report, "model": model}


def graph_version(path: str) -> str:
    """"old" or "new": the version of the graph OnnxModel loads from ``path`` (an export folder or a .onnx)."""
    return "new" if json.loads(OnnxModel(path).metadata["config"])["initializer_range"] == NEW_RANGE else "old"


def export_version(path: str) -> str:
    """The version of an export folder, its graph's metadata and its config.json agreeing."""
    config = json.load(open(os.path.join(current_version(path), "config.json")))["initializer_range"]
    version = graph_version(path)
    assert (config == NEW_RANGE) == (version == "new"), "the graph of one export beside the config of another"
    return version


def check_each_kill(target: str, write, reset, read, monkeypatch) -> list[str]:
    """The version ``read`` finds after each kill, by a reader that may not rename (the whole version where it
    lies) and one that may (it finishes the swap); then a writer's recovery leaves nothing else beside ``target``."""
    seen, killed = [], True
    for killed in killed_after_each_step(write, reset):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading an interrupted save warns (tests/test_atomic.py checks it)
            with monkeypatch.context() as m:
                read_only_renames(m)
                in_place = read()
            assert read() == in_place
            recover_directory(target)
        seen.append(in_place)
    assert not killed and seen[-1] == "new" and set(seen) == {"old", "new"}
    return seen


def test_a_killed_export_leaves_the_old_or_the_new_export(exports, tmp_path, monkeypatch):
    target = str(tmp_path / "work" / "export")
    old = shutil.copytree(exports["old"], tmp_path / "old")
    (old / "notes.txt").write_text("mine")
    (old / ".tmp-my-notes").mkdir()

    def reset():
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
        shutil.copytree(old, target)

    proto = onnx.load(os.path.join(exports["new"], "model.onnx"))
    check_each_kill(target, lambda: _write(proto, exports["report"], exports["model"], None, target), reset,
                    lambda: export_version(target), monkeypatch)
    assert os.listdir(tmp_path / "work") == ["export"] and open(os.path.join(target, "notes.txt")).read() == "mine"
    assert os.path.isdir(os.path.join(target, ".tmp-my-notes"))


def test_a_killed_onnxruntime_repository_write_leaves_the_old_or_the_new_model(exports, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    model_dir = str(repo / "nsp")
    old = tmp_path / "old-repo"
    write_triton_repository(exports["old"], old, name="nsp", kind="cpu", max_batch_size=8)

    def reset():
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(old, repo)

    def read():
        try:
            recover_entries(repo)  # what TritonServer.start runs before Triton reads the repository
        except PermissionError as e:  # one it may not write (Triton cannot read a model elsewhere): named
            assert "whole (new) version" in str(e) and not os.path.exists(model_dir)
        text = open(os.path.join(current_version(model_dir), "config.pbtxt")).read()
        batch = int(re.search(r"max_batch_size: (\d+)", text).group(1))
        version = graph_version(os.path.join(model_dir, "1", "model.onnx"))
        assert batch == {"old": 8, "new": 16}[version], "the config of one model beside the graph of another"
        return version

    check_each_kill(model_dir, lambda: write_triton_repository(exports["new"], repo, name="nsp", kind="cpu",
                                                                max_batch_size=16, overwrite=True),
                    reset, read, monkeypatch)
    assert os.listdir(repo) == ["nsp"]


def classifier_checkpoint(path, labels: dict[int, str]) -> str:
    """A tiny text-classification checkpoint with a vocabulary of its own."""
    bertfast.BertForSequenceClassification(bertfast.BertConfig(**TINY, id2label=labels)).save_pretrained(path)
    (path / "words.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    bertfast.BertTokenizer(str(path / "words.txt")).save_pretrained(path)
    return str(path)


def test_a_killed_python_repository_write_leaves_the_old_or_the_new_model(tmp_path, monkeypatch):
    torch.manual_seed(0)
    old_labels, new_labels = {0: "old-a", 1: "old-b"}, {0: "new-a", 1: "new-b", 2: "new-c"}
    old_checkpoint = classifier_checkpoint(tmp_path / "old-checkpoint", old_labels)
    new_checkpoint = classifier_checkpoint(tmp_path / "new-checkpoint", new_labels)
    repo, old = tmp_path / "repo", tmp_path / "old-repo"
    model_dir = str(repo / "classify")
    write_triton_repository(old_checkpoint, old, name="classify", backend="python", task="text-classification",
                            max_batch_size=8)

    def reset():
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(old, repo)

    def read():
        text = open(os.path.join(current_version(model_dir), "config.pbtxt")).read()
        batch = int(re.search(r"max_batch_size: (\d+)", text).group(1))
        labels = bertfast.BertForSequenceClassification.from_pretrained(
            os.path.join(model_dir, "1", "checkpoint")).config.id2label
        version = "new" if labels == new_labels else "old"
        assert labels == (new_labels if version == "new" else old_labels)
        assert batch == {"old": 8, "new": 16}[version], "the config of one model beside the checkpoint of another"
        return version

    check_each_kill(model_dir, lambda: write_triton_repository(new_checkpoint, repo, name="classify",
                                                                backend="python", task="text-classification",
                                                                max_batch_size=16, overwrite=True),
                    reset, read, monkeypatch)
    assert os.listdir(repo) == ["classify"]
