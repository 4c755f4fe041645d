"""What BertTokenizer takes and gives back: the text inputs it accepts (checked, batched), the ids it decodes,
and BatchEncoding, the dict its calls return (tensors or lists, with each row's ``tokenizers.Encoding``)."""
from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import Encoding

# BatchEncoding field -> tokenizers.Encoding attribute, in transformers' order of the fields
ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask",
                   "special_tokens_mask": "special_tokens_mask", "offset_mapping": "offsets"}
TextInput = str | Sequence[str]
TokenIds = int | Sequence[int] | torch.Tensor


class BatchEncoding(dict):
    """The output of ``BertTokenizer.__call__``: a dict (so ``model(**enc)`` works) with attribute access, and the
    ``tokenizers.Encoding`` of each row in ``encodings`` (None for one built by hand), as transformers keeps them."""

    def __init__(self, data: Mapping[str, Any] | None = None, encodings: list[Encoding] | None = None) -> None:
        super().__init__(data or {})
        self.encodings = encodings

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Which text each token of row ``batch_index`` comes from: 0 (text), 1 (text_pair), None (special token)."""
        if self.encodings is None:
            raise ValueError("this BatchEncoding has no encodings: sequence_ids needs the output of a tokenizer call")
        return self.encodings[batch_index].sequence_ids

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it has {list(self)}") from None

    def to(self, device: str | torch.device, non_blocking: bool = False) -> BatchEncoding:
        """Move every tensor to ``device`` in place (lists stay lists) and return ``self``, as transformers does."""
        self.update({k: v.to(device, non_blocking=non_blocking) for k, v in self.items() if torch.is_tensor(v)})
        return self


def unicode_error(texts: Sequence[str | tuple[str, str]]) -> ValueError | None:
    """The error for a text that is not valid Unicode (a lone surrogate, e.g. from bytes decoded with
    ``errors="surrogateescape"``), which the tokenizer cannot take; None if every text is valid."""
    for index, item in enumerate(texts):
        for text in (item if isinstance(item, tuple) else (item,)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                return ValueError(f"text {index} is not valid Unicode: it holds a lone surrogate "
                                  f"{text[err.start]!r} at position {err.start}; decode the input with "
                                  f"errors='replace' (or fix its encoding) before tokenizing")
    return None


def as_ids(ids: TokenIds) -> int | list[int]:
    """An int for a scalar id, else a list of ints; accepts ints, sequences, numpy arrays and 0-/1-D tensors."""
    if torch.is_tensor(ids):
        ids = ids.tolist()
    try:
        return operator.index(ids)
    except TypeError:
        pass
    try:
        return [operator.index(i) for i in ids]
    except TypeError as err:
        raise TypeError(f"expected a token id or a flat sequence / 1-D tensor of token ids, got {ids!r:.80}") from err


def _is_row(value: Any) -> bool:
    """A sequence of ids inside a batch: a list / tuple, or a tensor / array of at least one dimension."""
    return isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) >= 1


def as_id_rows(ids: Any) -> tuple[list[list[int]], bool]:
    """(rows of ids, whether ``ids`` was a batch), by transformers 5's ``decode`` rule: a batch is a sequence whose
    first item is a sequence (a list of lists or of 1-D tensors, a 2-D tensor or array); an id, a flat sequence or
    a 1-D tensor is one row; an encoding (a mapping) stands for its ``input_ids``."""
    if isinstance(ids, Mapping):
        if "input_ids" not in ids:
            raise TypeError(f"expected a token id or a flat sequence / 1-D tensor of token ids, or an encoding with "
                            f"input_ids, got a mapping with the keys {sorted(ids)}")
        ids = ids["input_ids"]
    if hasattr(ids, "tolist") and not isinstance(ids, (list, tuple)):  # tensors, numpy arrays and scalars
        ids = ids.tolist()
    if isinstance(ids, (list, tuple)) and ids and _is_row(ids[0]):
        return [[row] if isinstance(row, int) else row for row in map(as_ids, ids)], True
    row = as_ids(ids)
    return [[row] if isinstance(row, int) else row], False


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop the spaces decoding leaves before punctuation/contractions."""
    for dirty, clean in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(dirty, clean)
    return text


def is_texts(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value)


def as_batch(text: TextInput, text_pair: TextInput | None) -> tuple[list[str | tuple[str, str]], bool]:
    """Validate the inputs of ``__call__``; return what ``encode_batch`` takes and whether the input was a batch."""
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(f"text is a str, so text_pair must be a str or None, got {type(text_pair).__name__}")
        # transformers treats an empty text_pair like no pair at all (for a single example only).
        return ([(text, text_pair)] if text_pair else [text]), False
    if not is_texts(text):
        raise TypeError(f"text must be a str or a list/tuple of str, got {text!r:.80}")
    if text_pair is None:
        return list(text), True
    if not is_texts(text_pair):
        raise TypeError(f"text is a batch, so text_pair must be a list/tuple of str, got {text_pair!r:.80}")
    if len(text) != len(text_pair):
        raise ValueError(f"text has {len(text)} items but text_pair has {len(text_pair)}; they must match")
    return list(zip(text, text_pair)), True


def to_tensor(rows: list[list[int]]) -> torch.Tensor:
    """(B, S) int64 tensor of equal-length rows; ragged rows are an error, as in transformers."""
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"cannot build a tensor from sequences of different lengths ({min(lengths)} to "
                         f"{max(lengths)} tokens): pass padding=True (and truncation=True for inputs longer "
                         "than max_length) to get rectangular tensors")
    return torch.tensor(rows, dtype=torch.int64) if rows else torch.zeros((0, 0), dtype=torch.int64)
