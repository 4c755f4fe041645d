"""bertfast/models/electra.py and bertfast/heads/electra.py: ELECTRA checkpoints written by transformers (random
weights, small configs with embedding_size 16 under hidden_size 32, a WordPiece tokenizer trained in
tests/tokenizer_folders.py) load through BERT's class names and the Auto classes and give transformers' numbers
(hidden states 1e-5, logits 1e-4) on right- and left-padded batches and packed: the discriminator, the generator and
the task heads; their saves load back in transformers; the losses, int8 and the pipelines agree with
transformers'."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import bertfast
from bertfast.heads.electra import ElectraForPreTraining
from bertfast.models.electra import ElectraModel
from tests.helpers import LOGITS_ATOL
from tests.models.parity import (Family, assert_fill_mask_matches, assert_loss_matches, assert_multiple_choice_matches,
                                 assert_padded_left_padded_and_packed, assert_text_classification_matches, compare,
                                 encoded, int8_cosine, labels_for, packed_rows)

HEADS = {"Model": ("last_hidden_state",), "ForPreTraining": ("logits",), "ForMaskedLM": ("logits",),
         "ForSequenceClassification": ("logits",), "ForTokenClassification": ("logits",),
         "ForQuestionAnswering": ("start_logits", "end_logits")}
SIZES = dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64)
DECISIVE = ("discriminator_predictions", "generator_predictions.dense", "classifier", "qa_outputs",
            "sequence_summary")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return Family(tmp_path_factory, "electra", "Electra", SIZES, DECISIVE)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_matches_transformers_padded_left_padded_and_packed(family, head):
    path = family.folder(head)
    ours = getattr(bertfast, "Bert" + head).from_pretrained(path)  # BERT's name: the family's class is picked
    assert type(ours).__name__ == "Electra" + head and type(ours.base_model) is ElectraModel
    assert ours.base_model.embeddings_project.in_features == SIZES["embedding_size"]
    assert_padded_left_padded_and_packed(ours, family.theirs(head, path), path, HEADS[head])


def test_equal_embedding_and_hidden_sizes_have_no_projection(family):
    path = family.folder("ForPreTraining", embedding_size=SIZES["hidden_size"])
    ours = bertfast.AutoModelForPreTraining.from_pretrained(path)
    assert type(ours) is ElectraForPreTraining and ours.base_model.embeddings_project is None
    assert_padded_left_padded_and_packed(ours, family.theirs("ForPreTraining", path), path, ("logits",))


def test_multiple_choice_matches_transformers(family):
    assert_multiple_choice_matches(family, "ElectraForMultipleChoice")


@pytest.mark.parametrize("head", ["ForPreTraining", "ForMaskedLM", "ForSequenceClassification",
                                  "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice"])
def test_losses_match_transformers(family, head):
    assert_loss_matches(family, head)


def test_the_discriminator_loss_counts_the_real_tokens_only_padded_or_packed(family):
    path = family.folder("ForPreTraining")
    ours, theirs = bertfast.AutoModelForPreTraining.from_pretrained(path), family.theirs("ForPreTraining", path)
    batch = encoded(path)
    mask = batch["attention_mask"].bool()
    labels = labels_for("ForPreTraining", batch, ours.config.vocab_size)["labels"]
    flipped = torch.where(mask, labels, 1 - labels)  # other labels at padding only
    with torch.inference_mode():
        expected = theirs(**batch, labels=labels).loss
        torch.testing.assert_close(ours(**batch, labels=flipped).loss, expected, atol=LOGITS_ATOL, rtol=0)
        torch.testing.assert_close(ours(packed_rows(batch), labels=labels[mask]).loss, expected, atol=LOGITS_ATOL,
                                   rtol=0)
    with pytest.raises(ValueError, match=r"labels has shape \(4,\), expected \(4, \d+\)"):
        ours(**batch, labels=labels[:, 0])


@pytest.mark.parametrize("head", ["ForPreTraining", "ForMaskedLM", "ForSequenceClassification"])
def test_a_save_loads_back_in_transformers_with_the_same_outputs(family, tmp_path, head):
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(family.folder(head))
    ours.save_pretrained(tmp_path)
    loaded = getattr(transformers, "AutoModel" + head).from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "Electra" + head
    assert json.loads((tmp_path / "config.json").read_text())["embedding_size"] == SIZES["embedding_size"]
    original = family.theirs(head, family.folder(head))
    batch = encoded(family.folder(head))
    with torch.inference_mode():
        compare(ours(**batch), loaded(**batch), ("logits",), batch["attention_mask"].bool())
        torch.testing.assert_close(loaded(**batch).logits, original(**batch).logits, atol=0, rtol=0)


def test_a_base_checkpoint_gets_a_new_electra_head(family):
    with pytest.warns(UserWarning, match="no task head"):
        model = bertfast.AutoModelForMultipleChoice.from_pretrained(family.folder("Model"), num_labels=2)
    assert type(model).__name__ == "ElectraForMultipleChoice" and model.sequence_summary.summary.out_features == 32


def test_electra_has_no_next_sentence_head(family):
    with pytest.raises(ValueError, match="BertForNextSentencePrediction: bertfast has no ForNextSentencePrediction "
                                         "model for model_type 'electra'"):
        bertfast.BertForNextSentencePrediction.from_pretrained(family.folder("ForPreTraining"))


def test_a_summary_other_than_the_first_token_is_refused(family):
    path = family.folder("ForMultipleChoice", summary_type="mean")
    with pytest.raises(ValueError, match=r"^config.summary_type is 'mean': bertfast's ElectraForMultipleChoice reads "
                                         r"each sequence's first token only; use summary_type 'first'"):
        bertfast.AutoModelForMultipleChoice.from_pretrained(path)
    bertfast.AutoModel.from_pretrained(path)  # the encoder does not read the summary


def test_int8_keeps_the_hidden_states_close(family):
    assert int8_cosine(family.folder("Model")) > 0.99


def test_fill_mask_pipeline_matches_transformers(family):
    assert_fill_mask_matches(family.folder("ForMaskedLM"))


def test_text_classification_pipeline_matches_transformers(family):
    assert_text_classification_matches(family.folder("ForSequenceClassification"))
