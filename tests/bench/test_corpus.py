"""bertfast/bench/corpus.py and corpus_peers.py: the corpus loader, the shipped corpus, and each peer's parity check
against sentence-transformers fp32 on a tiny model (skipped with its reason where the peer is not installed). No
timing is asserted."""
from __future__ import annotations

import numpy as np
import pytest

from bertfast.bench import corpus
from bertfast.bench.corpus_peers import BertfastPeer, SentenceTransformersPeer, peers, random_folder

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TEXTS = ["ok", "The licenses for most software are designed to take away your freedom to share and change it.",
         "You may convey verbatim copies of the Program's source code as you receive it, in any medium. " * 6]


def test_loader_reads_one_text_per_line_and_skips_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first text\n\n  second one  \n", encoding="utf-8")
    assert corpus.load_corpus(str(path)) == ["first text", "second one"]


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"", "no texts in it"),
                                              (b"\xff\xfe bad", "not UTF-8 text")])
def test_loader_names_the_file_and_the_fix(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=f"--corpus {path}: {message}"):
        corpus.load_corpus(str(path))


def test_the_shipped_corpus_is_thousands_of_mixed_length_texts():
    texts = corpus.load_corpus(None)
    words = [len(t.split()) for t in texts]
    assert len(texts) >= 4000 and len(set(texts)) == len(texts)
    assert min(words) >= 3 and max(words) > 200 and sorted(words)[len(words) // 2] < 40


def test_every_kth_keeps_the_spread():
    assert corpus.every_kth(list("abcdefghij"), 5) == list("acegi") and corpus.every_kth(["a"], None) == ["a"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    return random_folder(TINY, str(tmp_path_factory.mktemp("tiny-st")), "tiny")


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory) -> np.ndarray:
    peer = SentenceTransformersPeer()
    peer.prepare(tiny_folder, str(tmp_path_factory.mktemp("ref")))
    return peer.encode(TEXTS)


@pytest.mark.parametrize("peer", peers(), ids=lambda p: p.name)
def test_peer_passes_its_parity_rule_on_a_tiny_model(peer, tiny_folder, reference, tmp_path):
    reason = peer.available()
    if reason is not None:
        pytest.skip(reason)
    peer.prepare(tiny_folder, str(tmp_path))
    result = corpus.check_and_time(peer, TEXTS, tokens=100, reference=reference)
    assert result.status == "ok", result.reason
    assert result.min_cosine >= (corpus.INT8_MIN_COSINE if peer.precision == "int8" else corpus.FP32_MIN_COSINE)


def test_a_peer_outside_its_rule_is_wrong_and_not_timed(tiny_folder, reference, tmp_path):
    peer = BertfastPeer()
    peer.prepare(tiny_folder, str(tmp_path))
    shifted = reference[::-1].copy()  # another text's vector for each text
    result = corpus.check_and_time(peer, TEXTS, tokens=100, reference=shifted)
    assert result.status == "wrong" and result.seconds is None and "min cosine" in result.reason


def test_ratios_are_to_bertfast_and_table_rows_fit_120_columns():
    rows = [corpus.PeerResult("bertfast", "float32", "ok", None, 1.0, 2.0, 50.0, 900.0),
            corpus.PeerResult("ctranslate2 int8", "int8", "ok", None, 0.995, 1.0, 100.0, 1800.0),
            corpus.PeerResult("fastembed (local onnx)", "float32", "unavailable", "x" * 300)]
    corpus.add_ratios(rows)
    assert [r.ratio_to_bertfast for r in rows] == [1.0, 2.0, None]
    lines = corpus.table("tiny", rows)
    assert "2.00x" in lines[3] and "UNAVAILABLE: xxx" in lines[4] and max(map(len, lines)) <= 120
