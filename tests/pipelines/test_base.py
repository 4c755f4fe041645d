"""pipelines.base.TokenBatch: one model call's token lists, packed or padded as the tokenizer pads them."""
from __future__ import annotations

import torch

from bertfast.pipelines.base import TokenBatch
from bertfast.tokenizer import BertTokenizer

TEXTS = ["a short one", "a somewhat longer text than the first", "mid length text"]


def test_padded_rows_are_the_tokenizers_padding(tiny_vocab_checkpoint):
    tokenizer = BertTokenizer.from_pretrained(tiny_vocab_checkpoint)
    lists = tokenizer(TEXTS, return_attention_mask=False)
    batch = TokenBatch([0, 1, 2], lists["input_ids"], lists["token_type_ids"])
    expected = tokenizer(TEXTS, padding=True, return_tensors="pt")
    padded = batch.padded("cpu", tokenizer.pad_token_id)
    assert padded.keys() == {"input_ids", "token_type_ids", "attention_mask"}
    for key, value in padded.items():
        assert torch.equal(value, expected[key]), key


def test_packed_rows_are_the_real_tokens_one_after_another():
    batch = TokenBatch([1, 0], [[101, 7, 102], [101, 102]], [[0, 0, 0], [0, 1]])
    packed = batch.packed("cpu")
    assert packed.input_ids.tolist() == [101, 7, 102, 101, 102]
    assert packed.token_type_ids.tolist() == [0, 0, 0, 0, 1]
    assert packed.position_ids.tolist() == [0, 1, 2, 0, 1]
    assert (packed.cu_seqlens.tolist(), packed.max_seqlen, packed.lengths) == ([0, 3, 5], 3, (3, 2))
