"""PreTrainedTokenizerFast: a tokenizer for any ``tokenizer.json`` (WordPiece, byte-level BPE, SentencePiece
Unigram), called like transformers' fast tokenizers (``bertfast.tokenizer_base.TokenizerBase``).

The file's pipeline is used as it is: normaliser, pre-tokeniser, model, post-processor (the family's template:
BERT's ``[CLS] A [SEP] B [SEP]``, RoBERTa's ``<s> A </s></s> B </s>``...) and decoder; only the truncation and
padding it may carry are dropped (calls set their own). The special tokens come from ``tokenizer_config.json`` /
``special_tokens_map.json``; ``add_prefix_space`` / ``trim_offsets`` given there or as keyword arguments are set
on the byte-level and Metaspace parts of the pipeline, as transformers' RoBERTa and XLM-R classes set them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import Tokenizer

from bertfast.atomic import staged_files
from bertfast.hub import resolve_file
from bertfast.tokenizer_base import TokenizerBase
from bertfast.tokenizer_files import (ALL_SPECIAL_TOKENS, CONFIG_FILE, SPECIAL_TOKENS_FILE, TOKENIZER_FILE,
                                      default_input_names, read_config)

NO_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER: the model_max_length of a folder that sets none
# __init__'s keyword arguments a tokenizer_config.json may hold; its other fields are kept for save_pretrained.
INIT_KEYS = ("model_max_length", "clean_up_tokenization_spaces", "model_input_names", "add_prefix_space",
             "trim_offsets", "tokenizer_class", "extra_special_tokens", *ALL_SPECIAL_TOKENS)
DROPPED_KEYS = ("added_tokens_decoder",)  # config fields a save rewrites from the tokenizer itself (tokenizer.json)


def _set_space_options(node: Any, add_prefix_space: bool | None, trim_offsets: bool | None) -> None:
    """Set the options on every ByteLevel / RobertaProcessing / Metaspace part of a serialised pipeline, in place."""
    if isinstance(node, list):
        for item in node:
            _set_space_options(item, add_prefix_space, trim_offsets)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in ("ByteLevel", "RobertaProcessing"):
        for key, value in (("add_prefix_space", add_prefix_space), ("trim_offsets", trim_offsets)):
            if value is not None and key in node:
                node[key] = value
    elif kind == "Metaspace" and add_prefix_space is not None:
        node["prepend_scheme"] = "always" if add_prefix_space else "never"
    for value in node.values():
        _set_space_options(value, add_prefix_space, trim_offsets)


class PreTrainedTokenizerFast(TokenizerBase):
    """A ``tokenizer.json`` tokenizer with the outputs of the transformers fast tokenizer of its folder.

    Build it from ``tokenizer_file`` (a ``tokenizer.json``) or ``tokenizer_object`` (a ``tokenizers.Tokenizer``,
    copied), or use :meth:`from_pretrained`. ``model_max_length`` is the length ``truncation=True`` /
    ``padding="max_length"`` use when ``max_length`` is None (no limit by default, as in transformers).
    ``model_input_names`` (default: by ``tokenizer_class``, as transformers' classes) decides whether calls return
    ``token_type_ids``. ``init_config``: further tokenizer_config.json fields, written back by ``save_pretrained``.
    """

    def __init__(
        self,
        tokenizer_file: str | os.PathLike | None = None,
        *,
        tokenizer_object: Tokenizer | None = None,
        model_max_length: int = NO_LIMIT,
        clean_up_tokenization_spaces: bool = False,
        model_input_names: Sequence[str] | None = None,
        add_prefix_space: bool | None = None,
        trim_offsets: bool | None = None,
        tokenizer_class: str | None = None,
        extra_special_tokens: Sequence[str] = (),
        bos_token: str | None = None, eos_token: str | None = None, unk_token: str | None = None,
        sep_token: str | None = None, pad_token: str | None = None, cls_token: str | None = None,
        mask_token: str | None = None,
        init_config: Mapping[str, Any] | None = None,
    ) -> None:
        if (tokenizer_file is None) == (tokenizer_object is None):
            raise ValueError("pass exactly one of tokenizer_file (a tokenizer.json) or tokenizer_object")
        source = "tokenizer_object" if tokenizer_file is None else os.fspath(tokenizer_file)
        try:
            backend = (Tokenizer.from_str(tokenizer_object.to_str()) if tokenizer_file is None
                       else Tokenizer.from_file(source))
        except Exception as err:  # the Rust side raises a bare Exception for unreadable files
            raise ValueError(f"could not read {source} as a tokenizers file: {err}") from err
        if add_prefix_space is not None or trim_offsets is not None:
            pipeline = json.loads(backend.to_str())
            for part in ("pre_tokenizer", "post_processor", "decoder"):
                _set_space_options(pipeline.get(part), add_prefix_space, trim_offsets)
            backend = Tokenizer.from_str(json.dumps(pipeline))
        backend.no_truncation()  # a tokenizer.json may carry its own truncation / padding: drop them
        backend.no_padding()
        if backend.get_vocab_size(with_added_tokens=False) == 0:
            raise ValueError(f"the vocabulary of {source} is empty: a tokenizer needs at least one token")
        specials = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "sep_token": sep_token,
                    "pad_token": pad_token, "cls_token": cls_token, "mask_token": mask_token}
        self._set_backend(backend, specials, model_max_length, clean_up_tokenization_spaces, extra_special_tokens)
        self.model_input_names = tuple(model_input_names or default_input_names(tokenizer_class))
        self.add_prefix_space = add_prefix_space
        self.trim_offsets = trim_offsets
        self.tokenizer_class = tokenizer_class
        self.init_config = {key: value for key, value in (init_config or {}).items() if key not in DROPPED_KEYS}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerFast:
        """Load from a local directory or a Hub repo id holding ``tokenizer.json``; options from its
        ``tokenizer_config.json`` / ``special_tokens_map.json`` (the latter ignored when the config has
        ``added_tokens_decoder``, as in transformers), overridden by ``kwargs`` (``__init__``'s keywords)."""
        tokenizer_file = resolve_file(name_or_path, TOKENIZER_FILE, required=False)
        if tokenizer_file is None:
            raise FileNotFoundError(f"found no {TOKENIZER_FILE} in {str(name_or_path)!r} (looked in it as a local "
                                    f"directory and as a Hugging Face Hub repo id): pass a folder saved by a "
                                    f"transformers fast tokenizer, which writes {TOKENIZER_FILE}")
        config = read_config(resolve_file(name_or_path, CONFIG_FILE, required=False),
                             resolve_file(name_or_path, SPECIAL_TOKENS_FILE, required=False))
        options = {key: config.pop(key) for key in INIT_KEYS if key in config}
        return cls(tokenizer_file, **{**options, **kwargs}, init_config=config)

    def save_pretrained(self, directory: str | os.PathLike) -> list[str]:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` (loadable by
        transformers too) in one swap of ``directory`` (``bertfast.atomic.staged_files``; its other files are
        kept): a failed or killed save leaves the old three, never a mix."""
        specials = {name: getattr(self, name) for name in ALL_SPECIAL_TOKENS if getattr(self, name) is not None}
        if self.extra_special_tokens:
            specials["extra_special_tokens"] = list(self.extra_special_tokens)
        options = {"add_prefix_space": self.add_prefix_space, "trim_offsets": self.trim_offsets}
        config = {**self.init_config, "tokenizer_class": self.tokenizer_class or type(self).__name__,
                  "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                  "model_input_names": list(self.model_input_names),
                  **{key: value for key, value in options.items() if value is not None}, **specials}
        names = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE)
        with staged_files(directory) as staging:
            self._tokenizer.save(os.path.join(staging, TOKENIZER_FILE))
            for name, content in ((CONFIG_FILE, config), (SPECIAL_TOKENS_FILE, specials)):
                with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2, ensure_ascii=False)
        return [os.path.join(directory, name) for name in names]
