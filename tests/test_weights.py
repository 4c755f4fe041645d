"""Checkpoint formats, key renaming, hub resolution and the errors of the loader."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import bertfast
from bertfast.config import resolve_dtype
from tests.helpers import TINY, hf_pretraining_model, padded_batch

MODEL_CLASSES = [bertfast.BertModel, bertfast.BertForMaskedLM, bertfast.BertForNextSentencePrediction,
                 bertfast.BertForPreTraining]


def copy_config(source: str, target) -> None:
    os.makedirs(target, exist_ok=True)
    shutil.copy(os.path.join(source, "config.json"), target)


def hidden(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else next(iter(out.to_tuple()))


@pytest.fixture(scope="module")
def legacy_checkpoint(tmp_path_factory, tiny_checkpoint) -> str:
    """The key layout of the original bert-base-uncased pytorch_model.bin: LayerNorm gamma/beta, an explicit
    (tied) decoder weight, a position_ids buffer."""
    path = tmp_path_factory.mktemp("legacy")
    copy_config(tiny_checkpoint, path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    legacy["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    torch.save(legacy, os.path.join(path, "pytorch_model.bin"))
    return str(path)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_legacy_gamma_beta_bin_matches_safetensors(cls, legacy_checkpoint, tiny_checkpoint):
    batch = padded_batch(TINY["vocab_size"], [9, 4])
    expected = hidden(cls.from_pretrained(tiny_checkpoint), batch)
    torch.testing.assert_close(hidden(cls.from_pretrained(legacy_checkpoint), batch), expected, atol=0, rtol=0)


def test_sharded_safetensors(tiny_checkpoint, tmp_path):
    hf = transformers.BertForPreTraining.from_pretrained(tiny_checkpoint)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    batch = padded_batch(TINY["vocab_size"], [6, 6])
    torch.testing.assert_close(hidden(bertfast.BertForPreTraining.from_pretrained(tmp_path), batch),
                               hidden(bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint), batch))


def test_bare_encoder_checkpoint_loads_as_bert_model_but_heads_are_an_error(tiny_checkpoint, tmp_path):
    transformers.BertModel.from_pretrained(tiny_checkpoint, add_pooling_layer=False).save_pretrained(tmp_path)
    model = bertfast.BertModel.from_pretrained(tmp_path)
    assert model.pooler is None
    with pytest.raises(bertfast.CheckpointError, match=r"lacks .*cls\.predictions\.bias.*allow_missing_weights"):
        bertfast.BertForPreTraining.from_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="initialised .* randomly"):
        model = bertfast.BertForPreTraining.from_pretrained(tmp_path, allow_missing_weights=True)
    head = model.cls.seq_relationship.weight
    assert not head.is_meta and 0 < head.std() < 0.1
    assert torch.isfinite(model(**padded_batch(TINY["vocab_size"], [5])).prediction_logits).all()


def test_a_weight_missing_beside_loaded_ones_keeps_the_loaded_ones(tiny_checkpoint, tmp_path):
    """allow_missing_weights initialises a module whose weight is missing; its other, loaded weights stay."""
    copy_config(tiny_checkpoint, tmp_path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    name = "bert.encoder.layer.0.output.LayerNorm"
    state[f"{name}.weight"] = torch.full_like(state[f"{name}.weight"], 0.5)
    del state[f"{name}.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match=r"initialised 1 weights .*LayerNorm\.bias"):
        model = bertfast.BertForPreTraining.from_pretrained(tmp_path, allow_missing_weights=True)
    layer_norm = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.all(layer_norm.weight == 0.5) and torch.all(layer_norm.bias == 0)


def test_unexpected_keys_are_reported(tiny_checkpoint, tmp_path):
    copy_config(tiny_checkpoint, tmp_path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    state["bert.encoder.layer.0.adapter.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match=r"not used: \['bert.encoder.layer.0.adapter.weight'\]"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_config_and_weight_shapes_that_disagree(tiny_checkpoint, tmp_path):
    shutil.copy(os.path.join(tiny_checkpoint, "model.safetensors"), tmp_path)
    config = json.load(open(os.path.join(tiny_checkpoint, "config.json")))
    config["intermediate_size"] = 40
    json.dump(config, open(tmp_path / "config.json", "w"))
    with pytest.raises(bertfast.CheckpointError, match=r"intermediate.dense.weight: checkpoint \(37, 32\) vs "
                                                       r"model \(40, 32\)"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_truncated_safetensors_is_a_clear_error(tiny_checkpoint, tmp_path):
    copy_config(tiny_checkpoint, tmp_path)
    data = open(os.path.join(tiny_checkpoint, "model.safetensors"), "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(bertfast.CheckpointError, match="cannot read checkpoint file .*corrupt"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_missing_files_are_clear_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        bertfast.BertModel.from_pretrained(str(tmp_path / "nope"))
    copy_config(tiny_checkpoint, tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights found .*model.safetensors"):
        bertfast.BertModel.from_pretrained(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_from_pretrained_never_initialises_random_weights(tiny_checkpoint, monkeypatch):
    """The model is built on the meta device: no random-init kernel ever touches real memory."""
    touched = []

    def guard(original):
        def wrapper(tensor, *args, **kwargs):
            if not tensor.is_meta:
                touched.append(tuple(tensor.shape))
            return original(tensor, *args, **kwargs)
        return wrapper

    for name in ("normal_", "uniform_", "kaiming_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, guard(getattr(torch.nn.init, name)))
    for name in ("normal_", "uniform_"):
        monkeypatch.setattr(torch.Tensor, name, guard(getattr(torch.Tensor, name)))
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    assert touched == []
    assert all(not p.is_meta for p in model.parameters())
    bertfast.BertModel(bertfast.BertConfig.from_preset("tiny"))
    assert touched, "the guard must see the random init of a model built without a checkpoint"


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16", "bf16"])
def test_dtype_argument(tiny_checkpoint, dtype):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint, dtype=dtype)
    assert model.dtype == resolve_dtype(dtype) and model.dtype != torch.float32


def test_unknown_dtype_name():
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        resolve_dtype("float8")


def run_offline(code: str, cache: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache, HF_HOME=cache)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(bertfast.__file__)), timeout=120)


def test_hub_id_resolved_from_the_hf_cache_offline(tiny_checkpoint, tmp_path):
    snapshot = tmp_path / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_checkpoint, snapshot)
    (tmp_path / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-bert" / "refs" / "main").write_text("a" * 40)
    result = run_offline("""
        import bertfast
        model = bertfast.BertForPreTraining.from_pretrained("acme/tiny-bert")
        print(model.config.hidden_size, model.num_parameters())
    """, str(tmp_path))
    assert result.returncode == 0, result.stderr
    expected = hf_pretraining_model(**TINY).num_parameters()
    assert result.stdout.split() == [str(TINY["hidden_size"]), str(expected)]


def test_hub_id_offline_and_not_cached_says_how_to_pass_a_directory(tmp_path):
    result = run_offline("""
        import bertfast
        bertfast.BertModel.from_pretrained("bert-base-uncased")
    """, str(tmp_path))
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr
    assert "pass a local directory holding config.json" in result.stderr
