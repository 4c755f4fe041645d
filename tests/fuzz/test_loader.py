"""Fuzz: random corruptions of config.json, shard indexes, safetensors and .bin files through from_pretrained.
Each load either works or raises a ValueError (CheckpointError is one) that names the file; never another
exception type, never a hang."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.torch import load_file

import bertfast
from tests.helpers import fuzz

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=3), max_leaves=6)
CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
                 "pad_token_id", "tie_word_embeddings", "model_type", "architectures", "is_decoder")
SHARD_NAMES = st.sampled_from(["../model.safetensors", "/etc/passwd", "model.safetensors", "sub/../../x", "",
                               "C:\\\\x.bin", "pytorch_model.bin", "nul\x00byte", "missing.safetensors", "."])


@pytest.fixture(scope="module")
def source(tiny_checkpoint, tmp_path_factory) -> dict[str, bytes]:
    """The files of a valid checkpoint in each weight format, as bytes."""
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    bin_path = tmp_path_factory.mktemp("bin") / "pytorch_model.bin"
    torch.save(state, bin_path)
    keys = sorted(state)
    index = {"metadata": {}, "weight_map": {k: f"model-0000{1 + i % 2}-of-00002.safetensors"
                                            for i, k in enumerate(keys)}}
    from safetensors.torch import save

    return {"config.json": open(os.path.join(tiny_checkpoint, "config.json"), "rb").read(),
            "model.safetensors": open(os.path.join(tiny_checkpoint, "model.safetensors"), "rb").read(),
            "pytorch_model.bin": bin_path.read_bytes(),
            "model.safetensors.index.json": json.dumps(index).encode(),
            **{f"model-0000{n}-of-00002.safetensors": save({k: state[k] for k in keys[n - 1::2]}) for n in (1, 2)}}


LAYOUTS = {"safetensors": ("config.json", "model.safetensors"), "bin": ("config.json", "pytorch_model.bin"),
           "sharded": ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                       "model-00002-of-00002.safetensors")}
# One damage, small enough to read in a failure report: (what, where in [0, 1), bytes or JSON value).
BYTES_DAMAGE = st.tuples(st.sampled_from(["truncate", "overwrite", "insert", "header_length"]),
                         st.floats(0, 1, exclude_max=True) | st.sampled_from([0.0, 0.001, 0.01]),
                         st.binary(min_size=1, max_size=16) | st.integers(0, 2 ** 64 - 1))
JSON_DAMAGE = st.tuples(st.just("json_value"), st.just(0.0), JSON) | st.tuples(
    st.just("json_field"), st.sampled_from(CONFIG_FIELDS), SHARD_NAMES | JSON)
PLANS = st.sampled_from(sorted(LAYOUTS)).flatmap(lambda layout: st.tuples(st.just(layout), st.lists(
    st.tuples(st.sampled_from(LAYOUTS[layout]), BYTES_DAMAGE | JSON_DAMAGE), min_size=1, max_size=2)))


def damage_bytes(data: bytes, kind: str, where: float, value: bytes | int) -> bytes:
    position = int(where * len(data))
    if kind == "truncate":
        return data[:position]
    if kind == "header_length":
        return struct.pack("<Q", value if isinstance(value, int) else len(value)) + data[8:]
    chunk = value if isinstance(value, bytes) else value.to_bytes(8, "little")
    return data[:position] + chunk + data[position + (len(chunk) if kind == "overwrite" else 0):]


def damage_json(data: bytes, kind: str, field: str, value: object) -> bytes:
    if kind == "json_value":
        return json.dumps(value).encode()
    try:
        content = json.loads(data)
    except ValueError:  # damaged before: start again from an object
        content = {}
    if isinstance(content, dict) and isinstance(content.get("weight_map"), dict) and content["weight_map"]:
        content["weight_map"][sorted(content["weight_map"])[0]] = value  # a shard name, or anything
    elif isinstance(content, dict):
        content[field] = value
    return json.dumps(content).encode()


def apply(source: dict[str, bytes], plan) -> dict[str, bytes]:
    layout, damages = plan
    files = {name: source[name] for name in LAYOUTS[layout]}
    for target, (kind, where, value) in damages:
        if kind.startswith("json"):
            files[target] = damage_json(files[target], kind, where, value)
        else:
            files[target] = damage_bytes(files[target], kind, where, value)
    return files


@fuzz(120)
@given(plan=PLANS)
@example(plan=("bin", [("pytorch_model.bin", ("truncate", 0.5, b"\x00"))]))  # torch.load raised OSError(EINVAL)
def test_a_damaged_checkpoint_loads_or_raises_a_value_error(source, plan):
    files = apply(source, plan)
    folder = tempfile.mkdtemp()
    try:
        for name, content in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unused weights are reported with a warning
            try:
                bertfast.BertForPreTraining.from_pretrained(folder)
            except ValueError as e:  # CheckpointError, config and index errors, JSON and UTF-8 errors
                assert folder in str(e) or "config." in str(e) or "checkpoint" in str(e), e
    finally:
        shutil.rmtree(folder)
