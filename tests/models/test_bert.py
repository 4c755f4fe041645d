"""Model parity with transformers (fp32 eager, CPU): every output, on padded batches of mixed lengths."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from tests.helpers import (HIDDEN_ATOL, LOGITS_ATOL, SENTENCES, TINY, assert_close, assert_close_real,
                           hf_pretraining_model, needs_cuda, padded_batch)


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


def test_dropout_only_in_train_mode(tiny_checkpoint):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [8, 5])
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, model(**batch).last_hidden_state)
        model.train()
        first, second = model(**batch).last_hidden_state, model(**batch).last_hidden_state
    assert not torch.allclose(first, second)


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


def test_padding_states_keeps_transformers_values_at_padding(tiny_checkpoint):
    """padding_states=True: the padded path, and the padding positions hold transformers' hidden states."""
    hf = hf_load(transformers.BertModel, tiny_checkpoint)
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [9, 4, 6])
    with torch.no_grad():
        expected, actual = hf(**batch), ours(**batch, padding_states=True)
        zeroed = ours(**batch).last_hidden_state
    assert_close(actual.last_hidden_state, expected.last_hidden_state, HIDDEN_ATOL)
    assert zeroed[batch["attention_mask"] == 0].abs().max() == 0
    with pytest.raises(ValueError, match="pick one"):
        ours(**batch, padding_states=True, return_packed=True)
