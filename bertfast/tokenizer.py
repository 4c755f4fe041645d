"""BertTokenizer: a thin layer over the `tokenizers` library that matches ``transformers.BertTokenizerFast``.

The Rust ``tokenizers.Tokenizer`` does all the work; this module builds the pipeline transformers 5 builds
(BertNormalizer → BertPreTokenizer → WordPiece (unk "[UNK]", 100 chars per word at most) → ``[CLS] $A [SEP]``
/ ``[CLS] $A [SEP] $B:1 [SEP]:1`` → WordPiece decoder) and maps transformers' ``__call__`` options onto it.
Like transformers 5, it takes only the vocabulary and added tokens from a ``tokenizer.json``: the normaliser
options come from ``tokenizer_config.json`` / keyword arguments, with transformers' defaults.
Calls, decoding and the vocabulary are ``bertfast.tokenizer_base.TokenizerBase``'s.
"""
from __future__ import annotations

import json
import operator
import os
from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from bertfast.atomic import staged_files
from bertfast.hub import resolve_file
from bertfast.tokenizer_base import TokenizerBase
from bertfast.tokenizer_files import (CONFIG_FILE, OPTION_KEYS, SPECIAL_TOKENS_FILE, TOKENIZER_FILE, TOKENIZER_FILES,
                                      VOCAB_FILE, load_vocab, read_options)


class BertTokenizer(TokenizerBase):
    """BERT WordPiece tokenizer with the outputs of ``transformers.BertTokenizerFast``.

    Build it from exactly one of ``vocab_file`` (a ``vocab.txt``), ``tokenizer_file`` (a ``tokenizer.json``
    with a WordPiece model) or ``vocab`` (token → id), or use :meth:`from_pretrained`.
    ``model_max_length`` is the length ``truncation=True`` / ``padding="max_length"`` use when ``max_length``
    is None (512, where transformers would default to "no limit" for a directory without a config).
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

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
        # Every special token becomes a special added token with BERT's settings (even one a tokenizer.json
        # declares otherwise); a missing one gets a new id, as transformers does.
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
        self._set_backend(backend, specials, model_max_length, clean_up_tokenization_spaces)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, self.cls_token_id), (sep_token, self.sep_token_id)],
        )
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
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
