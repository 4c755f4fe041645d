"""bertfast.PreTrainedTokenizerFast against transformers' AutoTokenizer on the same folder (the reference): tiny
trained BPE / Unigram / WordPiece tokenizers saved by each family's transformers class (tests/tokenizer_folders.py)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from typing import Any

import pytest
import torch
import transformers
from tokenizers import Tokenizer

from bertfast.fast_tokenizer import PreTrainedTokenizerFast
from tests.kills import killed_after_each_step
from tests.tokenizer_folders import WORDS, save_family

TEXTS = {
    "plain": "The quick brown fox jumps over the lazy dog.",
    "accents": "Crème brûlée à Zürich, naïveté, coöperate, ÅNGSTRÖM, İstanbul, straße, ﬁne",
    "emoji": "party 🎉🎉 time 😀! 👩‍👩‍👧 flags 🇫🇷",
    "cjk": "東京と北京は都市です。日本語 中文 한국어",
    "spaces": "   leading  and   repeated   spaces\tand\ttabs\n\nnewlines  ",
    "empty": "",
    "specials": "fill the <mask> in, then </s> and <s> again",
    "unknown": "ℤ ∮ ⅋ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "long": " ".join([WORDS] * 4),
}
# name -> (family, options given to its transformers class)
FOLDERS = {
    "roberta": ("roberta", {}),
    "roberta_prefix": ("roberta", {"add_prefix_space": True, "trim_offsets": False}),
    "xlm-roberta": ("xlm-roberta", {}),
    "camembert": ("camembert", {}),
    "distilbert": ("distilbert", {}),
}
QUESTION = "Where are the cities?"


@pytest.fixture(scope="module", params=list(FOLDERS))
def folder(request, tmp_path_factory) -> str:
    family, options = FOLDERS[request.param]
    return save_family(family, tmp_path_factory.mktemp(request.param), **options)


@pytest.fixture(scope="module")
def pair(folder) -> tuple[PreTrainedTokenizerFast, Any]:
    return PreTrainedTokenizerFast.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


def assert_same(ours: Any, theirs: Any) -> None:
    """The same fields with identical values (tensors: same dtype, shape and values)."""
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if torch.is_tensor(value):
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key


EVERYTHING = {"return_offsets_mapping": True, "return_special_tokens_mask": True}


@pytest.mark.parametrize("name", list(TEXTS))
def test_text_matches_transformers(pair, name):
    ours, hf = pair
    text = TEXTS[name]
    ours_enc, hf_enc = ours(text, **EVERYTHING), hf(text, **EVERYTHING)
    assert_same(ours_enc, hf_enc)
    assert ours_enc.sequence_ids() == hf_enc.sequence_ids()
    assert ours.tokenize(text) == hf.tokenize(text)
    assert ours.encode(text) == hf.encode(text)
    for skip in (False, True):
        assert ours.decode(hf_enc["input_ids"], skip_special_tokens=skip) == hf.decode(hf_enc["input_ids"],
                                                                                      skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(hf_enc["input_ids"], skip_special_tokens=skip) == \
            hf.convert_ids_to_tokens(hf_enc["input_ids"], skip_special_tokens=skip)
    tokens = hf.tokenize(text)
    assert ours.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_string(tokens) == hf.convert_tokens_to_string(tokens)


@pytest.mark.parametrize("name", ["plain", "accents", "emoji", "spaces", "empty", "specials"])
def test_pairs_match_transformers(pair, name):
    ours, hf = pair
    for first, second in ((TEXTS[name], TEXTS["cjk"]), (QUESTION, TEXTS[name]), (TEXTS[name], TEXTS[name])):
        options = {**EVERYTHING, "return_token_type_ids": True}
        ours_enc, hf_enc = ours(first, second, **options), hf(first, second, **options)
        assert_same(ours_enc, hf_enc)
        assert ours_enc.sequence_ids() == hf_enc.sequence_ids()
        assert ours.decode(ours_enc["input_ids"]) == hf.decode(hf_enc["input_ids"])


@pytest.mark.parametrize("options", [
    {"padding": True},
    {"padding": True, "truncation": True, "return_tensors": "pt"},
    {"padding": "max_length", "max_length": 40, "truncation": True, "return_tensors": "pt"},
    {"padding": True, "pad_to_multiple_of": 8, "truncation": True, "max_length": 16},
    {"truncation": True, "max_length": 12, "return_attention_mask": False},
    {"add_special_tokens": False, "padding": True},
], ids=["longest", "tensors", "max_length", "multiple_of", "no_mask", "no_specials"])
def test_batches_match_transformers(pair, options):
    ours, hf = pair
    texts = list(TEXTS.values())
    assert_same(ours(texts, **EVERYTHING, **options), hf(texts, **EVERYTHING, **options))
    pairs = [QUESTION] * len(texts)
    assert_same(ours(pairs, texts, **EVERYTHING, **options), hf(pairs, texts, **EVERYTHING, **options))


@pytest.mark.parametrize("truncation,stride", [("only_second", 0), ("only_second", 5), ("longest_first", 3)])
def test_overflow_windows_match_transformers(pair, truncation, stride):
    """QA-style windows over a long context: every window, its sample, offsets and sequence ids."""
    ours, hf = pair
    contexts = [TEXTS["long"], TEXTS["accents"], TEXTS["cjk"] * 3]
    options = {**EVERYTHING, "truncation": truncation, "max_length": 40, "stride": stride,
               "return_overflowing_tokens": True, "padding": "max_length"}
    ours_enc = ours([QUESTION] * len(contexts), contexts, **options)
    hf_enc = hf([QUESTION] * len(contexts), contexts, **options)
    assert_same(ours_enc, hf_enc)
    assert len(ours_enc["input_ids"]) > len(contexts)  # the long context overflows: several windows
    for row in range(len(hf_enc["input_ids"])):
        assert ours_enc.sequence_ids(row) == hf_enc.sequence_ids(row)
    single = {**options, "truncation": True}
    assert_same(ours(TEXTS["long"], **single), hf(TEXTS["long"], **single))


def test_model_max_length_truncates_as_transformers(pair):
    ours, hf = pair
    assert ours.model_max_length == hf.model_max_length == 48
    assert_same(ours(TEXTS["long"], truncation=True), hf(TEXTS["long"], truncation=True))
    assert len(ours(TEXTS["long"], truncation=True)["input_ids"]) == 48


def test_decoding_matches_transformers(pair):
    ours, hf = pair
    rows = hf(list(TEXTS.values()), padding=True)["input_ids"]
    for skip in (False, True):
        for clean in (None, False, True):
            expected = hf.batch_decode(rows, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
            assert ours.batch_decode(rows, skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == expected
            assert ours.decode(torch.tensor(rows), skip_special_tokens=skip,
                               clean_up_tokenization_spaces=clean) == expected


def test_vocabulary_and_special_tokens_match_transformers(pair):
    ours, hf = pair
    assert ours.vocab_size == hf.vocab_size and len(ours) == len(hf) and ours.get_vocab() == hf.get_vocab()
    assert ours.all_special_tokens == hf.all_special_tokens and ours.all_special_ids == hf.all_special_ids
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert (getattr(ours, name), getattr(ours, f"{name}_id")) == (getattr(hf, name), getattr(hf, f"{name}_id"))
    assert list(ours.model_input_names) == list(hf.model_input_names)


def test_save_pretrained_round_trips_through_both_libraries(pair, tmp_path):
    ours, hf = pair
    (tmp_path / "notes.txt").write_text("kept", encoding="utf-8")
    written = ours.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(["notes.txt", *map(os.path.basename, written)])
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "kept"
    texts = list(TEXTS.values())
    expected = hf([QUESTION] * len(texts), texts, padding=True, truncation=True, **EVERYTHING)
    for reloaded in (PreTrainedTokenizerFast.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(
            tmp_path)):
        assert_same(reloaded([QUESTION] * len(texts), texts, padding=True, truncation=True, **EVERYTHING), expected)
        assert reloaded.all_special_tokens == hf.all_special_tokens and reloaded.model_max_length == 48


def test_pickles_and_builds_from_a_tokenizer_object(pair, folder):
    ours, hf = pair
    texts = list(TEXTS.values())
    expected = hf(texts, padding=True, **EVERYTHING)
    assert_same(pickle.loads(pickle.dumps(ours))(texts, padding=True, **EVERYTHING), expected)
    config = {"model_max_length": ours.model_max_length, "tokenizer_class": ours.tokenizer_class,
              **{name: getattr(ours, name) for name in ("bos_token", "eos_token", "unk_token", "sep_token",
                                                        "pad_token", "cls_token", "mask_token")}}
    built = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(os.path.join(folder, "tokenizer.json")),
                                    extra_special_tokens=ours.extra_special_tokens, **config)
    assert_same(built(texts, padding=True, **EVERYTHING), expected)


@pytest.mark.parametrize("options", [{"add_prefix_space": True}, {"add_prefix_space": False},
                                     {"add_prefix_space": True, "trim_offsets": False}])
def test_space_options_override_the_file_as_in_transformers(tmp_path_factory, options):
    for family in ("roberta", "xlm-roberta"):
        if family != "roberta" and "trim_offsets" in options:
            continue
        folder = save_family(family, tmp_path_factory.mktemp(family))
        ours = PreTrainedTokenizerFast.from_pretrained(folder, **options)
        hf = transformers.AutoTokenizer.from_pretrained(folder, **options)
        texts = list(TEXTS.values())
        assert_same(ours(texts, texts[::-1], **EVERYTHING), hf(texts, texts[::-1], **EVERYTHING))
        assert ours.batch_decode(hf(texts)["input_ids"]) == hf.batch_decode(hf(texts)["input_ids"])


def test_bad_input_gets_one_clear_error(tmp_path, tmp_path_factory):
    folder = save_family("roberta", tmp_path_factory.mktemp("roberta"))
    with pytest.raises(FileNotFoundError, match=rf"found no tokenizer.json in '{tmp_path}'.*saved by a transformers"):
        PreTrainedTokenizerFast.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pass exactly one of tokenizer_file"):
        PreTrainedTokenizerFast()
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"could not read {tmp_path / 'tokenizer.json'} as a tokenizers file"):
        PreTrainedTokenizerFast(tmp_path / "tokenizer.json")
    reference = transformers.AutoTokenizer.from_pretrained(folder)(["a", "a b"])["input_ids"]
    config = os.path.join(folder, "tokenizer_config.json")
    with open(config, encoding="utf-8") as f:
        fields = json.load(f)
    for field, value, expected in (("add_prefix_space", "yes", "true or false"),
                                   ("extra_special_tokens", 7, "a list of strings"),
                                   ("pad_token", 3, 'null, a string or {"content": "..."}')):
        with open(config, "w", encoding="utf-8") as f:
            json.dump({**fields, field: value}, f)
        with pytest.raises(ValueError, match=rf"{config}: field '{field}' must be {expected}"):
            PreTrainedTokenizerFast.from_pretrained(folder)
    unpadded = PreTrainedTokenizerFast(os.path.join(folder, "tokenizer.json"))  # no config: no special tokens
    assert unpadded.all_special_tokens == [] and unpadded.pad_token_id is None
    assert unpadded(["a", "a b"])["input_ids"] == reference  # the file's own template still applies
    with pytest.raises(ValueError, match="padding='longest' needs a pad token and this tokenizer has none"):
        unpadded(["a", "a b"], padding=True)


@pytest.mark.filterwarnings("ignore:.*completed a save that was interrupted")
def test_a_killed_save_leaves_the_old_tokenizer_or_the_new_one_whole(tmp_path_factory, tmp_path):
    """save_pretrained killed after each step of its folder swap: a reader finds the old three files or the new."""
    old, new = (PreTrainedTokenizerFast.from_pretrained(save_family(family, tmp_path_factory.mktemp(family)))
                for family in ("roberta", "xlm-roberta"))
    texts = list(TEXTS.values())
    versions = {"old": old(texts)["input_ids"], "new": new(texts)["input_ids"]}
    target = tmp_path / "user" / "tokenizer"
    seen = set()
    for killed in killed_after_each_step(lambda: new.save_pretrained(target),
                                         lambda: (shutil.rmtree(target.parent, ignore_errors=True),
                                                  old.save_pretrained(target))):
        found = PreTrainedTokenizerFast.from_pretrained(target)(texts)["input_ids"]
        assert found in versions.values(), "a mix of two saves"
        seen.add("new" if found == versions["new"] else "old")
        assert killed or found == versions["new"]
    assert seen == {"old", "new"}
