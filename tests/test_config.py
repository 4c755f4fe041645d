"""bertfast/config.py: the task labels of BertConfig (read and written as transformers does, validated) and the
dtype names a model is loaded or run in (``resolve_dtype``, beside the config)."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from bertfast.config import SIZE_LIMITS, BertConfig, resolve_dtype


@pytest.mark.parametrize("name, dtype", [(None, torch.float32), (torch.float16, torch.float16),
                                         ("float32", torch.float32), ("fp32", torch.float32),
                                         ("float", torch.float32), ("float16", torch.float16),
                                         ("fp16", torch.float16), ("half", torch.float16),
                                         ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


def test_unknown_dtype_name():
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        resolve_dtype("float8")


# Task labels: id2label / label2id / num_labels / problem_type / classifier_dropout, as transformers reads them.

def test_labels_default_to_transformers_two_and_follow_id2label():
    assert BertConfig().id2label == {0: "LABEL_0", 1: "LABEL_1"} and BertConfig().num_labels == 2
    config = BertConfig(num_labels=3)
    assert (config.id2label, config.label2id) == ({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},
                                                  {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2})
    config = BertConfig.from_dict({"id2label": {"1": "POS", "0": "NEG"}, "label2id": {"NEG": 0, "POS": 1}})
    assert (config.id2label, config.num_labels) == ({0: "NEG", 1: "POS"}, 2)
    assert config.to_dict()["id2label"] == {"0": "NEG", "1": "POS"} and "num_labels" not in config.to_dict()
    assert BertConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.head_dropout == config.hidden_dropout_prob == 0.1
    assert BertConfig(classifier_dropout=0.0).head_dropout == 0.0


def test_config_json_read_as_transformers_writes_it(tmp_path):
    transformers.BertConfig(id2label={0: "O", 1: "B-LOC", 2: "I-LOC"}, problem_type="multi_label_classification",
                            classifier_dropout=0.25).save_pretrained(tmp_path)
    config = BertConfig.from_json_file(tmp_path / "config.json")
    assert (config.id2label, config.label2id) == ({0: "O", 1: "B-LOC", 2: "I-LOC"}, {"O": 0, "B-LOC": 1, "I-LOC": 2})
    assert (config.problem_type, config.classifier_dropout, config.head_dropout) == (
        "multi_label_classification", 0.25, 0.25)


@pytest.mark.parametrize("fields, error, message", [
    ({"id2label": {"a": "X"}}, TypeError, "id2label keys must be label ids"),
    ({"id2label": {0: 1}}, TypeError, "id2label names must be strings"),
    ({"id2label": {}}, TypeError, "id2label must be a non-empty dict"),
    ({"id2label": {0: "A", 2: "B"}}, ValueError, r"id2label ids must be 0 \.\. 1, one per label, got \[0, 2\]"),
    ({"id2label": {0: "A", 1: "A"}}, ValueError, "gives two ids the same name"),
    ({"id2label": {0: "A", 1: "B"}, "label2id": {"A": 1, "B": 0}}, ValueError, "label2id .* is not the inverse"),
    ({"id2label": {0: "A", 1: "B"}, "num_labels": 3}, ValueError, "num_labels is 3 but id2label names 2 labels"),
    ({"num_labels": 0}, ValueError, "num_labels must be a positive integer"),
    ({"problem_type": "ranking"}, ValueError, "problem_type 'ranking' is not one of"),
    ({"problem_type": "single_label_classification", "num_labels": 1}, ValueError, "needs num_labels > 1"),
    ({"classifier_dropout": 1.0}, ValueError, r"classifier_dropout must be None or a number in \[0, 1\)"),
], ids=["key", "name", "empty", "gap", "duplicate", "label2id", "num_labels", "zero", "problem_type", "single_one",
        "dropout"])
def test_bad_labels_are_clear_errors(fields, error, message):
    with pytest.raises(error, match=message):
        BertConfig(**fields)


def test_from_dict_relabels_as_from_pretrained_asks():
    stated = {"id2label": {"0": "NEG", "1": "POS"}}
    assert BertConfig.from_dict({}, num_labels=5).id2label[4] == "LABEL_4"
    assert BertConfig.from_dict(stated, num_labels=2).id2label == {0: "NEG", 1: "POS"}, "the same count keeps names"
    assert BertConfig.from_dict(stated, id2label={0: "bad", 1: "good"}).label2id == {"bad": 0, "good": 1}
    with pytest.raises(ValueError, match=r"num_labels=3 but the checkpoint's config has 2 labels"):
        BertConfig.from_dict(stated, num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels=4 but the checkpoint's config has 3 labels"):
        BertConfig.from_dict({"num_labels": 3}, num_labels=4)
    with pytest.raises(ValueError, match="num_labels=3 but id2label names 2 labels"):
        BertConfig.from_dict({}, num_labels=3, id2label={0: "a", 1: "b"})


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", r"config.json: a config must be a JSON object \(field name -> value\), got a list"),
    ('{"vocab_size": null}', r"config.json: config.vocab_size must be a positive integer, got None"),
    ('{"hidden_size": "768"}', r"config.json: config.hidden_size must be a positive integer, got '768'"),
    ('{"num_hidden_layers": true}', r"config.num_hidden_layers must be a positive integer, got True"),
    ('{"hidden_dropout_prob": "0.1"}', r"config.hidden_dropout_prob must be a finite number in \[0, 1\), got '0.1'"),
    ('{"layer_norm_eps": null}', r"config.layer_norm_eps must be a finite number > 0, got None"),
    ('{"layer_norm_eps": -1e-12}', r"config.layer_norm_eps must be a finite number > 0"),
    ('{"initializer_range": "x"}', r"config.initializer_range must be a finite number >= 0"),
    ('{"pad_token_id": 30522}', r"config.pad_token_id must be an integer in \[0, vocab_size=30522\)"),
    ('{"hidden_act": ["gelu"]}', r"config.hidden_act must be a string, got \['gelu'\]"),
    ('{"tie_word_embeddings": "yes"}', r"config.tie_word_embeddings must be true or false"),
    ('{"architectures": "BertModel"}', r"config.architectures must be a list of class names"),
    ('{"id2label": ["NEG", "POS"]}', r"config.json: id2label must be a non-empty dict \{id: name\}"),
    ('{"id2label": {"neg": "NEG", "pos": "POS"}}', r"config.json: id2label keys must be label ids .*got 'neg'"),
    ('{"num_labels": 1000000000}', r"config.num_labels is 1,000,000,000, above bertfast's limit of 1,048,576"),
    ('{"vocab_size": ', r"config.json is not valid JSON"),
    (b"\xff\xfe{}", r"config.json is not UTF-8 text"),
])
def test_a_malformed_config_json_names_the_file_and_the_field(content, message, tmp_path):
    """Checked at load (from_pretrained reads config.json through from_json_file), not at the first forward."""
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as caught:
        BertConfig.from_json_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name", list(SIZE_LIMITS))
def test_absurd_sizes_are_refused_at_once_naming_the_field_and_its_limit(name, tmp_path):
    """A billion layers (or rows, heads...) would build a model for minutes before failing; a value above the field's
    documented limit is refused before anything is built. The limits are far above real checkpoints."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({name: 1_000_000_000}))
    with pytest.raises(ValueError, match=rf"config.{name} is 1,000,000,000, above bertfast's limit of "
                                         rf"{SIZE_LIMITS[name]:,} \(bertfast.config.SIZE_LIMITS\)") as caught:
        BertConfig.from_json_file(path)
    assert str(path) in str(caught.value)
    big = {"bert-large-uncased": BertConfig.from_preset("bert-large-uncased"),
           "megatron-bert-3.9b": BertConfig(vocab_size=250_000, hidden_size=2560, num_hidden_layers=48,
                                            num_attention_heads=40, intermediate_size=10240,
                                            max_position_embeddings=8192, type_vocab_size=16)}
    assert all(getattr(config, name) < SIZE_LIMITS[name] for config in big.values())
