"""bertfast.AutoTokenizer picks the class transformers' AutoTokenizer would, and loads what it loads."""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import huggingface_hub
import pytest
import transformers
from huggingface_hub.errors import EntryNotFoundError

from bertfast.auto_tokenizer import AutoTokenizer
from bertfast.fast_tokenizer import PreTrainedTokenizerFast
from bertfast.tokenizer import BertTokenizer
from tests.tokenizer_folders import save_family

TEXTS = ["Crème brûlée à Zürich 😀", "東京と北京", "  spaces  ", "", "The quick brown fox."]
CLASSES = {"roberta": PreTrainedTokenizerFast, "xlm-roberta": PreTrainedTokenizerFast,
           "camembert": PreTrainedTokenizerFast, "distilbert": PreTrainedTokenizerFast,
           "electra": BertTokenizer}  # transformers 5 saves ELECTRA's tokenizer as a BertTokenizer


def assert_loads_as_transformers(folder: str | os.PathLike, expected_class: type) -> None:
    ours, hf = AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours) is expected_class
    options = {"padding": True, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    assert dict(ours(TEXTS, TEXTS[::-1], **options)) == dict(hf(TEXTS, TEXTS[::-1], **options))


@pytest.mark.parametrize("family", list(CLASSES))
def test_each_family_folder_gets_its_class(family, tmp_path):
    assert_loads_as_transformers(save_family(family, tmp_path), CLASSES[family])


def test_a_bert_folder_gets_bert_tokenizer(minilm_dir, tmp_path):
    assert_loads_as_transformers(minilm_dir, BertTokenizer)
    # model_type "bert" decides when tokenizer_config.json names no class, even without a tokenizer.json
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tmp_path)
    shutil.copy(os.path.join(minilm_dir, "config.json"), tmp_path)
    with open(tmp_path / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512}, f)
    assert_loads_as_transformers(tmp_path, BertTokenizer)


def test_tokenizer_class_wins_over_model_type(tmp_path):
    """A RoBERTa tokenizer in a folder whose config.json says bert (and the reverse) loads by tokenizer_class."""
    roberta = save_family("roberta", tmp_path / "roberta")
    with open(os.path.join(roberta, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_type": "bert"}, f)
    assert_loads_as_transformers(roberta, PreTrainedTokenizerFast)
    electra = save_family("electra", tmp_path / "electra")  # tokenizer_class BertTokenizer, model_type electra
    assert_loads_as_transformers(electra, BertTokenizer)


def test_a_folder_with_neither_is_refused_naming_what_is_missing(tmp_path, minilm_dir):
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tmp_path)
    with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
        json.dump({"model_type": "roberta"}, f)
    with pytest.raises(FileNotFoundError, match=rf"^'{tmp_path}' has no tokenizer.json and neither a "
                                                r"tokenizer_config.json tokenizer_class nor a config.json model_type"):
        AutoTokenizer.from_pretrained(tmp_path)
    with open(tmp_path / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "XLMRobertaTokenizer"}, f)
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer.json and its tokenizer_config.json names "
                                                r"tokenizer_class 'XLMRobertaTokenizer': save the folder's"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="use AutoTokenizer.from_pretrained"):
        AutoTokenizer()


def test_options_reach_the_chosen_class(tmp_path):
    folder = save_family("roberta", tmp_path)
    ours = AutoTokenizer.from_pretrained(folder, add_prefix_space=True, model_max_length=16)
    hf = transformers.AutoTokenizer.from_pretrained(folder, add_prefix_space=True, model_max_length=16)
    assert dict(ours(TEXTS, truncation=True)) == dict(hf(TEXTS, truncation=True))


def test_hub_repo_ids_resolve_through_hf_hub_download(monkeypatch, tmp_path):
    """A repo id goes to the Hub client (faked here: no network), as BertTokenizer's do."""
    folder = save_family("xlm-roberta", tmp_path)
    requested = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        requested.append((repo_id, filename))
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return path

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ours, hf = AutoTokenizer.from_pretrained("someone/xlmr-tiny"), transformers.AutoTokenizer.from_pretrained(folder)
    assert type(ours) is PreTrainedTokenizerFast and dict(ours(TEXTS, padding=True)) == dict(hf(TEXTS, padding=True))
    assert ("someone/xlmr-tiny", "tokenizer.json") in requested


@pytest.mark.parametrize("family,saved_as,token_types", [("electra", "ElectraTokenizerFast", True),
                                                          ("distilbert", "DistilBertTokenizerFast", False)])
def test_transformers_4_class_names_load_with_their_fields(tmp_path, family, saved_as, token_types):
    """4.x wrote the family's own fast class name: it decides whether calls return token_type_ids."""
    folder = save_family(family, tmp_path)
    config = os.path.join(folder, "tokenizer_config.json")
    with open(config, encoding="utf-8") as f:
        fields = json.load(f)
    with open(config, "w", encoding="utf-8") as f:
        json.dump({**fields, "tokenizer_class": saved_as}, f)
    assert_loads_as_transformers(folder, PreTrainedTokenizerFast)
    assert ("token_type_ids" in AutoTokenizer.from_pretrained(folder)("a b")) is token_types
