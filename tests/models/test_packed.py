"""A PackedBatch is the model's native input: packed == padded == transformers on the real tokens (CPU fp32)."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
import bertfast.models.bert
import bertfast.padding
from bertfast.padding import PackedBatch
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, TINY, assert_close, hf_task_model, padded_batch

LENGTHS = [9, 4, 1, 7]


def packed_and_padded(lengths: list[int]) -> tuple[PackedBatch, dict[str, torch.Tensor], torch.Tensor]:
    """The same sequences as a PackedBatch built from token lists and as a right-padded (B, S) batch."""
    batch = padded_batch(TINY["vocab_size"], lengths)
    real = batch["attention_mask"].bool()  # (B, S)
    ids = [row[mask].tolist() for row, mask in zip(batch["input_ids"], real)]
    types = [row[mask].tolist() for row, mask in zip(batch["token_type_ids"], real)]
    return PackedBatch.from_token_lists(ids, types), batch, real


def test_packed_batch_matches_padded_and_transformers(tiny_checkpoint, monkeypatch):
    """model(packed) and model(packed=...) run the padding-free path directly: no packing is rebuilt from a mask."""
    hf = transformers.BertModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    packed, batch, real = packed_and_padded(LENGTHS)
    with torch.no_grad():
        expected = hf(**batch, output_hidden_states=True)
        padded = ours(**batch, output_hidden_states=True)

        def no_packing(*args, **kwargs):
            raise AssertionError("the packed path rebuilt a packing from a mask")

        monkeypatch.setattr(bertfast.models.bert, "packing_of", no_packing)
        monkeypatch.setattr(bertfast.padding, "packing_of", no_packing)
        positional, keyword = ours(packed, output_hidden_states=True), ours(packed=packed, output_hidden_states=True)
    tokens = sum(LENGTHS)
    assert positional.last_hidden_state.shape == (tokens, TINY["hidden_size"])
    assert positional.cu_seqlens.tolist() == [0, 9, 13, 14, 21] and positional.max_seqlen == 9
    assert positional.pooler_output.shape == (len(LENGTHS), TINY["hidden_size"])
    for out in (positional, keyword):
        assert_close(out.last_hidden_state, expected.last_hidden_state[real], HIDDEN_ATOL)
        assert_close(out.last_hidden_state, padded.last_hidden_state[real], HIDDEN_ATOL)
        assert_close(out.pooler_output, expected.pooler_output, HIDDEN_ATOL)
        for a, e in zip(out.hidden_states, expected.hidden_states, strict=True):
            assert a.shape == (tokens, TINY["hidden_size"])
            assert_close(a, e[real], HIDDEN_ATOL)


def test_from_padded_adapter_round_trips(tiny_checkpoint):
    """PackedBatch.from_padded of a padded batch gives the padded call's real-token states."""
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    _, batch, real = packed_and_padded(LENGTHS)
    packed, _ = PackedBatch.from_padded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        assert_close(ours(packed).last_hidden_state, ours(**batch).last_hidden_state[real], HIDDEN_ATOL)


@pytest.mark.parametrize("architecture,field,per_token", [
    ("BertForSequenceClassification", "logits", False),
    ("BertForTokenClassification", "logits", True),
    ("BertForQuestionAnswering", "start_logits", True),
    ("BertForQuestionAnswering", "end_logits", True),
    ("BertForMaskedLM", "logits", True),
    ("BertForNextSentencePrediction", "logits", False),
    ("BertForPreTraining", "prediction_logits", True),
    ("BertForPreTraining", "seq_relationship_logits", False),
])
def test_heads_take_a_packed_batch(architecture, field, per_token, tmp_path):
    """Token-level logits come back packed (T, ...), sequence-level ones (B, ...), equal to transformers'."""
    hf = hf_task_model(architecture, **TINY)
    hf.save_pretrained(tmp_path)
    ours = getattr(bertfast, architecture).from_pretrained(str(tmp_path))
    packed, batch, real = packed_and_padded(LENGTHS)
    with torch.no_grad():
        expected = getattr(hf(**batch), field)
        actual = getattr(ours(packed), field)
    assert_close(actual, expected[real] if per_token else expected, LOGITS_ATOL)
    assert actual.shape[0] == (sum(LENGTHS) if per_token else len(LENGTHS))


def test_packed_batch_refuses_padded_only_arguments(tiny_checkpoint):
    ours = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    packed, batch, _ = packed_and_padded(LENGTHS)
    with pytest.raises(ValueError, match="pass it alone"):
        ours(packed, attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="pass it alone"):
        ours(packed, output_attentions=True)
    with pytest.raises(ValueError, match="not both"):
        ours(packed, packed=packed)
    out_of_range = PackedBatch.from_token_lists([[1, TINY["vocab_size"]]])
    with pytest.raises(ValueError, match=r"PackedBatch.input_ids has values in \[1, 99\]"):
        ours(out_of_range)


def test_question_answering_loss_needs_a_padded_batch(tmp_path):
    hf_task_model("BertForQuestionAnswering", **TINY).save_pretrained(tmp_path)
    ours = bertfast.BertForQuestionAnswering.from_pretrained(str(tmp_path))
    packed, _, _ = packed_and_padded(LENGTHS)
    positions = torch.zeros(len(LENGTHS), dtype=torch.long)
    with pytest.raises(ValueError, match="not a PackedBatch"):
        ours(packed, start_positions=positions, end_positions=positions)
