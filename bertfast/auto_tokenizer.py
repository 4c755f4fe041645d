"""AutoTokenizer: the tokenizer class of a folder, picked as transformers' AutoTokenizer picks it.

``tokenizer_config.json``'s ``tokenizer_class`` decides when it is there, else ``config.json``'s ``model_type``:
BERT's (``BertTokenizer`` / ``BertTokenizerFast``, model_type "bert") load as ``BertTokenizer``; any other folder
with a ``tokenizer.json`` as ``PreTrainedTokenizerFast``.
"""
from __future__ import annotations

import os
from typing import Any

from bertfast.fast_tokenizer import PreTrainedTokenizerFast
from bertfast.hub import read_json_object, resolve_file
from bertfast.tokenizer import BertTokenizer
from bertfast.tokenizer_base import TokenizerBase
from bertfast.tokenizer_files import CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE

MODEL_CONFIG_FILE = "config.json"
BERT_TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")  # tokenizer_class values BertTokenizer loads
BERT_MODEL_TYPES = ("bert",)  # model_type values whose folders BertTokenizer loads when tokenizer_class is absent


def _field(name_or_path: str | os.PathLike, filename: str, key: str) -> Any:
    """Field ``key`` of the JSON file ``filename`` of the folder (None when the file or the field is absent)."""
    path = resolve_file(name_or_path, filename, required=False)
    return None if path is None else read_json_object(path, "re-download it or delete it").get(key)


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(folder_or_hub_id)``: a ``BertTokenizer`` for a BERT folder, else a
    ``PreTrainedTokenizerFast`` on the folder's ``tokenizer.json``."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is not instantiated: use AutoTokenizer.from_pretrained(folder)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> TokenizerBase:
        """The tokenizer of a local directory or Hub repo id; ``kwargs`` go to the chosen class's
        ``from_pretrained``."""
        tokenizer_class = _field(name_or_path, CONFIG_FILE, "tokenizer_class")
        if tokenizer_class is None:
            is_bert = _field(name_or_path, MODEL_CONFIG_FILE, "model_type") in BERT_MODEL_TYPES
        else:
            is_bert = tokenizer_class in BERT_TOKENIZER_CLASSES
        if is_bert:
            return BertTokenizer.from_pretrained(name_or_path, **kwargs)
        if resolve_file(name_or_path, TOKENIZER_FILE, required=False) is None:
            said = (f"its {CONFIG_FILE} names tokenizer_class {tokenizer_class!r}" if tokenizer_class is not None
                    else f"neither a {CONFIG_FILE} tokenizer_class nor a {MODEL_CONFIG_FILE} model_type says BERT")
            raise FileNotFoundError(f"{str(name_or_path)!r} has no {TOKENIZER_FILE} and {said}: save the folder's "
                                    f"tokenizer with a transformers fast tokenizer (it writes {TOKENIZER_FILE}), or, "
                                    f"for a BERT {VOCAB_FILE}, load it with bertfast.BertTokenizer")
        return PreTrainedTokenizerFast.from_pretrained(name_or_path, **kwargs)


def folder_tokenizer(source: str | os.PathLike | None) -> TokenizerBase | None:
    """The tokenizer of checkpoint folder ``source``, or None where it has none (or ``source`` is not a folder)."""
    if source is None or not os.path.isdir(source):
        return None
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        return None
