"""fill-mask against transformers' FillMaskPipeline on the same checkpoint."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from tests.helpers import exported

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
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        fill_mask(FILL[0], top_k=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=[]), r"targets must be a token string or a non-empty list"), (dict(targets=[3]), "targets must be"),
    (dict(top_k=2.5), r"top_k must be an int >= 1, got 2.5"),
    (dict(top_k=True), r"top_k must be an int >= 1, got True"),
    (dict(top_k="3"), r"top_k must be an int >= 1, got '3'"),
])
def test_bad_arguments_are_our_errors_not_torchs(fill_mask, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fill_mask(FILL[0], **kwargs)


def test_a_single_target_string_is_accepted_like_transformers(fill_mask, hf_fill_mask):
    assert_same_predictions(fill_mask(FILL[0], targets="paris"), hf_fill_mask(FILL[0], targets="paris"))


def test_the_missing_mask_message_blames_truncation_only_when_it_cut_the_mask(fill_mask):
    with pytest.raises(ValueError, match=r"^fill-mask input has no \[MASK\] token: put \[MASK\]") as caught:
        fill_mask("Nothing to fill.")
    assert "truncation" not in str(caught.value)
    with pytest.raises(ValueError, match=r"fill-mask input 1 has no \[MASK\] token"):
        fill_mask(["A [MASK] here.", "None here."])
    with pytest.raises(ValueError, match=r"truncation to 64 tokens cut off the \[MASK\] token: shorten the text"):
        fill_mask("word " * 100 + "[MASK].")


def test_a_lone_surrogate_in_the_text_is_named(fill_mask):
    with pytest.raises(ValueError, match="lone surrogate"):
        fill_mask("The [MASK] sat on the \udce9 mat.")


def test_onnxruntime_backend_gives_the_same_predictions(tmp_path_factory, fill_mask, tiny_vocab_checkpoint):
    """An export runs the padded rows (logits of every position), the torch model the packed ones (the masked
    positions only): the same tokens, sequences and scores, for a batch of texts of different lengths."""
    export_dir, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "fill-mask")
    onnx = bertfast.pipeline("fill-mask", model=export_dir, backend="onnxruntime")
    assert isinstance(onnx.model, bertfast.OnnxModel)
    for ours, theirs in zip(onnx(FILL, top_k=4), fill_mask(FILL, top_k=4)):
        assert_same_predictions(ours, theirs)
