"""bertfast/pretrained.py: what every model class shares — random init, from_hf, parameter counts, and loading
(a checkpoint checked against the model's keys and shapes, then assigned: BertPreTrainedModel._load_state)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import bertfast
from bertfast.config import resolve_dtype
from tests.helpers import (HIDDEN_ATOL, LOGITS_ATOL, TINY, assert_close_real, assert_umask_modes, copy_config,
                           hf_pretraining_model, padded_batch)


def test_from_hf_converts_in_memory_models():
    hf = hf_pretraining_model(**TINY)
    bare = transformers.BertModel(hf.config, add_pooling_layer=False).eval()
    batch = padded_batch(TINY["vocab_size"], [7, 4])
    with torch.no_grad():
        assert_close_real(bertfast.BertForPreTraining.from_hf(hf)(**batch).prediction_logits,
                          hf(**batch).prediction_logits, batch, LOGITS_ATOL)
        converted = bertfast.BertModel.from_hf(bare)
        assert converted.pooler is None
        out = converted(**batch)
        assert out.pooler_output is None
        assert_close_real(out.last_hidden_state, bare(**batch).last_hidden_state, batch, HIDDEN_ATOL)


def test_num_parameters_of_bert_base():
    with torch.device("meta"):
        assert bertfast.BertModel(bertfast.BertConfig()).num_parameters() == 109_482_240
        pretraining = bertfast.BertForPreTraining(bertfast.BertConfig())
    with torch.device("meta"):
        hf = transformers.BertForPreTraining(transformers.BertConfig())
    assert pretraining.num_parameters() == hf.num_parameters()
    assert pretraining.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True)


def test_random_init_is_deterministic_and_scaled():
    config = bertfast.BertConfig.from_preset("tiny")
    torch.manual_seed(3)
    first = bertfast.BertForPreTraining(config)
    torch.manual_seed(3)
    second = bertfast.BertForPreTraining(config)
    weight = first.bert.encoder.layer[0].intermediate.dense.weight
    assert torch.equal(weight, second.bert.encoder.layer[0].intermediate.dense.weight)
    assert abs(weight.std().item() - config.initializer_range) < 0.002
    assert torch.equal(first.cls.predictions.bias, torch.zeros(config.vocab_size))
    assert torch.equal(first.bert.embeddings.word_embeddings.weight[config.pad_token_id], torch.zeros(128))


# Loading: checking a checkpoint against the model and assigning it (BertPreTrainedModel._load_state).

@pytest.mark.parametrize("cls", [bertfast.BertModel, bertfast.BertForMaskedLM, bertfast.BertForNextSentencePrediction,
                                 bertfast.BertForPreTraining], ids=lambda c: c.__name__)
def test_base_model_prefix_names_the_encoder_attribute(cls):
    """The class attribute that tells loading whether keys nest under "bert." matches the model's structure."""
    with torch.device("meta"):
        model = cls(bertfast.BertConfig(**TINY))
    prefix = cls.base_model_prefix
    encoder = getattr(model, prefix) if prefix else model
    assert type(encoder) is bertfast.BertModel
    if prefix:
        assert all(key.startswith((f"{prefix}.", "cls.")) for key in model.state_dict())


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


@pytest.mark.parametrize("cls, ignored", [(bertfast.BertModel, "'cls.predictions.bias'"),
                                          (bertfast.BertForMaskedLM, "'bert.pooler.dense.bias'"),
                                          (bertfast.BertForNextSentencePrediction, "'cls.predictions.bias'")],
                         ids=["BertModel", "BertForMaskedLM", "BertForNextSentencePrediction"])
def test_parts_an_architecture_lacks_are_ignored_with_an_info_message(cls, ignored, tiny_checkpoint, caplog):
    """A BertForPreTraining checkpoint loads into every class without a warning; the unused parts are logged."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="bertfast.pretrained"):
            cls.from_pretrained(tiny_checkpoint)
    assert f"{cls.__name__}: ignoring checkpoint weights of parts it does not have" in caplog.text
    assert ignored in caplog.text


def test_config_and_weight_shapes_that_disagree(tiny_checkpoint, tmp_path):
    shutil.copy(os.path.join(tiny_checkpoint, "model.safetensors"), tmp_path)
    config = json.load(open(os.path.join(tiny_checkpoint, "config.json")))
    config["intermediate_size"] = 40
    json.dump(config, open(tmp_path / "config.json", "w"))
    with pytest.raises(bertfast.CheckpointError, match=r"intermediate.dense.weight: checkpoint \(37, 32\) vs "
                                                       r"model \(40, 32\)"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_a_shape_error_names_the_key_as_the_checkpoint_spells_it(tiny_checkpoint, tmp_path):
    """The MLM bias saved as cls.predictions.decoder.bias, with a wrong size: the message names that key."""
    copy_config(tiny_checkpoint, tmp_path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    state["cls.predictions.decoder.bias"] = torch.zeros(TINY["vocab_size"] + 1)
    del state["cls.predictions.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(bertfast.CheckpointError, match=r"cls\.predictions\.decoder\.bias: checkpoint \(100,\) vs "
                                                       r"model \(99,\)"):
        bertfast.BertForMaskedLM.from_pretrained(tmp_path)


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


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "BertForQuestionAnswering"])
def test_a_task_checkpoint_loads_into_the_encoder_with_its_head_logged(name, task_checkpoint, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="bertfast.pretrained"):
            bertfast.BertModel.from_pretrained(task_checkpoint(name))
    head = "classifier" if name == "BertForSequenceClassification" else "qa_outputs"
    assert "BertModel: ignoring checkpoint weights of parts it does not have" in caplog.text and head in caplog.text


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")


@pytest.mark.parametrize("device, message", [
    ("banana", "'banana' is not a device name: use 'cpu' or 'cuda'"), ("mps", "'mps' is not supported"),
    pytest.param("cuda", "CUDA is not available on this machine; use --device cpu", marks=NO_CUDA),
    pytest.param("cuda:7", "CUDA is not available on this machine", marks=NO_CUDA),
])
def test_a_device_this_machine_lacks_is_named_never_a_corrupt_checkpoint(device, message, tiny_checkpoint):
    with pytest.raises(ValueError, match=message) as caught:
        bertfast.BertModel.from_pretrained(tiny_checkpoint, device=device)
    assert not isinstance(caught.value, bertfast.CheckpointError)


def test_a_failed_save_leaves_the_old_files_whole(tiny_checkpoint, tmp_path, monkeypatch):
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    model.save_pretrained(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def save_fails(state, path, metadata=None):
        open(path, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", save_fails)
    model.config.initializer_range = 0.5  # a new config.json that must not land beside the old weights
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True, ids=["022", "027"])
def test_a_saved_model_and_tokenizer_get_the_umask_modes(tiny_checkpoint, tokenizer, tmp_path, umask):
    """What a plain open() / mkdir() gives (0644 / 0755 under umask 022; safetensors alone writes 0600), so a server
    running as another user can read the model."""
    out = tmp_path / "model"
    bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint).save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                       "vocab.txt"]
    assert_umask_modes(out, umask)
