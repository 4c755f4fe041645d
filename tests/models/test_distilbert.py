"""bertfast/models/distilbert.py and bertfast/heads/distilbert.py: DistilBERT checkpoints written by transformers
(random weights, small configs, a WordPiece tokenizer trained in tests/tokenizer_folders.py) load through BERT's
class names and the Auto classes and give transformers' numbers (hidden states 1e-5, logits 1e-4) on right- and
left-padded batches and packed, token_type_ids ignored; their saves (config.json in DistilBERT's field names) load
back in transformers; the losses, int8 and the pipelines agree with transformers'."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

import bertfast
from bertfast.config import BertConfig
from bertfast.heads.distilbert import DistilBertForSequenceClassification
from bertfast.inputs import check_inputs
from bertfast.models.distilbert import DistilBertConfig, DistilBertModel
from bertfast.padding import PackedBatch
from tests.models.parity import (Family, assert_fill_mask_matches, assert_loss_matches, assert_multiple_choice_matches,
                                 assert_padded_left_padded_and_packed, assert_text_classification_matches, compare,
                                 encoded, int8_cosine, packed_rows)

HEADS = {"Model": ("last_hidden_state",), "ForMaskedLM": ("logits",), "ForSequenceClassification": ("logits",),
         "ForTokenClassification": ("logits",), "ForQuestionAnswering": ("start_logits", "end_logits")}
SIZES = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
DECISIVE = ("pre_classifier", "classifier", "qa_outputs", "vocab_transform")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return Family(tmp_path_factory, "distilbert", "DistilBert", SIZES, DECISIVE)


def with_token_types(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with segment ids of ones (DistilBERT's tokenizer gives none; bertfast's model ignores them)."""
    return {**batch, "token_type_ids": torch.ones_like(batch["input_ids"])}


@pytest.mark.parametrize("head", HEADS)
def test_each_head_matches_transformers_padded_left_padded_and_packed(family, head):
    path = family.folder(head)
    ours = getattr(bertfast, "Bert" + head).from_pretrained(path)  # BERT's name: the family's class is picked
    assert type(ours).__name__ == "DistilBert" + head and type(ours.base_model) is DistilBertModel
    assert_padded_left_padded_and_packed(ours, family.theirs(head, path), path, HEADS[head], with_token_types)


def test_multiple_choice_matches_transformers(family):
    assert_multiple_choice_matches(family, "DistilBertForMultipleChoice")


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                                  "ForQuestionAnswering", "ForMultipleChoice"])
def test_losses_match_transformers(family, head):
    assert_loss_matches(family, head)


def test_token_type_ids_are_ignored_never_checked_padded_and_packed(family):
    model = bertfast.AutoModel.from_pretrained(family.folder("Model"))
    batch = encoded(family.folder("Model"))
    packed = packed_rows(batch)
    rows = [row[:n] for row, n in zip(batch["input_ids"].tolist(), packed.lengths)]  # right padding
    typed = PackedBatch.from_token_lists(rows, [[7] * n for n in packed.lengths])  # no table has 7 rows
    with torch.inference_mode():
        torch.testing.assert_close(model(**{**batch, "token_type_ids": torch.full_like(batch["input_ids"], 7)})
                                   .last_hidden_state, model(**batch).last_hidden_state, atol=0, rtol=0)
        torch.testing.assert_close(model(**batch, token_type_ids=torch.ones(1, 1, dtype=torch.long))
                                   .last_hidden_state, model(**batch).last_hidden_state, atol=0, rtol=0)
        torch.testing.assert_close(model(typed).last_hidden_state, model(packed).last_hidden_state, atol=0, rtol=0)
    assert check_inputs(model.config, model.device, batch["input_ids"], batch["attention_mask"],
                        torch.full_like(batch["input_ids"], 7)) is not None
    bert = BertConfig(vocab_size=model.config.vocab_size)
    with pytest.raises(ValueError, match=r"token_type_ids has values in \[7, 7\] but must be in \[0, 2\)"):
        check_inputs(bert, model.device, batch["input_ids"], batch["attention_mask"],
                     torch.full_like(batch["input_ids"], 7))  # BERT's are checked


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice"])
def test_a_save_loads_back_in_transformers_with_the_same_outputs(family, tmp_path, head):
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(family.folder(head))
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {"dim", "n_layers", "n_heads", "hidden_dim", "activation", "dropout", "attention_dropout"} <= set(saved)
    assert not {"hidden_size", "num_hidden_layers", "layer_norm_eps", "type_vocab_size"} & set(saved)
    assert not any("qkv" in key for key in load_file(tmp_path / "model.safetensors"))
    loaded = getattr(transformers, "AutoModel" + head).from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "DistilBert" + head
    original = family.theirs(head, family.folder(head))
    for name in ("dim", "n_layers", "n_heads", "hidden_dim", "seq_classif_dropout", "qa_dropout", "vocab_size"):
        assert getattr(loaded.config, name) == getattr(original.config, name), name
    batch = encoded(family.folder(head))
    mask = batch["attention_mask"].bool()
    if head == "ForMultipleChoice":
        batch = {k: v.view(2, 2, -1) for k, v in batch.items()}
    with torch.inference_mode():
        compare(ours(**batch), loaded(**batch), ("logits",), mask)
        torch.testing.assert_close(loaded(**batch).logits, original(**batch).logits, atol=0, rtol=0)


