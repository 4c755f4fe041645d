"""``bertfast bench --task sentence-embedding --corpus FILE``: embedding a corpus, bertfast against the libraries
users pick for it, in one run.

Every peer is built the way its documentation recommends, embeds the whole corpus once untimed and is checked
against sentence-transformers' fp32 vectors (fp32: min cosine >= FP32_MIN_COSINE; int8: >= INT8_MIN_COSINE) before
it is timed; a peer that cannot run here is reported with the reason, never replaced by another. The peers live in
``bertfast.bench.corpus_peers``.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bertfast.bench.report import cpu_info, cpu_name, machine_slug

# the corpus shipped in the checkout (benchmarks/data/license-corpus.SOURCE.md says where it comes from)
DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                              "benchmarks", "data", "license-corpus.txt")
FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99


def load_corpus(path: str | None) -> list[str]:
    """The texts of a corpus file: one per line (UTF-8), blank lines skipped; ``None``: the shipped corpus."""
    path = DEFAULT_CORPUS if path is None else path
    if not os.path.isfile(path):
        hint = "it ships in the checkout's benchmarks/data/" if path == DEFAULT_CORPUS else "give a text file"
        raise FileNotFoundError(f"--corpus {path}: no such file ({hint}; one text per line)")
    try:
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise ValueError(f"--corpus {path}: not UTF-8 text (byte {e.start}); save it as UTF-8, one text per line") \
            from None
    if not texts:
        raise ValueError(f"--corpus {path}: no texts in it (one text per line)")
    return texts


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """(N, H) x (N, H) -> the smallest cosine of a row with the reference's row."""
    dot = (vectors * reference).sum(axis=1)
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
    return float((dot / np.maximum(norms, 1e-12)).min())


@dataclass
class PeerResult:
    peer: str
    precision: str  # "float32" / "int8"
    status: str  # "ok", "wrong" (outside its cosine rule: not timed), "unavailable"
    reason: str | None = None
    min_cosine: float | None = None
    seconds: float | None = None
    sentences_per_s: float | None = None
    tokens_per_s: float | None = None
    ratio_to_bertfast: float | None = None  # this peer's sentences/s over bertfast fp32's (> 1: the peer is faster)


def check_and_time(peer: Any, texts: list[str], tokens: int, reference: np.ndarray) -> PeerResult:
    """Embed ``texts`` once (the parity check against ``reference``), then once more timed."""
    rule = INT8_MIN_COSINE if peer.precision == "int8" else FP32_MIN_COSINE
    cosine = min_cosine(np.asarray(peer.encode(texts), dtype=np.float32), reference)
    if cosine < rule:
        return PeerResult(peer.name, peer.precision, "wrong", f"min cosine {cosine:.5f} < {rule}", cosine)
    start = time.perf_counter()
    peer.encode(texts)
    seconds = time.perf_counter() - start
    return PeerResult(peer.name, peer.precision, "ok", None, cosine, seconds, len(texts) / seconds, tokens / seconds)


def add_ratios(results: list[PeerResult]) -> None:
    base = next((r for r in results if r.peer == "bertfast" and r.status == "ok"), None)
    for r in results:
        if base is not None and r.sentences_per_s is not None:
            r.ratio_to_bertfast = r.sentences_per_s / base.sentences_per_s


def table(model: str, results: list[PeerResult]) -> list[str]:
    """Rows of at most 120 characters: peer, precision, sentences/s, tokens/s, ratio to bertfast, min cosine."""
    lines = [f"{model}:", f"  {'peer':<34} {'prec':<7} {'sent/s':>9} {'tok/s':>10} {'vs bertfast':>11} {'min cos':>8}"]
    for r in results:
        if r.status != "ok":
            lines.append(f"  {r.peer:<34} {r.precision:<7} {r.status.upper()}: {r.reason}"[:120])
            continue
        ratio = "-" if r.ratio_to_bertfast is None else f"{r.ratio_to_bertfast:.2f}x"
        lines.append(f"  {r.peer:<34} {r.precision:<7} {r.sentences_per_s:>9,.1f} {r.tokens_per_s:>10,.0f} "
                     f"{ratio:>11} {r.min_cosine:>8.5f}")
    return lines


def as_json(results: list[PeerResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def run_model(model: str, folder: str, texts: list[str], scratch: str) -> list[PeerResult]:
    """Every peer on ``folder``: prepared, checked against sentence-transformers fp32, timed, released."""
    from bertfast.bench.corpus_peers import SentenceTransformersPeer, peers

    reference_model = SentenceTransformersPeer()
    reference_model.prepare(folder, scratch)
    reference = np.asarray(reference_model.encode(texts), dtype=np.float32)
    tokens = sum(len(ids) for ids in reference_model.model.tokenizer(
        texts, truncation=True, max_length=reference_model.model.max_seq_length)["input_ids"])
    del reference_model
    results = []
    for peer in peers():
        reason = peer.available()
        if reason is None:
            try:
                peer.prepare(folder, scratch)
                result = check_and_time(peer, texts, tokens, reference)
            except Exception as e:  # reported, the run goes on
                result = PeerResult(peer.name, peer.precision, "failed", f"{type(e).__name__}: {e}".splitlines()[0])
        else:
            result = PeerResult(peer.name, peer.precision, "unavailable", reason)
        print(table(model, [result])[-1], flush=True)
        results.append(result)
        del peer
    add_ratios(results)
    return results


def every_kth(texts: list[str], most: int | None) -> list[str]:
    """At most ``most`` texts spread over the whole corpus (its mix of lengths kept)."""
    if most is None or most >= len(texts):
        return texts
    step = len(texts) / most
    return [texts[int(i * step)] for i in range(most)]


def run(corpus: str | None, most: int | None, out_dir: str) -> dict[str, Any]:
    """The corpus benchmark on all-MiniLM-L6-v2 and bert-base shapes; prints the tables, writes <out>/corpus-*.json."""
    from bertfast.bench.corpus_peers import BERT_BASE, BERT_BASE_CONFIG, MINILM, minilm_folder, random_folder

    texts = every_kth(load_corpus(corpus), most)
    print(f"corpus benchmark: {cpu_name()} [{' '.join(sorted(cpu_info().flags))}], {os.cpu_count()} cpus, "
          f"{len(texts)} texts of {corpus or DEFAULT_CORPUS}", flush=True)
    report: dict[str, Any] = {"schema": "bertfast-bench-corpus/1", "cpu": cpu_name(),
                              "cpu_features": sorted(cpu_info().flags), "corpus": corpus or DEFAULT_CORPUS,
                              "texts": len(texts), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": {}}
    with tempfile.TemporaryDirectory(prefix="bertfast-bench-corpus-") as scratch:
        for model, folder in ((MINILM, minilm_folder), (BERT_BASE, lambda: random_folder(BERT_BASE_CONFIG, scratch,
                                                                                         "bert-base"))):
            report["models"][model] = as_json(run_model(model, folder(), texts, scratch))
    lines = [line for model, rows in report["models"].items() for line in table(model, [PeerResult(**r) for r in rows])]
    print("\n".join(lines), flush=True)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"corpus-{machine_slug(torch.device('cpu'))}-{time.strftime('%Y-%m-%d-%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}", flush=True)
    return report
