"""Streamed corpora: documents read as read_documents reads them, every pair of every shard once per epoch through the
bounded buffer, exact resume, and a token cache that spares the second run the tokenizer."""
from __future__ import annotations

import os
import random
import shutil

import pytest

import bertfast
from bertfast.training.pretraining import DEMO_CORPUS, create_nsp_pairs, read_documents, tokenize_documents
from bertfast.training.streaming import StreamingCorpus, StreamingPairBatches, iter_documents
from bertfast.training.trainer import PretrainingArguments, run_pretraining
from tests.helpers import PRETRAIN_QUICK

STREAM = dict(PRETRAIN_QUICK, device="cpu", stream=True, shard_documents=8, shuffle_buffer=16)


def test_documents_are_read_line_by_line_as_read_documents_reads_them(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n  a b \nc\n\n\n\nd\n  \ne\nf")
    assert list(iter_documents(path)) == read_documents(path) == [["a b", "c"], ["d"], ["e", "f"]]


def test_each_epoch_yields_every_pair_of_every_shard_once_through_the_bounded_buffer(small_vocab):
    tok = bertfast.BertTokenizer(small_vocab)
    corpus = StreamingCorpus(DEMO_CORPUS, tok, shard_documents=8)
    shards = list(corpus.shards())
    documents = tokenize_documents(read_documents(DEMO_CORPUS), tok)
    assert [d for shard in shards for d in shard] == documents and min(map(len, shards)) >= 2
    stream = StreamingPairBatches(corpus, 4, 32, 0.1, seed=5, shuffle_buffer=16)
    streamed = list(stream.pairs(0))
    rng = random.Random("5:0")  # the stream's draws, replayed: pairs of each shard in turn
    expected, buffered = [], 0
    for shard in shards:
        for pair in create_nsp_pairs(shard, 32, 0.1, rng):
            expected.append(pair)
            if buffered < 16:
                buffered += 1
            else:
                rng.randrange(16)
    key = lambda p: (p.tokens_a, p.tokens_b, p.next_sentence_label)  # noqa: E731
    assert sorted(map(key, streamed)) == sorted(map(key, expected)) and len(expected) > 16
    assert list(map(key, streamed)) != list(map(key, expected))  # shuffled
    assert list(map(key, stream.pairs(0))) == list(map(key, streamed))  # the same stream again
    assert list(map(key, stream.pairs(1))) != list(map(key, streamed))  # a new epoch, new pairs


def test_a_resumed_streamed_run_continues_exactly(tmp_path, small_vocab):
    """Stopped after 2 of 4 steps (warm-up 1 step: the learning rates of steps 1-2 are the same for 2 and 4 steps),
    in the middle of the first shard's buffer; dropout on."""
    whole = run_pretraining(DEMO_CORPUS, tmp_path / "whole", PretrainingArguments(steps=4, **STREAM), config="tiny",
                            vocab=small_vocab)
    run_pretraining(DEMO_CORPUS, tmp_path / "part", PretrainingArguments(steps=2, **STREAM), config="tiny",
                    vocab=small_vocab)
    rest = run_pretraining(DEMO_CORPUS, tmp_path / "part", PretrainingArguments(steps=4, **STREAM),
                           resume=str(tmp_path / "part"))
    assert [m["loss"] for m in rest] == [m["loss"] for m in whole[2:]]


def test_the_second_run_reads_the_token_cache_and_never_calls_the_tokenizer(tmp_path, small_vocab, monkeypatch):
    cache = str(tmp_path / "cache")
    args = dict(STREAM, cache=cache)
    first = run_pretraining(DEMO_CORPUS, tmp_path / "a", PretrainingArguments(steps=3, **args), config="tiny",
                            vocab=small_vocab)
    assert len(os.listdir(cache)) == 1

    def refuse(*_, **__):
        raise AssertionError("the tokenizer was called although the cache holds the corpus")

    monkeypatch.setattr(bertfast.BertTokenizer, "__call__", refuse)
    second = run_pretraining(DEMO_CORPUS, tmp_path / "b", PretrainingArguments(steps=3, **args), config="tiny",
                             vocab=small_vocab)
    assert [m["loss"] for m in second] == [m["loss"] for m in first]


def test_streaming_options_are_checked(small_vocab):
    tok = bertfast.BertTokenizer(small_vocab)
    with pytest.raises(ValueError, match="shard_documents must be >= 2"):
        StreamingCorpus(DEMO_CORPUS, tok, shard_documents=1)
    with pytest.raises(ValueError, match="shuffle_buffer must be an int >= 1"):
        PretrainingArguments(shuffle_buffer=0).validate()
    with pytest.raises(ValueError, match="fewer sentence pairs per epoch than one global batch of 100000"):
        next(StreamingPairBatches(StreamingCorpus(DEMO_CORPUS, tok), 100000, 32, 0.1, 0)())
    assert PretrainingArguments(cache="somewhere").stream  # a cache streams


@pytest.mark.parametrize("name", ["complete.json", "shard-0.pt"])
def test_a_damaged_token_cache_file_names_itself_and_the_fix(name, tmp_path, small_vocab):
    """A truncated complete.json was a bare "Unterminated string..." naming no file."""
    tok = bertfast.BertTokenizer(small_vocab)
    corpus = StreamingCorpus(DEMO_CORPUS, tok, shard_documents=8, cache_dir=tmp_path / "cache")
    corpus.prepare()
    path = os.path.join(corpus.cache, name)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match=rf"token cache file {path} is damaged \(.*\): delete the folder "
                                         rf"{corpus.cache}, and the next run writes it again"):
        list(corpus.shards())
    shutil.rmtree(corpus.cache)  # the fix the message gives
    assert [d for shard in corpus.shards() for d in shard] == tokenize_documents(read_documents(DEMO_CORPUS), tok)
