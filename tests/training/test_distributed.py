"""Data parallel pretraining: torchrun with 2 gloo ranks equals one process on the same global batch (loss curve and
final weights, also across a resume), gradient accumulation equals a larger batch, the data a step sees does not
depend on the number of ranks, and options that cannot work together are refused."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import bertfast
from bertfast.training.distributed import Distributed, example_seed
from bertfast.training.pretraining import DEMO_CORPUS, PairBatches, read_documents, tokenize_documents
from bertfast.training.trainer import PretrainingArguments, Trainer, run_pretraining
from tests.helpers import REPO_ROOT, TINY

RTOL = 1e-5  # losses and weights, relative: max |a - b| / max |b|
STEPS = 4


@pytest.fixture(scope="module")
def no_dropout_config(tmp_path_factory) -> str:
    """A tiny config.json with dropout off, so runs that differ only in how a batch is split compute the same."""
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps({**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return str(path)


def arguments(**overrides) -> dict:
    return {**dict(steps=STEPS, batch_size=4, max_seq_length=32, learning_rate=1e-3, warmup_steps=1, seed=3,
                   device="cpu", progress=False), **overrides}


def read_log(path) -> list[float]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["loss"] for line in f]


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-30)).item()


def weight_difference(a: str, b: str) -> float:
    """The largest relative difference between the weights of two checkpoint folders, over every tensor but the
    attention key biases: their gradient is zero in exact arithmetic (softmax over the keys is invariant to them),
    so they receive rounding noise, which Adam normalises into steps of the learning rate's size in a random
    direction; they are checked to stay within that bound instead."""
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert set(wa) == set(wb)
    keys = [name for name in wb if name.endswith("key.bias")]
    assert keys and all((wa[name] - wb[name]).abs().max() <= 2 * 1e-3 * STEPS for name in keys)
    return max(relative(wa[name], wb[name]) for name in wb if name not in keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int, *args: str) -> None:
    """``torchrun --nproc_per_node ranks -m bertfast ARGS`` on this checkout, bounded in time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "bertfast", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=str(REPO_ROOT))
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_ranks_equal_one_process_on_the_same_global_batch_across_a_resume(tmp_path, no_dropout_config,
                                                                                     small_vocab):
    """1 process x batch 4 for 4 steps == torchrun 2 ranks x batch 2 for 2 steps, resumed (both ranks) to 4."""
    single = tmp_path / "single"
    history = run_pretraining(DEMO_CORPUS, single, PretrainingArguments(**arguments()), config=no_dropout_config,
                              vocab=small_vocab)
    ddp, log = str(tmp_path / "ddp"), str(tmp_path / "ddp.jsonl")
    common = ["--corpus", DEMO_CORPUS, "--out", ddp, "--batch-size", "2", "--max-seq-length", "32", "--lr", "1e-3",
              "--warmup-steps", "1", "--seed", "3", "--device", "cpu", "--no-progress", "--log-file", log]
    torchrun(2, "pretrain", "--config", no_dropout_config, "--vocab", small_vocab, "--steps", "2", *common)
    torchrun(2, "pretrain", "--resume", ddp, "--steps", str(STEPS), *common)
    losses = read_log(log)
    assert len(losses) == STEPS and len({round(x, 4) for x in losses}) > 1  # a curve, not a constant
    loss_error = relative(torch.tensor(losses, dtype=torch.float64),
                          torch.tensor([m["loss"] for m in history], dtype=torch.float64))
    weight_error = weight_difference(ddp, str(single))
    print(f"1 vs 2 ranks: losses {loss_error:.2e}, weights {weight_error:.2e} (max relative difference)")
    assert loss_error <= RTOL and weight_error <= RTOL


def test_gradient_accumulation_2_equals_a_batch_twice_as_large(tmp_path, no_dropout_config, small_vocab):
    big = run_pretraining(DEMO_CORPUS, tmp_path / "big", PretrainingArguments(**arguments(batch_size=4)),
                          config=no_dropout_config, vocab=small_vocab)
    accumulated = run_pretraining(DEMO_CORPUS, tmp_path / "accumulated",
                                  PretrainingArguments(**arguments(batch_size=2, grad_accum=2)),
                                  config=no_dropout_config, vocab=small_vocab)
    loss_error = relative(torch.tensor([m["loss"] for m in accumulated], dtype=torch.float64),
                          torch.tensor([m["loss"] for m in big], dtype=torch.float64))
    weight_error = weight_difference(str(tmp_path / "accumulated"), str(tmp_path / "big"))
    print(f"grad-accum 2 vs batch x 2: losses {loss_error:.2e}, weights {weight_error:.2e}")
    assert loss_error <= RTOL and weight_error <= RTOL
    assert [m["tokens"] for m in accumulated] == [m["tokens"] for m in big]


def test_each_rank_gets_its_own_rows_and_together_they_cover_the_global_batch():
    batch = list(range(12))
    parts = [Distributed(rank, 2).micro_batches(batch, 3) for rank in range(2)]
    assert [[[i for i, _ in m] for m in p] for p in parts] == [[[0, 1], [4, 5], [8, 9]], [[2, 3], [6, 7], [10, 11]]]
    with pytest.raises(ValueError, match="does not split into 4 equal parts"):
        Distributed(0, 2).micro_batches(batch[:10], 2)


def test_masking_depends_on_the_example_not_on_the_batch_it_is_collated_in(tokenizer, demo_documents):
    pairs = PairBatches(demo_documents, 8, 64, 0.1, seed=0).epoch(0)[0]
    collate = bertfast.PretrainingCollator(tokenizer)
    seeds = [example_seed(0, 0, i) for i in range(8)]
    whole = collate(pairs, seeds)
    halves = [collate(pairs[:4], seeds[:4]), collate(pairs[4:], seeds[4:])]
    for r in range(8):
        half, row = halves[r // 4], r % 4
        n = int(half["attention_mask"][row].sum())
        assert int(whole["attention_mask"][r].sum()) == n
        for key in ("input_ids", "labels", "token_type_ids"):
            assert torch.equal(whole[key][r, :n], half[key][row, :n]), key
    assert (whole["labels"] != -100).sum(1).min() >= 1  # every pair has predictions
    assert len(set(seeds)) == 8 and example_seed(0, 1, 0) != example_seed(0, 0, 0) != example_seed(1, 0, 0)


def test_more_ranks_than_data_is_an_error_that_says_what_to_change(small_vocab):
    tok = bertfast.BertTokenizer(small_vocab)
    documents = tokenize_documents(read_documents(DEMO_CORPUS), tok)
    model = bertfast.BertForPreTraining(bertfast.BertConfig(**{**TINY, "vocab_size": len(tok)}))
    with pytest.raises(ValueError, match=r"fewer than one global batch of 400000 \(per-rank batch x ranks x "
                                         r"gradient accumulation\): use a smaller --batch-size, fewer ranks"):
        Trainer(model, tok, documents, PretrainingArguments(**arguments(batch_size=100000, grad_accum=4)))


def test_a_partial_torchrun_environment_is_an_error_naming_the_missing_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not: launch distributed "
                                         "runs with torchrun"):
        Distributed.from_environment(torch.device("cpu"))
