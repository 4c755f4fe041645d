"""Pretraining corpora that do not fit in memory: documents read line by line, tokenized a shard at a time (or read
back from a cache of token ids), NSP pairs drawn per shard and mixed in a bounded shuffle buffer.

Memory holds one shard of tokenized documents (``shard_documents`` documents; the last shard takes a lone
trailing document, since a NotNext partner must come from another document of the shard) and ``shuffle_buffer``
pairs, whatever the corpus size. The stream of an epoch is a function of the seed and the epoch alone (pairs and
buffer draws use ``random.Random(f"{seed}:{epoch}")``), so a data position (epoch, batch index) is restored
exactly by replaying the epoch up to it; with a cache the replay reads token ids and never tokenizes.

The cache (``cache_dir``) holds one folder per corpus content, vocabulary and shard size: ``shard-<n>.pt`` files
(token ids int32, sentence lengths, document sizes) and ``complete.json`` written last; an interrupted write
leaves no ``complete.json`` and is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from collections.abc import Iterator

import torch

from bertfast.atomic import replacing_directory
from bertfast.tokenizer import BertTokenizer
from bertfast.training.checkpoints import disk_full_message, save_torch, vocabulary_signature
from bertfast.training.pretraining import Document, SentencePair, create_nsp_pairs, tokenize_documents

COMPLETE = "complete.json"


def iter_documents(path: str | os.PathLike) -> Iterator[list[str]]:
    """``read_documents`` line by line: each document's sentences (non-empty lines), documents split by blank lines."""
    document: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    document.append(line)
                elif document:
                    yield document
                    document = []
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus {path} is not UTF-8 text: {err}") from err
    if document:
        yield document


