"""TokenizerBase: transformers' tokenizer surface over a ``tokenizers.Tokenizer`` (the Rust library does the work).

The subclasses build the backend (``BertTokenizer``: its WordPiece pipeline; ``PreTrainedTokenizerFast``: any
``tokenizer.json`` as it is) and call :meth:`_set_backend`; everything a call does is here: ``__call__`` with
transformers' padding / truncation / overflow semantics, ``encode``, ``decode``, ``tokenize``, the ``convert_*``
methods, the vocabulary and the special tokens.

The backend keeps truncation/padding as mutable state. The base backend never has any (``tokenize`` and
plain calls use it); calls that truncate or pad set both settings on a second copy, under a lock, for the
duration of the call, so calls with different options cannot leak into each other, even from several threads.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import AddedToken, Encoding, Tokenizer

from bertfast.encoding import (ENCODING_FIELDS, BatchEncoding, TextInput, TokenIds, as_batch, as_id_rows, as_ids,
                               clean_up_tokenization, is_texts, to_tensor, unicode_error)
from bertfast.tokenizer_files import ALL_SPECIAL_TOKENS

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
UNBOUNDED_LENGTH = int(1e20)  # transformers' LARGE_INTEGER: a model_max_length above it means "no limit"


class TokenizerBase:
    """What every bertfast tokenizer does with its backend, with the outputs of transformers' fast tokenizers.

    Subclasses set ``model_input_names`` (the fields a call returns unless told otherwise) and call
    :meth:`_set_backend` at the end of their ``__init__``.
    """

    model_input_names: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")
    bos_token: str | None
    eos_token: str | None
    unk_token: str | None
    sep_token: str | None
    pad_token: str | None
    cls_token: str | None
    mask_token: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    unk_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None
    cls_token_id: int | None
    mask_token_id: int | None

    def _set_backend(self, backend: Tokenizer, specials: Mapping[str, str | None], model_max_length: int,
                     clean_up_tokenization_spaces: bool, extra_special_tokens: Sequence[str] = ()) -> None:
        """Adopt ``backend`` with the special tokens ``specials`` (name in ALL_SPECIAL_TOKENS -> token or None)
        and ``extra_special_tokens``. Those not yet among its added tokens become special added tokens (a token
        of the vocabulary keeps its id, a missing one gets a new id, as transformers does); the added tokens a
        ``tokenizer.json`` declares keep their own settings."""
        tokens = [t for t in (*specials.values(), *extra_special_tokens) if t is not None]
        added = {token.content for token in backend.get_added_tokens_decoder().values()}
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(tokens)
                                    if t not in added])
        for name in ALL_SPECIAL_TOKENS:
            token = specials.get(name)
            setattr(self, name, token)
            setattr(self, f"{name}_id", None if token is None else backend.token_to_id(token))
        self.extra_special_tokens = list(extra_special_tokens)
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._tokenizer = backend  # never given truncation or padding (see the module docstring)
        self._configurable: Tokenizer | None = None  # the copy that truncates / pads, made on first use
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle support (e.g. DataLoader workers): everything but the lock."""
        return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool | None = None,
        return_token_type_ids: bool | None = None,
        pad_to_multiple_of: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
    ) -> BatchEncoding:
        """Encode a string, a pair, or a batch of strings / pairs, with transformers' semantics.

        padding: True / "longest", "max_length", False / "do_not_pad". truncation: True / "longest_first",
        "only_first", "only_second", False / None / "do_not_truncate". ``max_length`` alone turns on
        "longest_first" truncation; None means ``model_max_length`` wherever a length is needed.
        Returns ``input_ids`` and, when switched on (None: when ``model_input_names`` holds them, as in
        transformers), ``token_type_ids`` and ``attention_mask``: lists of ints for a single example, lists of
        lists for a batch, or int64 tensors shaped (1, S) / (B, S) with ``return_tensors="pt"``.

        As transformers' fast tokenizers: ``return_special_tokens_mask`` adds ``special_tokens_mask`` (1 at
        the special tokens and padding), ``return_offsets_mapping`` adds ``offset_mapping``: each token's (start, end)
        character span in its text ((0, 0) for special tokens; (B, S, 2) as a tensor). ``return_overflowing_tokens``
        keeps what truncation cuts off as further rows (windows of ``max_length`` tokens, consecutive windows
        sharing ``stride`` tokens), always batched, with ``overflow_to_sample_mapping``: each row's input index.
        Rows keep their ``tokenizers.Encoding`` (``encodings``; ``sequence_ids(i)``), as transformers' do.
        """
        batch, is_batch = as_batch(text, text_pair)
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported: use 'pt' or None")
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        pairs = bool(batch) and isinstance(batch[0], tuple)
        specials = self.num_special_tokens_to_add(pairs) if add_special_tokens else 0
        self._check_stride(stride, truncation, max_length, specials)
        try:
            encodings = self._encode_batch(batch, add_special_tokens, padding, truncation, max_length,
                                           pad_to_multiple_of, stride)
        except BaseException as err:  # the Rust side raises a bare Exception (e.g. impossible truncations) or
            # panics (a stride as long as what truncation keeps), and its PanicException is a BaseException
            if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
                raise
            raise (unicode_error(batch) or ValueError(f"cannot encode with truncation={truncation!r}, "
                                                       f"max_length={max_length}, stride={stride}: {err}")) from err
        samples = list(range(len(encodings)))
        if return_overflowing_tokens:
            samples = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
            encodings = [window for e in encodings for window in (e, *e.overflowing)]
        wanted = {key: key in self.model_input_names if value is None else value
                  for key, value in (("token_type_ids", return_token_type_ids),
                                     ("attention_mask", return_attention_mask))}
        wanted.update({
                  "special_tokens_mask": return_special_tokens_mask, "offset_mapping": return_offsets_mapping})
        fields = {key: [getattr(e, attribute) for e in encodings] for key, attribute in ENCODING_FIELDS.items()
                  if wanted.get(key, True)}
        if return_overflowing_tokens:
            fields["overflow_to_sample_mapping"] = samples
        if return_tensors == "pt":
            return BatchEncoding({key: torch.tensor(rows) if key == "overflow_to_sample_mapping" else to_tensor(rows)
                                  for key, rows in fields.items()}, encodings)
        return BatchEncoding({key: rows if is_batch or return_overflowing_tokens else rows[0]
                              for key, rows in fields.items()}, encodings)

    @staticmethod
    def _check_stride(stride: int, truncation: str, max_length: int | None, special_tokens: int) -> None:
        """A stride shorter than what one window holds (the Rust library panics otherwise: a BaseException)."""
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0:
            raise ValueError(f"stride must be a non-negative int, got {stride!r}")
        room = 0 if truncation == "do_not_truncate" else max_length - special_tokens
        if 0 < room <= stride:
            raise ValueError(f"stride={stride} must be less than the {room} text tokens a window of max_length="
                             f"{max_length} holds (after the special tokens): lower stride or raise max_length")

    def _strategies(self, padding: bool | str, truncation: bool | str | None, max_length: int | None,
                    pad_to_multiple_of: int | None) -> tuple[str, str, int | None]:
        """Resolve the options into (padding strategy, truncation strategy, max_length) as transformers does."""
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")
        if pad_to_multiple_of == 0:
            raise ValueError("pad_to_multiple_of must be positive")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # transformers: max_length alone turns truncation on
        if isinstance(padding, bool):
            padding = "longest" if padding else "do_not_pad"
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding={padding!r} is not one of True, False, "
                             f"{', '.join(map(repr, PADDING_STRATEGIES))}")
        if padding != "do_not_pad" and self.pad_token_id is None:
            raise ValueError(f"padding={padding!r} needs a pad token and this tokenizer has none: set pad_token in "
                             "its tokenizer_config.json (or pass pad_token= to from_pretrained), or pass padding=False")
        if truncation is None or isinstance(truncation, bool):
            truncation = "longest_first" if truncation else "do_not_truncate"
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation={truncation!r} is not one of True, False, None, "
                             f"{', '.join(map(repr, TRUNCATION_STRATEGIES))}")
        if max_length is None:
            if self.model_max_length > UNBOUNDED_LENGTH:  # "no limit": transformers turns both off
                padding = "do_not_pad" if padding == "max_length" else padding
                truncation = "do_not_truncate"
            else:
                max_length = self.model_max_length
        if (truncation != "do_not_truncate" and padding != "do_not_pad" and pad_to_multiple_of is not None
                and max_length % pad_to_multiple_of != 0):
            raise ValueError(f"truncation and padding are both on but the truncation length ({max_length}) is not "
                             f"a multiple of pad_to_multiple_of ({pad_to_multiple_of})")
        return padding, truncation, max_length

    def _encode_batch(self, batch: list[str | tuple[str, str]], add_special_tokens: bool, padding: str,
                      truncation: str, max_length: int | None, pad_to_multiple_of: int | None,
                      stride: int = 0) -> list[Encoding]:
        """``encode_batch`` with resolved strategies; only the lock holder configures the second backend."""
        if padding == "do_not_pad" and truncation == "do_not_truncate":
            return self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        with self._lock:
            if self._configurable is None:
                self._configurable = copy.deepcopy(self._tokenizer)
            backend = self._configurable
            if truncation == "do_not_truncate":
                backend.no_truncation()
            else:
                backend.enable_truncation(max_length, stride=stride, strategy=truncation, direction="right")
            if padding == "do_not_pad":
                backend.no_padding()
            else:
                backend.enable_padding(direction="right", pad_id=self.pad_token_id, pad_type_id=0,
                                       pad_token=self.pad_token, pad_to_multiple_of=pad_to_multiple_of,
                                       length=max_length if padding == "max_length" else None)
            return backend.encode_batch(batch, add_special_tokens=add_special_tokens)

    @property
    def word_aware(self) -> bool:
        """Whether the vocabulary marks a word's continuing pieces ("##" of WordPiece): then a token whose text and
        span differ in length continues a word; otherwise (byte-level BPE, Unigram) only the text tells."""
        return bool(getattr(self._tokenizer.model, "continuing_subword_prefix", None))

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """The special tokens the template adds to one sequence or a pair (BERT 2 / 3, RoBERTa 2 / 4)."""
        post_processor = self._tokenizer.post_processor
        return post_processor.num_special_tokens_to_add(pair) if post_processor else 0

    def tokenize(self, text: str) -> list[str]:
        """The tokens of ``text`` without special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes a str, got {type(text).__name__}")
        try:
            return self._tokenizer.encode(text, add_special_tokens=False).tokens
        except TypeError as err:  # the Rust side's complaint about a str it cannot convert
            raise (unicode_error([text]) or err) from err

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Text of a list of tokens through the backend's decoder (WordPiece: "##" pieces joined to the token before;
        none: joined by spaces), as transformers' fast tokenizers."""
        if not is_texts(tokens):
            raise TypeError(f"convert_tokens_to_string takes a list/tuple of str, got {tokens!r:.80}")
        decoder = self._tokenizer.decoder
        return " ".join(tokens) if decoder is None else decoder.decode(list(tokens))

    def convert_ids_to_tokens(self, ids: TokenIds, skip_special_tokens: bool = False) -> str | None | list[str | None]:
        """Token of an id (None for an unknown id), or the tokens of a sequence / 1-D tensor of ids."""
        ids = as_ids(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a token (``unk_token_id`` when it is not in the vocabulary), or the ids of a list of tokens."""
        if isinstance(tokens, str):
            token_id = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        if not is_texts(tokens):
            raise TypeError(f"convert_tokens_to_ids takes a str or a list/tuple of str, got {tokens!r:.80}")
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def encode(self, text: TextInput, text_pair: TextInput | None = None, add_special_tokens: bool = True,
               padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
               stride: int = 0, return_tensors: str | None = None,
               **kwargs: Any) -> list[int] | list[list[int]] | torch.Tensor:
        """The ``input_ids`` of ``__call__`` with the same arguments (``kwargs``: its other options), as transformers'
        ``encode``: a list of ids for a text or a pair, a list of lists for a batch, a (B, S) tensor with
        ``return_tensors="pt"``."""
        return self(text, text_pair, padding=padding, truncation=truncation, max_length=max_length, stride=stride,
                    return_tensors=return_tensors, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def decode(self, token_ids: TokenIds | Sequence[TokenIds] | Mapping[str, Any], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str | list[str]:
        """Text of a sequence of ids (a list, a 1-D tensor or array, one id, or an encoding's ``input_ids``); for a
        batch (a list of sequences, a (B, S) tensor or array) a list of texts, as transformers 5's ``decode``.
        The backend's decoder joins the pieces; ``clean_up_tokenization_spaces`` None uses the
        tokenizer's setting (False unless tokenizer_config.json says otherwise, as in transformers 5)."""
        rows, batched = as_id_rows(token_ids)
        texts = self._decode_rows(rows, skip_special_tokens, clean_up_tokenization_spaces)
        return texts if batched else texts[0]

    def batch_decode(self, sequences: Sequence[TokenIds] | torch.Tensor, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """``decode`` for each row of a list of id sequences or of a (B, S) tensor or array; a flat sequence is one
        row and an empty batch gives [], as in transformers."""
        rows, batched = as_id_rows(sequences)
        if not batched and rows == [[]]:
            return []
        return self._decode_rows(rows, skip_special_tokens, clean_up_tokenization_spaces)

    def _decode_rows(self, rows: list[list[int]], skip_special_tokens: bool,
                     clean_up_tokenization_spaces: bool | None) -> list[str]:
        texts = self._tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return [clean_up_tokenization(t) for t in texts] if clean_up_tokenization_spaces else texts

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the vocabulary with added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token → id for the whole vocabulary, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens in transformers' order (bos, eos, unk, sep, pad, cls, mask, then the extra ones), those
        set only, without duplicates."""
        named = (getattr(self, name) for name in ALL_SPECIAL_TOKENS)
        return list(dict.fromkeys(t for t in (*named, *self.extra_special_tokens) if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of ``all_special_tokens``, in the same order."""
        return [self._tokenizer.token_to_id(token) for token in self.all_special_tokens]

