"""The checkpoints of pretrain and the output folder of finetune, killed at every step boundary of their saves
(the model's and the tokenizer's swaps inside the folder's own): --resume and from_pretrained then find the old
checkpoint or the new one whole, and a reader that may not rename is told where the whole checkpoint lies."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file

import bertfast
from bertfast.atomic import current_version, recover_directory
from bertfast.checkpoint import CheckpointError
from bertfast.training.checkpoints import load_trainer_state, read_manifest, verify_checkpoint
from bertfast.training.finetune import FinetuneArguments, finetune
from bertfast.training.pretraining import DEMO_CORPUS, read_documents, tokenize_documents
from bertfast.training.trainer import PretrainingArguments, Trainer
from tests.helpers import PRETRAIN_QUICK
from tests.kills import killed_after_each_step, read_only_renames


def tiny(tokenizer: bertfast.BertTokenizer) -> bertfast.BertConfig:
    return bertfast.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37, max_position_embeddings=64)


def resume_reads(out: str) -> int:
    """The step of the checkpoint --resume finds at ``out`` (manifest, state and weights of that one step); where it
    may not finish a save left mid-swap, the one it names (``--resume PATH``) is read instead."""
    try:
        manifest = read_manifest(out)
    except CheckpointError as e:
        assert "stopped between its renames" in str(e) and not os.path.exists(out)
        out = re.search(r"--resume (\S+)\)", str(e)).group(1)
        manifest = read_manifest(out)
    verify_checkpoint(out, manifest)
    state = load_trainer_state(out, manifest)
    weights = load_file(os.path.join(out, "model.safetensors"))
    assert state["step"] == manifest["step"] and all(bool((w == manifest["step"]).all()) for w in weights.values())
    return manifest["step"]


def test_a_killed_pretraining_checkpoint_save_leaves_the_old_or_the_new_checkpoint(tmp_path, small_vocab,
                                                                                 monkeypatch):
    tokenizer = bertfast.BertTokenizer(small_vocab)
    trainer = Trainer(bertfast.BertForPreTraining(tiny(tokenizer)), tokenizer,
                      tokenize_documents(read_documents(DEMO_CORPUS), tokenizer),
                      PretrainingArguments(steps=10, **{**PRETRAIN_QUICK, "device": "cpu"}))
    out, old = str(tmp_path / "run" / "ckpt"), str(tmp_path / "old")

    def save_at(step: int, directory: str) -> None:
        trainer.step = step
        with torch.no_grad():
            for parameter in trainer.model.parameters():
                parameter.fill_(step)
        trainer.save(directory)

    save_at(1, old)

    def reset():
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        shutil.copytree(old, out)

    seen = []
    for killed in killed_after_each_step(lambda: save_at(2, out), reset):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading an interrupted save warns (tests/test_atomic.py checks it)
            with monkeypatch.context() as m:
                read_only_renames(m)
                in_place = resume_reads(out)
            assert resume_reads(out) == in_place
            assert bertfast.BertForPreTraining.from_pretrained(out).config.vocab_size == len(tokenizer)
            recover_directory(out)
        seen.append(in_place)
        assert os.listdir(tmp_path / "run") == ["ckpt"]
    assert not killed and seen[-1] == 2 and set(seen) == {1, 2}


def write_rows(path, labels: list[str]) -> str:
    words = ["good", "bad", "fine"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows({"text": f"it was {words[i % len(labels)]}", "label": labels[i % len(labels)]}
                         for i in range(8))
    return str(path)


@pytest.fixture
def base_model(tmp_path, small_vocab) -> str:
    tokenizer = bertfast.BertTokenizer(small_vocab)
    path = tmp_path / "base"
    bertfast.BertForPreTraining(tiny(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    for key in ("id2label", "label2id"):  # a base model: the labels are the fine-tuning's
        config.pop(key, None)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def finetuned_version(out: str) -> str:
    """"old" (3 labels, 2 epochs of results) or "new" (2 labels, 1 epoch): config, head and results agreeing."""
    model = bertfast.BertForSequenceClassification.from_pretrained(out)  # a mix of label counts would not load
    with open(os.path.join(current_version(out), "finetune_results.json")) as f:
        epochs = len(json.load(f)["epochs"])
    version = "old" if len(model.config.id2label) == 3 else "new"
    assert epochs == {"old": 2, "new": 1}[version], "the results of one run beside the model of another"
    return version


@pytest.mark.filterwarnings("ignore:.*the checkpoint has no task head")
def test_a_killed_finetune_save_leaves_the_old_or_the_new_model(tmp_path, base_model, monkeypatch):
    arguments = dict(batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, device="cpu", progress=False)
    old = str(tmp_path / "old")
    three = write_rows(tmp_path / "three.csv", ["a", "b", "c"])
    finetune(base_model, three, three, old, FinetuneArguments(epochs=2, **arguments))
    two = write_rows(tmp_path / "two.csv", ["x", "y"])
    out = str(tmp_path / "run" / "clf")

    def reset():
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        shutil.copytree(old, out)

    def write():
        finetune(base_model, two, two, out, FinetuneArguments(epochs=1, **arguments), overwrite=True)

    seen = []
    for killed in killed_after_each_step(write, reset):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with monkeypatch.context() as m:
                read_only_renames(m)
                in_place = finetuned_version(out)
            assert finetuned_version(out) == in_place
            recover_directory(out)
        seen.append(in_place)
        assert os.listdir(tmp_path / "run") == ["clf"]
    assert not killed and seen[-1] == "new" and set(seen) == {"old", "new"}
