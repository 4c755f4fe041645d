"""bertfast/models/roberta.py and bertfast/heads/roberta.py: RoBERTa, XLM-RoBERTa and CamemBERT checkpoints written
by transformers (random weights, small configs, a tokenizer trained in tests/tokenizer_folders.py) load through
BERT's class names and the Auto classes, and give transformers' numbers: hidden states 1e-5, logits 1e-4, on
right- and left-padded batches of mixed lengths and packed; their saves load back in transformers; the pipelines
give transformers' answers."""
from __future__ import annotations

import pytest
import torch
import transformers

import bertfast
from bertfast.heads.roberta import RobertaForSequenceClassification
from bertfast.models.roberta import RobertaModel
from tests.helpers import LOGITS_ATOL
from tests.models.parity import (TEXTS, Family, assert_fill_mask_matches, assert_padded_left_padded_and_packed,
                                 compare, encoded, int8_cosine)

FAMILIES = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert"}  # model_type -> prefix
HEADS = {"Model": ("last_hidden_state",), "ForMaskedLM": ("logits",), "ForSequenceClassification": ("logits",),
         "ForTokenClassification": ("logits",), "ForQuestionAnswering": ("start_logits", "end_logits"),
         "ForMultipleChoice": ("logits",)}
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
DECISIVE = ("classifier", "qa_outputs", "lm_head.dense")


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {family: Family(tmp_path_factory, family, prefix, SIZES, DECISIVE) for family, prefix in FAMILIES.items()}


@pytest.fixture
def folder(families):
    return lambda family, head: families[family].folder(head)


@pytest.mark.parametrize("head", [h for h in HEADS if h != "ForMultipleChoice"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_head_matches_transformers_padded_left_padded_and_packed(families, family, head):
    path = families[family].folder(head)
    ours = getattr(bertfast, "Bert" + head).from_pretrained(path)  # BERT's name: the family's class is picked
    assert type(ours).__name__ == "Roberta" + head and type(ours.base_model) is RobertaModel
    assert_padded_left_padded_and_packed(ours, families[family].theirs(head, path), path, HEADS[head])


def test_multiple_choice_matches_transformers(folder):
    path = folder("roberta", "ForMultipleChoice")
    ours = bertfast.AutoModelForMultipleChoice.from_pretrained(path)
    theirs = transformers.RobertaForMultipleChoice.from_pretrained(path).eval()
    batch = {k: v.view(2, 2, -1) for k, v in encoded(path).items()}
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification"])
def test_a_save_loads_back_in_transformers_with_the_same_outputs(folder, tmp_path, head):
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(folder("xlm-roberta", head))
    ours.save_pretrained(tmp_path)
    loaded = getattr(transformers, "AutoModel" + head).from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "XLMRoberta" + head
    batch = encoded(folder("xlm-roberta", head))
    with torch.inference_mode():
        compare(ours(**batch), loaded(**batch), ("logits",), batch["attention_mask"].bool())


def test_a_base_checkpoint_gets_a_new_roberta_head(folder):
    with pytest.warns(UserWarning, match="no task head"):
        model = bertfast.AutoModelForSequenceClassification.from_pretrained(folder("camembert", "Model"),
                                                                             num_labels=4)
    assert type(model) is RobertaForSequenceClassification and model.classifier.out_proj.out_features == 4


def test_roberta_has_no_next_sentence_head(folder):
    with pytest.raises(ValueError, match="BertForNextSentencePrediction: bertfast has no ForNextSentencePrediction "
                                         "model for model_type 'roberta'"):
        bertfast.BertForNextSentencePrediction.from_pretrained(folder("roberta", "ForMaskedLM"))


def test_the_sequence_limit_is_the_table_less_the_padding_rows(folder):
    model = bertfast.AutoModel.from_pretrained(folder("roberta", "Model"))
    assert model.config.max_sequence_length == SIZES["max_position_embeddings"] - 2
    ids = torch.full((1, 129), 5)
    with pytest.raises(ValueError, match=r"sequence length 129 exceeds the model's 128 positions \(max_position_"
                                         r"embeddings 130 less the 2 rows before the first\)"):
        model(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_fill_mask_pipeline_matches_transformers(folder, family):
    assert_fill_mask_matches(folder(family, "ForMaskedLM"))


def test_text_and_token_classification_pipelines_match_transformers(folder):
    path = folder("roberta", "ForSequenceClassification")
    got = bertfast.pipeline("text-classification", model=path)(TEXTS, top_k=None)
    expected = transformers.pipeline("text-classification", model=path, device="cpu")(TEXTS, top_k=None)
    assert [[r["label"] for r in row] for row in got] == [[r["label"] for r in row] for row in expected]
    path = folder("xlm-roberta", "ForTokenClassification")
    ours = bertfast.pipeline("token-classification", model=path)
    theirs = transformers.pipeline("token-classification", model=path, device="cpu", stride=8)
    cases = [(text, strategy) for text in TEXTS[:3] for strategy in ("none", "simple", "first")]
    cases += [(TEXTS[3], "simple"), (TEXTS[3], "first")]  # longer than the tokenizer's 48 tokens: windows
    for text, strategy in cases:
        a, b = ours(text, aggregation_strategy=strategy, stride=8), theirs(text, aggregation_strategy=strategy)
        assert [{k: v for k, v in e.items() if k != "score"} for e in a] == \
            [{k: v for k, v in e.items() if k != "score"} for e in b]
        torch.testing.assert_close(torch.tensor([e["score"] for e in a]), torch.tensor([float(e["score"]) for e in b]),
                                   atol=LOGITS_ATOL, rtol=0)


def test_int8_keeps_the_hidden_states_close(folder):
    assert int8_cosine(folder("roberta", "Model")) > 0.99


def test_an_unsupported_family_is_refused_naming_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "deberta-v2", "hidden_size": 32}')
    with pytest.raises(ValueError, match=r"model_type is 'deberta-v2'; bertfast runs the architectures 'bert', "
                                         r"'camembert', 'distilbert', 'electra', 'roberta', 'xlm-roberta' \("):
        bertfast.AutoModel.from_pretrained(tmp_path)
