"""Fuzz: random unicode, byte strings and tricky words through PreTrainedTokenizerFast on a byte-level BPE
(RoBERTa) and a Unigram (XLM-R) folder, against transformers' AutoTokenizer on the same folder: ids, offsets,
special-token masks, overflow windows and decoding identical."""
from __future__ import annotations

import pytest
import transformers
from hypothesis import given
from hypothesis import strategies as st

from bertfast.fast_tokenizer import PreTrainedTokenizerFast
from tests.helpers import fuzz
from tests.tokenizer_folders import save_family

WORDS = st.sampled_from(["<mask>", "</s>", "<s>", "<pad>", "Café", "naïve", "東京", "ﬁ", "a" * 120, "don't", "...",
                         "\t", "  ", "\u200b", "\u00ad", "\x00", "🍕", "👩‍👩‍👧", "ǅ", "İstanbul", "\n"])
TEXT = st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("utf-8", errors="replace")),
                 st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=8).map(" ".join),
                 st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=8).map("".join))


@pytest.fixture(scope="module", params=["roberta", "xlm-roberta"])
def tokenizers(request, tmp_path_factory):
    folder = save_family(request.param, tmp_path_factory.mktemp(request.param))
    return PreTrainedTokenizerFast.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


@fuzz(60)
@given(texts=st.lists(TEXT, min_size=1, max_size=3), pairs=st.none() | st.lists(TEXT, min_size=3, max_size=3),
       options=st.sampled_from([{"padding": True},
                                {"truncation": True, "max_length": 12, "padding": "max_length"},
                                {"truncation": "longest_first", "max_length": 16, "stride": 2,
                                 "return_overflowing_tokens": True, "padding": True}]))
def test_encodings_and_decodings_match_transformers(tokenizers, texts, pairs, options):
    ours, theirs = tokenizers
    pairs = None if pairs is None else pairs[: len(texts)]
    options = {**options, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    expected, actual = theirs(texts, pairs, **options), ours(texts, pairs, **options)
    assert dict(actual) == dict(expected)
    for row, ids in enumerate(expected["input_ids"]):
        assert actual.sequence_ids(row) == expected.sequence_ids(row)
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert [ours.tokenize(t) for t in texts] == [theirs.tokenize(t) for t in texts]
