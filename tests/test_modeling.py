"""Model parity with transformers (fp32 eager, CPU): every output, on padded batches of mixed lengths."""
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
from tests.helpers import SENTENCES, TINY, copy_config, hf_pretraining_model, needs_cuda, padded_batch

HIDDEN_ATOL = 1e-5
LOGITS_ATOL = 1e-4


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def assert_close_real(actual: torch.Tensor, expected: torch.Tensor, batch: dict, atol: float) -> None:
    """(B, S, ...) outputs compared at real tokens: the padding-free path leaves zeros at padding positions."""
    real = batch["attention_mask"].bool()
    assert_close(actual[real], expected[real], atol)


def assert_all_close(actual, expected, atol: float) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e, atol)


def labels_for(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1:3] = batch["input_ids"][:, 1:3]
    return labels


def hf_load(cls, path: str):
    return cls.from_pretrained(path, attn_implementation="eager").eval()


@pytest.mark.parametrize("checkpoint", ["tiny_checkpoint", "base_checkpoint"])
def test_pretraining_every_output_matches_transformers(checkpoint, request):
    path = request.getfixturevalue(checkpoint)
    hf = hf_load(transformers.BertForPreTraining, path)
    ours = bertfast.BertForPreTraining.from_pretrained(path)
    batch = padded_batch(hf.config.vocab_size, [13, 9, 4])
    labels, nsp_labels = labels_for(batch), torch.tensor([0, 1, 1])
    with torch.no_grad():
        expected = hf(**batch, labels=labels, next_sentence_label=nsp_labels, output_hidden_states=True,
                      output_attentions=True)
        actual = ours(**batch, labels=labels, next_sentence_label=nsp_labels, output_hidden_states=True,
                      output_attentions=True)
    assert len(actual.hidden_states) == hf.config.num_hidden_layers + 1
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert_close_real(a, e, batch, HIDDEN_ATOL)
    assert_all_close(actual.attentions, expected.attentions, HIDDEN_ATOL)
    assert actual.attentions[0].shape == (3, hf.config.num_attention_heads, 13, 13)
    assert_close_real(actual.prediction_logits, expected.prediction_logits, batch, LOGITS_ATOL)
    assert_close(actual.seq_relationship_logits, expected.seq_relationship_logits, LOGITS_ATOL)
    assert_close(actual.loss, expected.loss, LOGITS_ATOL)


@pytest.mark.parametrize("padding_free", [True, False], ids=["padding_free", "padded"])
def test_fused_attention_path_matches_transformers_without_attention_output(tiny_checkpoint, padding_free):
    """Without output_attentions the model takes the fused attention (packed by default), not the eager one."""
    hf = hf_load(transformers.BertModel, tiny_checkpoint)
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    ours.padding_free = padding_free
    batch = padded_batch(TINY["vocab_size"], [17, 5, 1, 11])
    with torch.no_grad():
        expected, actual = hf(**batch, output_hidden_states=True), ours(**batch, output_hidden_states=True)
    assert_close(actual.pooler_output, expected.pooler_output, HIDDEN_ATOL)
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert_close_real(a, e, batch, HIDDEN_ATOL)
    padding = ~batch["attention_mask"].bool()
    assert all(torch.all(h[padding] == 0) for h in actual.hidden_states), "zeros at padding on every path"


def test_padding_anywhere_in_the_mask_matches_transformers(tiny_checkpoint):
    """A hole in the middle of a row and a left-padded row (which keeps the padded path for the pooler)."""
    hf = hf_load(transformers.BertModel, tiny_checkpoint)
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [12, 12])
    batch["attention_mask"][0, 4:7] = 0
    for rows in ([0], [0, 1]):
        if rows == [0, 1]:
            batch["attention_mask"][1, :3] = 0
        with torch.no_grad():
            expected, actual = hf(**batch), ours(**batch)
        assert_close_real(actual.last_hidden_state, expected.last_hidden_state, batch, HIDDEN_ATOL)
        assert_close(actual.pooler_output, expected.pooler_output, HIDDEN_ATOL)


@pytest.mark.parametrize("case", ["right_padding", "left_padding", "no_padding", "padding_free_off"])
def test_return_packed_hands_back_the_real_tokens(tiny_checkpoint, case):
    """return_packed=True: (T, H) real tokens in row-major order with cu_seqlens and max_seqlen, equal to
    transformers at those tokens; the pooler as without it. Left padding and padding_free=False pack the
    padded path's result; a batch without padding packs every token."""
    hf = hf_load(transformers.BertModel, tiny_checkpoint)
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    ours.padding_free = case != "padding_free_off"
    batch = padded_batch(TINY["vocab_size"], [9, 9, 9] if case == "no_padding" else [9, 4, 1])
    if case == "left_padding":
        batch = {name: value.flip(1) for name, value in batch.items()}
    with torch.no_grad():
        expected = hf(**batch, output_hidden_states=True)
        actual = ours(**batch, output_hidden_states=True, return_packed=True)
    real = batch["attention_mask"].bool()
    lengths = real.sum(dim=1)
    assert actual.cu_seqlens.dtype == torch.int32 and actual.max_seqlen == max(lengths.tolist())
    assert actual.cu_seqlens.tolist() == [0, *torch.cumsum(lengths, dim=0).tolist()]
    assert actual.last_hidden_state.shape == (sum(lengths.tolist()), TINY["hidden_size"])
    assert_close(actual.last_hidden_state, expected.last_hidden_state[real], HIDDEN_ATOL)
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert_close(a, e[real], HIDDEN_ATOL)
    assert_close(actual.pooler_output, expected.pooler_output, HIDDEN_ATOL)
    plain = ours(**batch)
    assert plain.cu_seqlens is None and plain.max_seqlen is None and "cu_seqlens" not in plain.keys()