def file_signature(path: str | os.PathLike) -> dict:
    """Size and SHA-256 of a corpus file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


class StreamingCorpus:
    """A corpus file read in shards of ``shard_documents`` tokenized documents, optionally through a token-id cache."""

    def __init__(self, path: str | os.PathLike, tokenizer: BertTokenizer, shard_documents: int = 1000,
                 cache_dir: str | os.PathLike | None = None) -> None:
        if shard_documents < 2:
            raise ValueError(f"shard_documents must be >= 2 (a NotNext pair takes segment B from another document "
                             f"of its shard), got {shard_documents}")
        self.path, self.tokenizer, self.shard_documents = os.fspath(path), tokenizer, shard_documents
        self.signature = file_signature(self.path)
        self.cache = None
        if cache_dir is not None:
            key = json.dumps([self.signature, vocabulary_signature(tokenizer), shard_documents], sort_keys=True)
            self.cache = os.path.join(os.fspath(cache_dir), hashlib.sha256(key.encode()).hexdigest()[:24])

    def _tokenized(self) -> Iterator[list[Document]]:
        group: list[list[str]] = []
        previous: list[Document] | None = None
        for document in iter_documents(self.path):
            group.append(document)
            if len(group) == self.shard_documents:
                if previous is not None:
                    yield previous
                previous, group = tokenize_documents(group, self.tokenizer), []
        last = tokenize_documents(group, self.tokenizer) if group else []
        if previous is not None and len(last) < 2:
            previous, last = previous + last, []  # a lone trailing document joins the shard before it
        for shard in (previous, last):
            if shard:
                yield shard

    def prepare(self) -> None:
        """Write the cache, one shard in memory at a time, unless it is complete already (no cache: nothing)."""
        if self.cache is None or os.path.isfile(os.path.join(self.cache, COMPLETE)):
            return
        with disk_full_message(self.cache, "--cache"), replacing_directory(self.cache) as new:
            count = 0
            for count, shard in enumerate(self._tokenized(), 1):
                _write_shard(shard, os.path.join(new, f"shard-{count - 1}.pt"))
            with open(os.path.join(new, COMPLETE), "w", encoding="utf-8") as f:
                json.dump({"shards": count, "corpus": self.signature}, f)

    def shards(self) -> Iterator[list[Document]]:
        """The tokenized shards in file order: read from the cache (``prepare`` writes it), or tokenized anew."""
        if self.cache is None:
            yield from self._tokenized()
            return
        self.prepare()
        path = os.path.join(self.cache, COMPLETE)
        try:
            with open(path, encoding="utf-8") as f:
                count = json.load(f)["shards"]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"'shards' is {count!r}, not a count")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise _damaged(path, self.cache, e) from e
        for n in range(count):
            yield _read_shard(os.path.join(self.cache, f"shard-{n}.pt"), self.cache)


def _write_shard(documents: list[Document], path: str) -> None:
    sentences = [sentence for document in documents for sentence in document]
    save_torch({"ids": torch.tensor([t for s in sentences for t in s], dtype=torch.int32),
                "sentence_lengths": torch.tensor([len(s) for s in sentences], dtype=torch.int32),
                "document_sentences": torch.tensor([len(d) for d in documents], dtype=torch.int32)}, path)


def _damaged(path: str, cache: str, error: Exception) -> ValueError:
    return ValueError(f"token cache file {path} is damaged ({type(error).__name__}: {error}): delete the folder "
                      f"{cache}, and the next run writes it again")


def _read_shard(path: str, cache: str) -> list[Document]:
    try:
        data = torch.load(path, weights_only=True)
        ids, lengths, counts = (data[key].tolist() for key in ("ids", "sentence_lengths", "document_sentences"))
    except (FileNotFoundError, pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError,
            AttributeError) as e:  # missing, truncated or not a shard (an access error surfaces as itself)
        raise _damaged(path, cache, e) from e
    sentences, start = [], 0  # one conversion, then list slices
    for length in lengths:
        sentences.append(ids[start:start + length])
        start += length
    documents, start = [], 0
    for count in counts:
        documents.append(sentences[start:start + count])
        start += count
    return documents


class StreamingPairBatches:
    """The stream of global batches of a ``StreamingCorpus`` (the interface of ``PairBatches``): each shard's NSP
    pairs pass through a shuffle buffer of ``shuffle_buffer`` pairs (a full buffer emits a random pair for each
    new one; the rest, shuffled, at the end of the epoch); the incomplete last batch of an epoch is dropped."""

    def __init__(self, corpus: StreamingCorpus, batch_size: int, max_seq_length: int, short_seq_prob: float,
                 seed: int, shuffle_buffer: int = 10000) -> None:
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 pair, got {shuffle_buffer}")
        self.corpus, self.batch_size, self.max_seq_length = corpus, batch_size, max_seq_length
        self.short_seq_prob, self.seed, self.shuffle_buffer = short_seq_prob, seed, shuffle_buffer

    def pairs(self, epoch: int) -> Iterator[SentencePair]:
        rng = random.Random(f"{self.seed}:{epoch}")
        buffer: list[SentencePair] = []
        for shard in self.corpus.shards():
            for pair in create_nsp_pairs(shard, self.max_seq_length, self.short_seq_prob, rng):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(pair)
                    continue
                i = rng.randrange(len(buffer))
                yield buffer[i]
                buffer[i] = pair
        rng.shuffle(buffer)
        yield from buffer

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, int, list[SentencePair]]]:
        """(epoch, batch index, pairs) from batch ``start`` of ``epoch`` on, endlessly (earlier batches of the epoch
        are drawn and skipped, so the position is exact)."""
        while True:
            batch, index = [], 0
            for pair in self.pairs(epoch):
                batch.append(pair)
                if len(batch) == self.batch_size:
                    if index >= start:
                        yield epoch, index, batch
                    batch, index = [], index + 1
            if index == 0:
                raise ValueError(f"the corpus gives fewer sentence pairs per epoch than one global batch of "
                                 f"{self.batch_size} (per-rank batch x ranks x gradient accumulation): use a smaller "
                                 f"--batch-size, fewer ranks or a larger corpus")
            epoch, start = epoch + 1, 0
