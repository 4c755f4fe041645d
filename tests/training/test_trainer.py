"""Pretraining: loss and gradients vs transformers, the fused-kernel path, learning, checkpoints, resume, CLI."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch
import transformers

import bertfast
from bertfast.cli import main
from bertfast.training.pretraining import DEMO_CORPUS, PretrainingCollator, create_nsp_pairs
from bertfast.training.trainer import (TRAINER_STATE, PretrainingArguments, Trainer, build_model, evaluate, linear_schedule,
                              pretraining_loss, run_pretraining)
from bertfast_kernels.launch import triton_installed
from tests.helpers import LOGITS_ATOL, PRETRAIN_QUICK, REPO_ROOT, TINY, needs_cuda

ROOT = str(REPO_ROOT)
LOSS_RTOL = 1e-5  # loss vs transformers, relative
GRAD_RTOL = 1e-4  # every parameter's gradient, max |difference| / max |reference|

requires_triton = pytest.mark.skipif(not triton_installed(), reason="Triton is not installed")



def demo_batches(tokenizer, documents, batch_size: int, max_seq_length: int, count: int = 1, seed: int = 123):
    """Fixed masked batches of NSP pairs from the demo corpus."""
    pairs = create_nsp_pairs(documents, max_seq_length, rng=random.Random(seed))
    collate = PretrainingCollator(tokenizer, generator=torch.Generator().manual_seed(seed))
    return [collate(pairs[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


def grads_with_hf_names(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradients by transformers' parameter names: each fused qkv gradient split into query, key, value."""
    grads = {}
    for name, param in model.named_parameters():
        if ".qkv." in name:
            prefix, kind = name.rsplit(".qkv.", 1)
            parts = zip(("query", "key", "value"), param.grad.chunk(3))  # rows of qkv: query | key | value
            grads.update({f"{prefix}.{part}.{kind}": grad for part, grad in parts})
        else:
            grads[name] = param.grad
    return grads


def gradient_errors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, float]:
    """max |actual - expected| / max |expected|, per parameter. An attention key bias gets no gradient in exact
    arithmetic (softmax over the keys is invariant to it), so its rounding noise is measured against the largest
    gradient of the model instead."""
    assert set(actual) == set(expected)
    largest = max(g.abs().max().item() for g in expected.values())
    return {name: (actual[name].float() - expected[name].float()).abs().max().item()
            / (largest if name.endswith("key.bias") else expected[name].abs().max().item()) for name in expected}


# ---------------------------------------------------------------- loss and gradients vs transformers

@pytest.mark.parametrize("path", ["model_forward", "pretraining_loss"])
def test_loss_and_every_gradient_match_transformers(path, tiny_vocab_checkpoint, tokenizer, demo_documents):
    """model(**batch).loss and the trainer's loss (logits at labelled positions only), dropout off (eval)."""
    batch = demo_batches(tokenizer, demo_documents, 8, 64)[0]
    hf = transformers.BertForPreTraining.from_pretrained(tiny_vocab_checkpoint).eval()
    ours = bertfast.BertForPreTraining.from_pretrained(tiny_vocab_checkpoint).eval()
    expected = hf(**batch).loss
    actual = ours(**batch).loss if path == "model_forward" else pretraining_loss(ours, batch).loss
    expected.backward()
    actual.backward()
    assert abs(actual.item() - expected.item()) <= LOSS_RTOL * abs(expected.item())
    errors = gradient_errors(grads_with_hf_names(ours), {n: p.grad for n, p in hf.named_parameters()})
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_RTOL, f"{worst}: relative error {errors[worst]:.2e}"


def test_dropout_is_on_in_train_mode_and_off_in_eval_mode(tiny_vocab_checkpoint, tokenizer, demo_documents):
    model = bertfast.BertForPreTraining.from_pretrained(tiny_vocab_checkpoint)
    batch = demo_batches(tokenizer, demo_documents, 4, 64)[0]
    with torch.no_grad():
        model.train()
        first, second = (model(**batch).prediction_logits for _ in range(2))
        model.eval()
        third, fourth = (model(**batch).prediction_logits for _ in range(2))
    assert not torch.allclose(first, second) and torch.equal(third, fourth)