def test_pretraining_loss_only_with_both_labels_as_transformers(tiny_checkpoint):
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [6, 6])
    assert model(**batch, labels=labels_for(batch)).loss is None
    assert model(**batch, next_sentence_label=torch.tensor([0, 1])).loss is None


def test_explicit_position_ids_match_transformers(tiny_checkpoint):
    hf = hf_load(transformers.BertModel, tiny_checkpoint)
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [8, 8])
    batch["position_ids"] = torch.stack([torch.arange(8), torch.arange(8).flip(0) + 3])
    with torch.no_grad():
        assert_close(ours(**batch).last_hidden_state, hf(**batch).last_hidden_state, HIDDEN_ATOL)


@pytest.mark.parametrize("variant", [{"hidden_act": "gelu_new"}, {"tie_word_embeddings": False}],
                         ids=["gelu_new", "untied_decoder"])
def test_config_variants_match_transformers(variant, tmp_path):
    hf = hf_pretraining_model(**TINY, **variant)
    if not variant.get("tie_word_embeddings", True):
        with torch.no_grad():
            hf.cls.predictions.decoder.weight.normal_()
    hf.save_pretrained(tmp_path)
    ours = bertfast.BertForPreTraining.from_pretrained(tmp_path)
    batch = padded_batch(TINY["vocab_size"], [10, 6])
    with torch.no_grad():
        assert_close_real(ours(**batch).prediction_logits, hf(**batch).prediction_logits, batch, LOGITS_ATOL)


def test_state_dict_has_transformers_keys_and_round_trips(tiny_checkpoint, tmp_path):
    hf = hf_load(transformers.BertForPreTraining, tiny_checkpoint)
    ours = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    hf_keys = set(hf.state_dict()) - {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(ours.state_dict()) == hf_keys
    ours.save_pretrained(tmp_path)
    reloaded_hf = hf_load(transformers.BertForPreTraining, str(tmp_path))
    reloaded = bertfast.BertForPreTraining.from_pretrained(tmp_path)
    batch = padded_batch(TINY["vocab_size"], [9, 3])
    with torch.no_grad():
        expected = hf(**batch).prediction_logits
        assert_close(reloaded_hf(**batch).prediction_logits, expected, LOGITS_ATOL)
        assert_close_real(reloaded(**batch).prediction_logits, expected, batch, LOGITS_ATOL)


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


def test_dropout_only_in_train_mode(tiny_checkpoint):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [8, 5])
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, model(**batch).last_hidden_state)
        model.train()
        first, second = model(**batch).last_hidden_state, model(**batch).last_hidden_state
    assert not torch.allclose(first, second)


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


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_on_gpu_within_twice_transformers_error(base_checkpoint, dtype):
    batch = {k: v.cuda() for k, v in padded_batch(30522, [128, 77, 31, 128]).items()}
    with torch.no_grad():
        reference = transformers.BertModel.from_pretrained(base_checkpoint).cuda().eval()(**batch).last_hidden_state
        hf_half = transformers.BertModel.from_pretrained(base_checkpoint, dtype=dtype).cuda().eval()(**batch)
        ours = bertfast.BertModel.from_pretrained(base_checkpoint, dtype=dtype, device="cuda")(**batch)
    real = batch["attention_mask"].bool()
    hf_error = (hf_half.last_hidden_state.float() - reference)[real].abs().max().item()
    our_error = (ours.last_hidden_state.float() - reference)[real].abs().max().item()
    assert our_error <= 2 * hf_error + 1e-3, (our_error, hf_error)


def test_minilm_real_checkpoint_matches_transformers(minilm_dir):
    """all-MiniLM-L6-v2: real weights, real sentences, and transformers' own tokenizer output as input."""
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    hf = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ours = bertfast.BertModel.from_pretrained(minilm_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0, "the batch must contain padding"
    with torch.no_grad():
        expected = hf(**batch, output_hidden_states=True, output_attentions=True)
        actual = ours(**batch, output_hidden_states=True, output_attentions=True)
    real = batch["attention_mask"].bool()
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(a[real], e[real], atol=1e-5, rtol=0)
    for a, e in zip(actual.attentions, expected.attentions, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)


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
        with caplog.at_level(logging.INFO, logger="bertfast.modeling"):
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