def test_a_base_checkpoint_gets_a_new_distilbert_head(family):
    with pytest.warns(UserWarning, match="no task head"):
        model = bertfast.BertForSequenceClassification.from_pretrained(family.folder("Model"), num_labels=4)
    assert type(model) is DistilBertForSequenceClassification
    assert model.classifier.out_features == 4 and model.pre_classifier.out_features == SIZES["dim"]


def test_distilbert_has_no_pretraining_or_next_sentence_head(family):
    for name in ("BertForPreTraining", "BertForNextSentencePrediction"):
        with pytest.raises(ValueError, match=f"{name}: bertfast has no {name.removeprefix('Bert')} model for "
                                             f"model_type 'distilbert'"):
            getattr(bertfast, name).from_pretrained(family.folder("ForMaskedLM"))


def test_config_errors_name_distilbert_fields_and_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert", "dim": 30, "n_heads": 4}))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config.json: dim \(30\) is not a multiple of n_heads "
                                         rf"\(4\)$"):
        bertfast.AutoModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert", "sinusoidal_pos_embds": True}))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config.json: config.sinusoidal_pos_embds is True: bertfast "
                                         rf"runs DistilBERT with learned positions only; use a checkpoint with "
                                         rf"sinusoidal_pos_embds false$"):
        bertfast.AutoModel.from_pretrained(tmp_path)


def test_the_config_reads_transformers_names_and_ignores_bert_ones():
    config = DistilBertConfig.from_dict({"dim": 64, "n_layers": 3, "n_heads": 8, "hidden_dim": 100,
                                         "activation": "gelu_new", "dropout": 0.2, "attention_dropout": 0.3,
                                         "layer_norm_eps": 1e-5, "type_vocab_size": 2, "tie_weights_": True})
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.hidden_act, config.hidden_dropout_prob, config.attention_probs_dropout_prob) == \
        (64, 3, 8, 100, "gelu_new", 0.2, 0.3)
    assert (config.layer_norm_eps, config.type_vocab_size) == (1e-12, 1)  # transformers' DistilBERT ignores them
    assert config.to_dict()["tie_weights_"] is True and "tie_weights_" not in DistilBertConfig().to_dict()
    aliased = DistilBertConfig.from_dict({"hidden_size": 48, "num_attention_heads": 6, "num_hidden_layers": 1})
    assert (aliased.hidden_size, aliased.num_attention_heads, aliased.num_hidden_layers) == (48, 6, 1)


def test_int8_keeps_the_hidden_states_close(family):
    assert int8_cosine(family.folder("Model")) > 0.99


def test_fill_mask_pipeline_matches_transformers(family):
    assert_fill_mask_matches(family.folder("ForMaskedLM"))


def test_text_classification_pipeline_matches_transformers(family):
    assert_text_classification_matches(family.folder("ForSequenceClassification"))


def test_untied_decoder_loads_and_saves_its_own_weight(family, tmp_path):
    path = family.folder("ForMaskedLM", tie_word_embeddings=False)
    ours = bertfast.AutoModelForMaskedLM.from_pretrained(path)
    theirs = family.theirs("ForMaskedLM", path)
    assert not torch.equal(theirs.vocab_projector.weight, theirs.distilbert.embeddings.word_embeddings.weight)
    batch = encoded(path)
    with torch.inference_mode():
        compare(ours(**batch), theirs(**batch), ("logits",), batch["attention_mask"].bool())
    ours.save_pretrained(tmp_path)
    assert "vocab_projector.weight" in load_file(tmp_path / "model.safetensors")