GRADIENT_SCRIPT = """
import json, sys
import torch
import bertfast
from bertfast.training.trainer import pretraining_loss

batch_path, out_path, device, config, backend = sys.argv[1:]
assert bertfast.ops.backend_for(torch.zeros(1, device=device)) == backend
torch.manual_seed(0)
model = bertfast.BertForPreTraining(bertfast.BertConfig(**json.loads(config))).to(device).eval()
batch = {k: v.to(device) for k, v in torch.load(batch_path).items()}
loss = pretraining_loss(model, batch).loss
loss.backward()
torch.save({"loss": loss.detach().cpu(), **{n: p.grad.cpu() for n, p in model.named_parameters()}}, out_path)
"""


@requires_triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_gradients_through_the_triton_kernels_match_the_torch_path(device, tmp_path):
    """One training step's gradients with BERTFAST_BACKEND=triton (the Triton interpreter on the CPU, which
    must be switched on before the kernels are defined: hence a fresh process) vs the torch reference."""
    ids = torch.randint(5, TINY["vocab_size"], (3, 13))
    mask = (torch.arange(13) < torch.tensor([[13], [9], [7]])).long()
    labels = torch.where((torch.rand(3, 13) < 0.3) & (mask == 1), ids, -100)
    labels[:, 1] = ids[:, 1]
    batch = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": (torch.arange(13) >= 5).long() * mask,
             "labels": labels, "next_sentence_label": torch.tensor([0, 1, 1])}
    torch.save(batch, tmp_path / "batch.pt")
    results = {}
    for backend in ("torch", "triton"):
        env = {**os.environ, "BERTFAST_BACKEND": backend, "PYTHONPATH": ROOT}
        if device == "cpu":
            env["TRITON_INTERPRET"] = "1"
        out = tmp_path / f"{backend}.pt"
        subprocess.run([sys.executable, "-c", GRADIENT_SCRIPT, str(tmp_path / "batch.pt"), str(out), device,
                        json.dumps(TINY), backend], env=env, cwd=ROOT, check=True, timeout=600)
        results[backend] = torch.load(out)
    errors = gradient_errors(results["triton"], results["torch"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_RTOL, f"{worst}: relative error {errors[worst]:.2e}"


def autocast_gradients(model: torch.nn.Module, batch: dict, dtype: torch.dtype | None, ours: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = pretraining_loss(model, batch).loss if ours else model(**batch).loss
    loss.backward()
    return grads_with_hf_names(model) if ours else {n: p.grad.clone() for n, p in model.named_parameters()}


def step_ms(model: torch.nn.Module, batch: dict, dtype: torch.dtype, ours: bool, repeats: int = 10) -> float:
    autocast_gradients(model, batch, dtype, ours)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        autocast_gradients(model, batch, dtype, ours)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_bert_base_autocast_step_on_the_triton_path_matches_transformers(dtype, base_checkpoint, tokenizer,
                                                                         demo_documents):
    """Half-precision gradients within 2x of transformers' own half-precision error vs its fp32 gradients."""
    batch = {k: v.cuda() for k, v in demo_batches(tokenizer, demo_documents, 32, 128)[0].items()}
    hf = transformers.BertForPreTraining.from_pretrained(base_checkpoint).cuda().eval()
    ours = bertfast.BertForPreTraining.from_pretrained(base_checkpoint, device="cuda").eval()
    assert bertfast.ops.backend_for(batch["input_ids"].float()) == "triton"
    reference = autocast_gradients(hf, batch, None, ours=False)
    hf_errors = gradient_errors(autocast_gradients(hf, batch, dtype, ours=False), reference)
    our_errors = gradient_errors(autocast_gradients(ours, batch, dtype, ours=True), reference)
    too_far = {n: (our_errors[n], hf_errors[n]) for n in reference if our_errors[n] > 2 * hf_errors[n] + 1e-3}
    assert not too_far, f"gradients further from fp32 than 2x transformers' own error: {too_far}"
    ours_ms, hf_ms = step_ms(ours, batch, dtype, ours=True), step_ms(hf, batch, dtype, ours=False)
    print(f"\nbert-base forward+backward, batch 32x128, {dtype}, {torch.cuda.get_device_name()}: "
          f"bertfast {ours_ms:.1f} ms, transformers {hf_ms:.1f} ms, speed-up {hf_ms / ours_ms:.2f}x")


# ---------------------------------------------------------------- the training loop

def test_linear_warmup_then_linear_decay():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=2.0)
    schedule, lrs = linear_schedule(optimizer, warmup_steps=2, total_steps=6), []
    for _ in range(6):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.0, 1.0, 2.0, 1.5, 1.0, 0.5])
    assert linear_schedule(optimizer, 2, 6, step=4).get_last_lr() == pytest.approx([1.0])


