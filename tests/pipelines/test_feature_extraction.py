"""feature-extraction against sentence-transformers on the real all-MiniLM-L6-v2."""
from __future__ import annotations

import pytest
import torch

import bertfast

from tests.helpers import SENTENCES


def test_sentence_embeddings_match_sentence_transformers_and_rank_paraphrases(minilm_dir):
    from sentence_transformers import SentenceTransformer

    embed = bertfast.pipeline("feature-extraction", model=minilm_dir)
    ours = embed(SENTENCES, normalize=True)
    expected = SentenceTransformer(minilm_dir, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    torch.testing.assert_close(embed(SENTENCES[0], normalize=True), ours[0])


def test_feature_extraction_cls_and_token_outputs(minilm_dir):
    embed = bertfast.pipeline("feature-extraction", model=minilm_dir, batch_size=2)
    model = bertfast.BertModel.from_pretrained(minilm_dir)
    tokenizer = bertfast.BertTokenizer.from_pretrained(minilm_dir)
    with torch.no_grad():
        hidden = [model(**tokenizer(s, return_tensors="pt")).last_hidden_state[0] for s in SENTENCES]
    torch.testing.assert_close(embed(SENTENCES, pooling="cls"), torch.stack([h[0] for h in hidden]),
                               atol=1e-5, rtol=0)
    tokens = embed(SENTENCES, pooling="none")
    for got, want in zip(tokens, hidden):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pooling must be one of"):
        embed(SENTENCES, pooling="max")
    with pytest.raises(TypeError, match="non-empty list of strings"):
        embed([])
