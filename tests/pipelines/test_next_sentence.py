"""next-sentence against transformers' BertForNextSentencePrediction."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from tests.helpers import SENTENCES


def test_next_sentence_matches_transformers_model(tiny_vocab_checkpoint):
    nsp = bertfast.pipeline("next-sentence", model=tiny_vocab_checkpoint)
    hf = transformers.BertForNextSentencePrediction.from_pretrained(tiny_vocab_checkpoint).eval()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(tiny_vocab_checkpoint)
    a, b = SENTENCES[:2], SENTENCES[2:]
    with torch.no_grad():
        expected = hf(**tokenizer(a, b, padding=True, return_tensors="pt")).logits
    results = nsp(a, b)
    torch.testing.assert_close(torch.tensor([r["logits"] for r in results]), expected, atol=1e-4, rtol=0)
    probability = expected.softmax(-1)[:, 0]
    for result, p in zip(results, probability.tolist()):
        assert result["is_next_probability"] == pytest.approx(p, abs=1e-5)
        assert result["label"] == ("IsNext" if p >= 0.5 else "NotNext")
    assert nsp(a[0], b[0])["logits"] == pytest.approx(results[0]["logits"], abs=1e-5)
    with pytest.raises(ValueError, match="must pair up"):
        nsp(a, b[:1])