def test_a_tiny_model_learns_the_demo_corpus(tmp_path, tokenizer, demo_documents):
    torch.manual_seed(0)
    args = PretrainingArguments(steps=30, batch_size=16, max_seq_length=64, learning_rate=2e-3, warmup_steps=3,
                                progress=False)
    trainer = Trainer(build_model(tokenizer, config="tiny"), tokenizer, demo_documents, args)
    held_out = demo_batches(tokenizer, demo_documents, 32, 64, count=2)
    before = evaluate(trainer.model, held_out)
    history = trainer.train(tmp_path)
    after = evaluate(trainer.model, held_out)
    assert len(history) == 30 and history[0]["lr"] == 0.0 and history[3]["lr"] == pytest.approx(2e-3)
    assert after["loss"] < before["loss"] - 2.0, (before, after)
    chance = 1 / len(tokenizer)
    assert before["mlm_accuracy"] < 0.01 and after["mlm_accuracy"] > 0.05 > 1000 * chance, (before, after)
    assert all(h["tokens_per_s"] > 0 and 0 <= h["nsp_accuracy"] <= 1 for h in history)


def test_checkpoint_loads_in_bertfast_and_transformers_with_identical_outputs(tmp_path, tokenizer, demo_documents):
    torch.manual_seed(0)
    trainer = Trainer(build_model(tokenizer, config="tiny"), tokenizer, demo_documents,
                      PretrainingArguments(steps=2, **PRETRAIN_QUICK))
    trainer.train(tmp_path)
    written = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", TRAINER_STATE} <= written
    assert torch.load(tmp_path / TRAINER_STATE, weights_only=True)["step"] == 2
    text = ("The lighthouse keeper climbed the stairs.", "Fishing boats found the channel.")
    encoded = bertfast.BertTokenizer.from_pretrained(tmp_path)(*text, return_tensors="pt")
    hf_encoded = transformers.AutoTokenizer.from_pretrained(tmp_path)(*text, return_tensors="pt")
    assert all(torch.equal(encoded[k], hf_encoded[k]) for k in encoded)
    reloaded = bertfast.BertForPreTraining.from_pretrained(tmp_path)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        trained, ours, theirs = trainer.model.eval()(**encoded), reloaded(**encoded), hf(**encoded)
    saved, kept = reloaded.state_dict(), trainer.model.state_dict()
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)  # the weights, exactly
    # the outputs to float32 parity only: a loaded model may multiply with another GEMM (bertfast.cpu.gemm)
    torch.testing.assert_close(ours.prediction_logits, trained.prediction_logits, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(ours.prediction_logits, theirs.prediction_logits, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(ours.seq_relationship_logits, theirs.seq_relationship_logits, atol=LOGITS_ATOL, rtol=0)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, minilm_dir):
    """Dropout on, so the RNG states matter as much as the optimizer state and the data position."""
    vocab = os.path.join(minilm_dir, "vocab.txt")
    straight = run_pretraining(DEMO_CORPUS, tmp_path / "straight", PretrainingArguments(steps=4, **PRETRAIN_QUICK),
                               config="tiny", vocab=vocab)
    run_pretraining(DEMO_CORPUS, tmp_path / "resumed", PretrainingArguments(steps=2, **PRETRAIN_QUICK), config="tiny",
                    vocab=vocab)
    resumed = run_pretraining(DEMO_CORPUS, tmp_path / "resumed", PretrainingArguments(steps=4, **PRETRAIN_QUICK),
                              resume=str(tmp_path / "resumed"))
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight[2:]]
    first, second = (bertfast.BertForPreTraining.from_pretrained(tmp_path / name).state_dict()
                     for name in ("straight", "resumed"))
    assert all(torch.equal(first[key], second[key]) for key in first)


