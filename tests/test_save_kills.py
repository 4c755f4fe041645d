"""save_pretrained and the tokenizer's save into a folder of the user's, killed at every step boundary: every
reader (one that may rename, one that may not) then finds the old model or the new one whole, never the new
config with the old weights, and the user's entries (a ``.tmp-*`` folder among them) are never touched."""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import torch

import bertfast
from bertfast.atomic import recover_directory
from bertfast.hub import resolve_file
from tests.helpers import TINY
from tests.kills import killed_after_each_step, read_only_renames

OLD_LABELS = {0: "old-negative", 1: "old-positive"}
NEW_LABELS = {0: "new-a", 1: "new-b", 2: "new-c"}  # another label count: a mix would not even load
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
USER_ENTRIES = {"notes.txt": "mine", os.path.join(".tmp-my-notes", "important.txt"): "keep me"}
SIBLINGS = {os.path.join("model.old-backup", "x.txt"): "a backup", os.path.join(".model.bertfast-mine", "y"): "no marker"}


def classifier(labels: dict[int, str], value: float) -> bertfast.BertForSequenceClassification:
    model = bertfast.BertForSequenceClassification(bertfast.BertConfig(**TINY, id2label=labels))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)
    return model


def tokenizer(path, words: list[str]) -> bertfast.BertTokenizer:
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return bertfast.BertTokenizer(str(path))


def write_entries(root, entries: dict[str, str]) -> None:
    for name, text in entries.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            f.write(text)


def read_entries(root, entries: dict[str, str]) -> dict[str, str]:
    return {name: open(os.path.join(root, name)).read() for name in entries}


def fingerprint(target: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """SHA-256 of each file as a reader resolves it (bertfast.hub: the whole version of a folder left mid-swap)."""
    return tuple(hashlib.sha256(open(resolve_file(target, name), "rb").read()).hexdigest() for name in names)


def read_version(target: str, versions: dict) -> tuple[str, str]:
    """(model version, tokenizer version) a reader finds: each group of files old or new whole, and the model
    loads with the labels of its weights."""
    model_version = versions["model"].get(fingerprint(target, MODEL_FILES))
    tokenizer_version = versions["tokenizer"].get(fingerprint(target, TOKENIZER_FILES))
    assert model_version and tokenizer_version, "a mix of two saves"
    labels = bertfast.BertForSequenceClassification.from_pretrained(target).config.id2label
    assert labels == (OLD_LABELS if model_version == "old" else NEW_LABELS)
    assert len(bertfast.BertTokenizer.from_pretrained(target)) == (8 if tokenizer_version == "old" else 9)
    return model_version, tokenizer_version


def test_a_killed_save_pretrained_leaves_the_old_or_the_new_model_for_every_reader(tmp_path, monkeypatch):
    old_model, new_model = classifier(OLD_LABELS, 1.0), classifier(NEW_LABELS, 2.0)
    old_tokenizer = tokenizer(tmp_path / "old-vocab.txt", ["a", "b", "c"])
    new_tokenizer = tokenizer(tmp_path / "new-vocab.txt", ["x", "y", "z", "w"])
    versions = {"model": {}, "tokenizer": {}}
    for version, model, tok in (("new", new_model, new_tokenizer), ("old", old_model, old_tokenizer)):
        model.save_pretrained(tmp_path / version)
        tok.save_pretrained(tmp_path / version)
        versions["model"][fingerprint(str(tmp_path / version), MODEL_FILES)] = version
        versions["tokenizer"][fingerprint(str(tmp_path / version), TOKENIZER_FILES)] = version
    write_entries(tmp_path / "old", USER_ENTRIES)
    parent = tmp_path / "work"
    target = str(parent / "model")

    def reset() -> None:
        shutil.rmtree(parent, ignore_errors=True)
        shutil.copytree(tmp_path / "old", target)
        write_entries(parent, SIBLINGS)

    def save() -> None:
        new_model.save_pretrained(target)
        new_tokenizer.save_pretrained(target)

    seen, missing = set(), 0
    for killed in killed_after_each_step(save, reset):
        missing += not os.path.lexists(target)  # the kill fell between the two renames of a swap
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reading an interrupted save warns (tests/test_atomic.py checks it)
            with monkeypatch.context() as m:
                read_only_renames(m)
                in_place = read_version(target, versions)
            assert read_version(target, versions) == in_place  # the reader that may rename finishes the swap
            recover_directory(target)
        seen.add(in_place)
        assert read_entries(target, USER_ENTRIES) == USER_ENTRIES and read_entries(parent, SIBLINGS) == SIBLINGS
        assert sorted(os.listdir(parent)) == [".model.bertfast-mine", "model", "model.old-backup"]
    assert not killed and in_place == ("new", "new")
    assert seen == {("old", "old"), ("new", "old"), ("new", "new")} and missing >= 2
