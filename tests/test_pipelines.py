"""Pipelines against transformers' pipelines and sentence-transformers, and on a real checkpoint."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "Café naïve résumé — 東京 is lovely in spring!",
]
FILL = ["The capital of France is [MASK].", "I [MASK] to the store and bought some [MASK].",
        "[MASK]", "Short [MASK] here with a much longer tail of words that follows the mask token."]


@pytest.fixture(scope="module")
def fill_mask(tiny_vocab_checkpoint):
    return bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint)


@pytest.fixture(scope="module")
def hf_fill_mask(tiny_vocab_checkpoint):
    return transformers.pipeline("fill-mask", model=tiny_vocab_checkpoint, device="cpu")


def assert_same_predictions(ours, theirs) -> None:
    if isinstance(theirs, list) and theirs and isinstance(theirs[0], list):
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            assert_same_predictions(o, t)
        return
    assert [p["token"] for p in ours] == [p["token"] for p in theirs]
    assert [p["token_str"] for p in ours] == [p["token_str"] for p in theirs]
    assert [p["sequence"] for p in ours] == [p["sequence"] for p in theirs]
    torch.testing.assert_close(torch.tensor([p["score"] for p in ours]), torch.tensor([p["score"] for p in theirs]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("text", FILL, ids=["one_mask", "two_masks", "only_mask", "long"])
def test_fill_mask_matches_transformers(fill_mask, hf_fill_mask, text):
    assert_same_predictions(fill_mask(text, top_k=7), hf_fill_mask(text, top_k=7))


def test_fill_mask_batch_and_targets_match_transformers(fill_mask, hf_fill_mask):
    ours = fill_mask(FILL, top_k=3)
    assert len(ours) == len(FILL)
    for text, result in zip(FILL, ours):
        assert_same_predictions(result, hf_fill_mask(text, top_k=3))
    targets = ["paris", "london", "berlin"]
    assert_same_predictions(fill_mask(FILL[0], targets=targets), hf_fill_mask(FILL[0], targets=targets))


def test_fill_mask_without_mask_token_is_an_error(fill_mask):
    with pytest.raises(ValueError, match=r"no \[MASK\] token"):
        fill_mask("There is nothing to fill here.")
    with pytest.raises(ValueError, match=r"no \[MASK\] token"):
        fill_mask(["A [MASK] here.", "None here."])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        fill_mask(FILL[0], top_k=0)


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


def test_pipeline_construction_errors(minilm_dir, tiny_vocab_checkpoint):
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        bertfast.pipeline("summarization", model=tiny_vocab_checkpoint)
    with pytest.raises(bertfast.CheckpointError, match=r"lacks .*cls\.predictions"):
        bertfast.pipeline("fill-mask", model=minilm_dir)
    model = bertfast.BertModel.from_pretrained(minilm_dir)
    with pytest.raises(ValueError, match="pass tokenizer="):
        bertfast.pipeline("feature-extraction", model=model)
    with pytest.raises(TypeError, match="needs a BertForMaskedLM"):
        bertfast.pipeline("fill-mask", model=model, tokenizer=minilm_dir)