# ---------------------------------------------------------------- the command and bad input

def pretrain_argv(out, *extra: str) -> list[str]:
    return ["pretrain", "--corpus", DEMO_CORPUS, "--steps", "2", "--batch-size", "4", "--max-seq-length", "32",
            "--out", str(out), *extra]


def test_pretrain_command_shows_progress_and_resumes(capsys, tmp_path, minilm_dir):
    out = tmp_path / "run"
    assert main(pretrain_argv(out, "--config", "tiny", "--vocab", minilm_dir)) == 0
    captured = capsys.readouterr()
    assert all(field in captured.err for field in ("loss=", "mlm_acc=", "nsp_acc=", "tok_s="))
    assert f"checkpoint: {out}" in captured.out
    argv = pretrain_argv(out, "--resume", str(out), "--no-progress", "--json")
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps_run"] == 1
    assert {"loss", "mlm_accuracy", "nsp_accuracy", "tokens_per_s"} <= set(result["last_step"])
    assert torch.load(out / TRAINER_STATE, weights_only=True)["step"] == 3
    assert main(pretrain_argv(out, "--resume", str(out))) == 1
    assert "already at step 3: pass a larger --steps" in capsys.readouterr().err


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("case, match", [
    ("empty_corpus", "is empty: write one sentence per line"),
    ("one_sentence_documents", "no document has two sentences or more"),
    ("max_seq_length_4", r"too small for \[CLS\] A \[SEP\] B \[SEP\]"),
    ("mlm_probability_1.5", r"mlm_probability must be in \(0, 1\)"),
    ("no_vocabulary", "needs a vocabulary: pass --vocab"),
    ("checkpoint_without_tokenizer", "Or pass --vocab"),
    ("vocabulary_larger_than_model", "the tokenizer has 30522 tokens but the model's vocab_size is 99"),
    ("longer_than_positions", r"--max-seq-length \(max_seq_length\) 128 exceeds the model's max_position_embeddings: "
                              r"pass --max-seq-length 64 or less"),
    ("unknown_config", "'huge' is neither a preset"),
    ("resume_without_state", "trainer_state.pt not found"),
    ("bf16_on_cpu", "autocast, which the trainer runs on CUDA only"),
    ("two_sources", "pass exactly one of --model"),
])
def test_bad_input_is_a_clear_error(case, match, tmp_path, minilm_dir, tiny_checkpoint, tiny_vocab_checkpoint):
    corpus, source = DEMO_CORPUS, {"config": "tiny", "vocab": minilm_dir}
    args = PretrainingArguments(steps=2, **PRETRAIN_QUICK)
    if case == "empty_corpus":
        corpus = write(tmp_path / "empty.txt", "\n\n")
    elif case == "one_sentence_documents":
        corpus = write(tmp_path / "short.txt", "One.\n\nTwo.\n\nThree.\n")
    elif case == "max_seq_length_4":
        args.max_seq_length = 4
    elif case == "mlm_probability_1.5":
        args.mlm_probability = 1.5
    elif case == "no_vocabulary":
        source = {"config": "tiny"}
    elif case == "checkpoint_without_tokenizer":
        source = {"model": tiny_checkpoint}
    elif case == "vocabulary_larger_than_model":
        source = {"model": tiny_checkpoint, "vocab": minilm_dir}
    elif case == "longer_than_positions":
        source, args.max_seq_length = {"model": tiny_vocab_checkpoint}, 128
    elif case == "unknown_config":
        source = {"config": "huge", "vocab": minilm_dir}
    elif case == "resume_without_state":
        source = {"resume": tiny_vocab_checkpoint}
    elif case == "bf16_on_cpu":
        args.dtype = "bf16"
    elif case == "two_sources":
        source = {"config": "tiny", "model": tiny_vocab_checkpoint}
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_pretraining(corpus, tmp_path / "out", args, **source)


def test_command_reports_bad_input_without_a_traceback(capsys, tmp_path, minilm_dir):
    assert main(pretrain_argv(tmp_path / "out", "--config", "tiny", "--vocab", minilm_dir, "--mlm-probability",
                              "0")) == 1
    assert "bertfast pretrain: error: mlm_probability must be in (0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(pretrain_argv(tmp_path / "out"))  # none of --model / --config / --resume
