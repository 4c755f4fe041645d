"""BertTokenizer: a thin layer over the `tokenizers` library that matches ``transformers.BertTokenizerFast``.

The Rust ``tokenizers.Tokenizer`` does all the work; this module builds the pipeline transformers 5 builds
(BertNormalizer → BertPreTokenizer → WordPiece (unk "[UNK]", 100 chars per word at most) → ``[CLS] $A [SEP]``
/ ``[CLS] $A [SEP] $B:1 [SEP]:1`` → WordPiece decoder) and maps transformers' ``__call__`` options onto it.
Like transformers 5, it takes only the vocabulary and added tokens from a ``tokenizer.json``: the normaliser
options come from ``tokenizer_config.json`` / keyword arguments, with transformers' defaults.

The backend keeps truncation/padding as mutable state. The base backend never has any (``tokenize`` and
plain calls use it); calls that truncate or pad set both settings on a second copy, under a lock, for the
duration of the call, so calls with different options cannot leak into each other, even from several threads.
"""
from __future__ import annotations

import copy
import json
import operator
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from bertfast.atomic import staged_files
from bertfast.encoding import (ENCODING_FIELDS, BatchEncoding, TextInput, TokenIds, as_batch, as_id_rows, as_ids,
                               clean_up_tokenization, is_texts, to_tensor, unicode_error)
from bertfast.hub import resolve_file
from bertfast.tokenizer_files import (CONFIG_FILE, OPTION_KEYS, SPECIAL_TOKENS, SPECIAL_TOKENS_FILE, TOKENIZER_FILE,
                                      TOKENIZER_FILES, VOCAB_FILE, load_vocab, read_options)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
UNBOUNDED_LENGTH = int(1e20)  # transformers' LARGE_INTEGER: a model_max_length above it means "no limit"

