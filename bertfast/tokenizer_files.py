"""The files of a tokenizer folder: their names, ``vocab.txt`` read as transformers reads it, and the options of
``tokenizer_config.json`` / ``special_tokens_map.json``, checked (every error names the file and the field)."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from bertfast.hub import read_json_object

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
TOKENIZER_FILES = (TOKENIZER_FILE, VOCAB_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE)  # what from_pretrained reads
# transformers' order of the special-token attributes (it decides all_special_tokens / all_special_ids).
SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")  # BertTokenizer's
ALL_SPECIAL_TOKENS = ("bos_token", "eos_token", *SPECIAL_TOKENS)  # every named special token, in transformers' order
OPTION_KEYS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length",
               "clean_up_tokenization_spaces", *SPECIAL_TOKENS)


def load_vocab(vocab_file: str | os.PathLike, unk_token: str = "[UNK]") -> dict[str, int]:
    """Read a WordPiece ``vocab.txt`` (one token per line, id = line number) exactly as transformers reads it. It
    must hold ``unk_token``: WordPiece gives it to every word it cannot split, and without it the first such word
    fails (an empty vocabulary is left to the caller, which names it)."""
    try:
        with open(vocab_file, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{vocab_file} is not a UTF-8 text vocabulary: {err}") from err
    vocab = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    if vocab and unk_token not in vocab:
        raise ValueError(f"{vocab_file} has no {unk_token} line, the token of unknown words (id 100 in BERT's "
                         f"vocabularies): add that line; without it the first word WordPiece cannot split fails")
    return vocab


def read_json(path: str | None) -> dict[str, Any]:
    """A JSON object from a tokenizer config file ({} for None); errors name the file."""
    return {} if path is None else read_json_object(path, "re-download it or delete it")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_token(value: Any) -> bool:
    return isinstance(value, str) or isinstance(value, Mapping) and isinstance(value.get("content"), str)


# What each option read from a config file must be, and how to say it.
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "do_lower_case": (_is_bool, "true or false"), "tokenize_chinese_chars": (_is_bool, "true or false"),
    "clean_up_tokenization_spaces": (_is_bool, "true or false"),
    "strip_accents": (lambda v: v is None or _is_bool(v), "true, false or null"),
    "model_max_length": (lambda v: isinstance(v, (int, float)) and not _is_bool(v) and v >= 1, "a number >= 1"),
    **dict.fromkeys(SPECIAL_TOKENS, (_is_token, 'a string or {"content": "..."}')),
}


def _is_token_list(value: Any) -> bool:
    return isinstance(value, (list, Mapping)) and all(map(_is_token, value.values() if isinstance(value, Mapping)
                                                           else value))


# The fields PreTrainedTokenizerFast reads: BertTokenizer's (a special token may also be null) and its own.
CONFIG_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **OPTION_CHECKS,
    **dict.fromkeys(ALL_SPECIAL_TOKENS, (lambda v: v is None or _is_token(v), 'null, a string or {"content": "..."}')),
    "add_prefix_space": (_is_bool, "true or false"), "trim_offsets": (_is_bool, "true or false"),
    "tokenizer_class": (lambda v: isinstance(v, str), "a string"),
    "model_input_names": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of strings"),
    **dict.fromkeys(("additional_special_tokens", "extra_special_tokens"),
                    (_is_token_list, 'a list of strings / {"content": "..."}, or a name -> token object')),
}


def check_options(config: Mapping[str, Any], path: str | None,
                  checks: Mapping[str, tuple[Callable[[Any], bool], str]] = OPTION_CHECKS) -> None:
    """The options of a config file have the types the tokenizer takes; errors name the file and the field."""
    for key, (valid, expected) in checks.items():
        if key in config and not valid(config[key]):
            raise ValueError(f"{path}: field {key!r} must be {expected}, got {config[key]!r}")


def _token_text(value: str | Mapping[str, Any]) -> str:
    """A special token from a config: a plain string or a serialised AddedToken ``{"content": ...}``."""
    return value["content"] if isinstance(value, Mapping) else value


def _merged_config(config_file: str | None, special_tokens_file: str | None,
                   checks: Mapping[str, tuple[Callable[[Any], bool], str]]) -> dict[str, Any]:
    """A folder's ``tokenizer_config.json`` with ``special_tokens_map.json`` over it (ignored when the config has
    ``added_tokens_decoder``, as in transformers), each file's fields checked by ``checks``."""
    config = read_json(config_file)
    check_options(config, config_file, checks)
    if "added_tokens_decoder" not in config:
        special = read_json(special_tokens_file)
        check_options(special, special_tokens_file, checks)
        config.update(special)
    return config


def read_options(config_file: str | None, special_tokens_file: str | None) -> dict[str, Any]:
    """BertTokenizer's options from a folder's config files (None: absent); special tokens as plain strings."""
    config = _merged_config(config_file, special_tokens_file, OPTION_CHECKS)
    options = {key: config[key] for key in OPTION_KEYS if key in config}
    options.update({key: _token_text(options[key]) for key in SPECIAL_TOKENS if key in options})
    return options


def _extra_tokens(value: Any) -> list[str]:
    """transformers' extra special tokens: a list (4.x's additional_special_tokens) or a name -> token mapping."""
    return [_token_text(token) for token in (value.values() if isinstance(value, Mapping) else value)]


def read_config(config_file: str | None, special_tokens_file: str | None) -> dict[str, Any]:
    """Every field of a folder's config files (None: absent), for ``PreTrainedTokenizerFast``: the named special
    tokens as plain strings (or None), 4.x's ``additional_special_tokens`` and 5.x's ``extra_special_tokens`` as
    one list ``extra_special_tokens``, ``tokenizer_class`` without transformers' "Fast" suffix."""
    config = _merged_config(config_file, special_tokens_file, CONFIG_CHECKS)
    config.update({key: None if config[key] is None else _token_text(config[key])
                   for key in ALL_SPECIAL_TOKENS if key in config})
    extras = [_extra_tokens(config.pop(key)) for key in ("additional_special_tokens", "extra_special_tokens")
              if key in config]
    if extras:
        config["extra_special_tokens"] = list(dict.fromkeys(token for tokens in extras for token in tokens))
    if "tokenizer_class" in config:
        config["tokenizer_class"] = config["tokenizer_class"].removesuffix("Fast")
    return config


# The tokenizer classes (tokenizer_config.json's tokenizer_class) whose calls return token_type_ids, as their
# transformers classes' model_input_names say; every other class returns input_ids and attention_mask only.
TOKEN_TYPE_CLASSES = ("BertTokenizer", "ElectraTokenizer")


def default_input_names(tokenizer_class: str | None) -> tuple[str, ...]:
    """The fields a call of a ``tokenizer_class`` tokenizer returns by default (transformers' model_input_names)."""
    if tokenizer_class in TOKEN_TYPE_CLASSES:
        return "input_ids", "token_type_ids", "attention_mask"
    return "input_ids", "attention_mask"