class BertTokenizer:
    """BERT WordPiece tokenizer with the outputs of ``transformers.BertTokenizerFast``.

    Build it from exactly one of ``vocab_file`` (a ``vocab.txt``), ``tokenizer_file`` (a ``tokenizer.json``
    with a WordPiece model) or ``vocab`` (token → id), or use :meth:`from_pretrained`.
    ``model_max_length`` is the length ``truncation=True`` / ``padding="max_length"`` use when ``max_length``
    is None (512, where transformers would default to "no limit" for a directory without a config).
    """

    unk_token: str
    sep_token: str
    pad_token: str
    cls_token: str
    mask_token: str
    unk_token_id: int
    sep_token_id: int
    pad_token_id: int
    cls_token_id: int
    mask_token_id: int

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        *,
        tokenizer_file: str | os.PathLike | None = None,
        vocab: Mapping[str, int] | None = None,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = False,
        unk_token: str = "[UNK]", sep_token: str = "[SEP]", pad_token: str = "[PAD]", cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
    ) -> None:
        if sum(source is not None for source in (vocab_file, tokenizer_file, vocab)) != 1:
            raise ValueError("pass exactly one of vocab_file (vocab.txt), tokenizer_file (tokenizer.json) or vocab")
        specials = {"unk_token": unk_token, "sep_token": sep_token, "pad_token": pad_token,
                    "cls_token": cls_token, "mask_token": mask_token}
        if tokenizer_file is not None:
            try:
                backend = Tokenizer.from_file(os.fspath(tokenizer_file))
            except Exception as err:  # the Rust side raises a bare Exception for unreadable files
                raise ValueError(f"could not read {tokenizer_file} as a tokenizers file: {err}") from err
            if not isinstance(backend.model, WordPiece):
                raise ValueError(f"{tokenizer_file} holds a {type(backend.model).__name__} model; "
                                 "BertTokenizer needs a WordPiece model")
            backend.no_truncation()  # a tokenizer.json may carry its own truncation / padding: drop them
            backend.no_padding()
            if backend.token_to_id(backend.model.unk_token) is None:
                raise ValueError(f"{tokenizer_file}: its unknown-word token {backend.model.unk_token!r} is not in its "
                                 "vocabulary: add it (WordPiece fails on the first word it cannot split otherwise)")
        else:
            vocab = load_vocab(vocab_file, unk_token) if vocab is None else dict(vocab)
            backend = Tokenizer(WordPiece(vocab, unk_token=unk_token, max_input_chars_per_word=100))
        if backend.get_vocab_size(with_added_tokens=False) == 0:
            raise ValueError(f"the vocabulary of {vocab_file or tokenizer_file or 'vocab'} is empty: "
                             "a WordPiece vocabulary needs one token per line")
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                        strip_accents=strip_accents, lowercase=do_lower_case)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        # Already-present tokens are kept as they are; missing ones get new ids, as transformers does.
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
        for name, token in specials.items():
            setattr(self, name, token)
            setattr(self, f"{name}_id", backend.token_to_id(token))
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, self.cls_token_id), (sep_token, self.sep_token_id)],
        )
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
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

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> BertTokenizer:
        """Load from a local directory or a Hub repo id holding ``tokenizer.json`` (preferred) or ``vocab.txt``.

        Options are read from ``tokenizer_config.json`` and ``special_tokens_map.json`` (the latter is ignored
        when the config has ``added_tokens_decoder``, as in transformers) and overridden by ``kwargs``.
        """
        found: dict[str, str | None] = {}
        for filename in TOKENIZER_FILES:
            if filename == VOCAB_FILE and found[TOKENIZER_FILE] is not None:
                continue
            found[filename] = resolve_file(name_or_path, filename, required=False)
        if found[TOKENIZER_FILE] is None and found[VOCAB_FILE] is None:
            raise FileNotFoundError(f"found neither {TOKENIZER_FILE} nor {VOCAB_FILE} in {str(name_or_path)!r} "
                                    f"(looked in it as a local directory and as a Hugging Face Hub repo id). "
                                    f"Pass a local directory that contains {VOCAB_FILE} or {TOKENIZER_FILE}.")
        options = {**read_options(found[CONFIG_FILE], found[SPECIAL_TOKENS_FILE]), **kwargs}
        if found[TOKENIZER_FILE] is not None:
            return cls(tokenizer_file=found[TOKENIZER_FILE], **options)
        return cls(found[VOCAB_FILE], **options)

    def save_pretrained(self, directory: str | os.PathLike) -> list[str]:
        """Write ``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json`` (loadable by transformers too) in one
        swap of ``directory`` (``bertfast.atomic.staged_files``; its other files are kept): a failed or killed save
        leaves the old three, never a mix."""
        names = (TOKENIZER_FILE, VOCAB_FILE, CONFIG_FILE)
        with staged_files(directory) as staging:
            staged = [os.path.join(staging, name) for name in names]
            self._tokenizer.save(staged[0])
            vocab = sorted(self._tokenizer.get_vocab(with_added_tokens=False).items(), key=operator.itemgetter(1))
            with open(staged[1], "w", encoding="utf-8") as f:
                f.writelines(f"{token}\n" for token, _ in vocab)
            config = {"tokenizer_class": "BertTokenizer", **{key: getattr(self, key) for key in OPTION_KEYS}}
            with open(staged[2], "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, ensure_ascii=False)
        return [os.path.join(directory, name) for name in names]

    def __call__(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool | None = True,
        return_token_type_ids: bool | None = True,
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
        Returns ``input_ids``, ``token_type_ids`` and ``attention_mask`` (the last two unless switched off;
        None counts as on): lists of ints for a single example, lists of lists for a batch, or int64 tensors
        shaped (1, S) / (B, S) with ``return_tensors="pt"``.

        As transformers' fast tokenizers: ``return_special_tokens_mask`` adds ``special_tokens_mask`` (1 at
        [CLS], [SEP] and padding), ``return_offsets_mapping`` adds ``offset_mapping``: each token's (start, end)
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
        self._check_stride(stride, truncation, max_length, (3 if pairs else 2) if add_special_tokens else 0)
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
        wanted = {"token_type_ids": return_token_type_ids is not False,
                  "attention_mask": return_attention_mask is not False,
                  "special_tokens_mask": return_special_tokens_mask, "offset_mapping": return_offsets_mapping}
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

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` without special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes a str, got {type(text).__name__}")
        try:
            return self._tokenizer.encode(text, add_special_tokens=False).tokens
        except TypeError as err:  # the Rust side's complaint about a str it cannot convert
            raise (unicode_error([text]) or err) from err

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Text of a list of tokens ("##" pieces joined to the token before), as transformers' fast tokenizers."""
        if not is_texts(tokens):
            raise TypeError(f"convert_tokens_to_string takes a list/tuple of str, got {tokens!r:.80}")
        return self._tokenizer.decoder.decode(list(tokens))

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
        The ``tokenizers`` WordPiece decoder joins the pieces; ``clean_up_tokenization_spaces`` None uses the
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
        """Size of the WordPiece vocabulary without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the vocabulary with added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token → id for the whole vocabulary, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens in transformers' order (unk, sep, pad, cls, mask), without duplicates."""
        return list(dict.fromkeys(getattr(self, name) for name in SPECIAL_TOKENS))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of ``all_special_tokens``, in the same order."""
        return [self._tokenizer.token_to_id(token) for token in self.all_special_tokens]
