"""Training checkpoints: swapped in whole with a manifest, never a mix after a kill, refused when damaged or
when the resumed run's data differ; the --out rule; non-finite arguments and training stopped cleanly."""
from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

import bertfast
from bertfast.atomic_recovery import WORK
from bertfast.checkpoint import CheckpointError
from bertfast.cli import main
from bertfast.training import losses as losses_module
from bertfast.training import trainer as trainer_module
from bertfast.training.checkpoints import (MANIFEST, TRAINER_STATE, corpus_signature, differences, load_trainer_state,
                                           read_manifest, verify_checkpoint)
from bertfast.training.pretraining import DEMO_CORPUS, read_documents, tokenize_documents
from bertfast.training.trainer import (PretrainingArguments, Trainer, TrainingDivergedError, build_model,
                                      run_pretraining)
from tests.helpers import PRETRAIN_QUICK, assert_umask_modes


def args(steps: int, **overrides) -> PretrainingArguments:
    return PretrainingArguments(steps=steps, **{**PRETRAIN_QUICK, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, small_vocab) -> str:
    """A 2-step run of a tiny model (its own small vocabulary), written by run_pretraining."""
    out = tmp_path_factory.mktemp("run") / "ckpt"
    run_pretraining(DEMO_CORPUS, out, args(2), config="tiny", vocab=small_vocab)
    return str(out)


def copy_of(checkpoint: str, tmp_path) -> str:
    return str(shutil.copytree(checkpoint, tmp_path / "ckpt"))


def leftovers(path) -> list[str]:
    return [os.path.join(root, name) for root, dirs, files in os.walk(path) for name in dirs + files
            if WORK in name]


# ---------------------------------------------------------------- item 1: atomic checkpoints with a manifest

def test_a_checkpoint_has_a_manifest_of_every_file_and_no_leftovers(checkpoint):
    manifest = json.loads(open(os.path.join(checkpoint, MANIFEST)).read())
    assert manifest["step"] == 2 and manifest["data"]["arguments"]["batch_size"] == PRETRAIN_QUICK["batch_size"]
    assert set(manifest["files"]) == set(os.listdir(checkpoint)) - {MANIFEST}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", TRAINER_STATE} <= set(manifest["files"])
    assert all(entry["size"] == os.path.getsize(os.path.join(checkpoint, name))
               for name, entry in manifest["files"].items())
    assert leftovers(os.path.dirname(checkpoint)) == []


@pytest.mark.parametrize("torch_error", [None, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                                                           "9856 vs 9748")], ids=["OSError", "torch_RuntimeError"])
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_says_so(torch_error, checkpoint, tmp_path,
                                                                             monkeypatch, capsys):
    """The disk fills half way through trainer_state.pt (simulated: the write raises OSError(ENOSPC); torch raises its
    own RuntimeError while handling it, as measured on a full tmpfs). One line naming the folder, not a
    traceback; the previous checkpoint stays whole."""
    out = copy_of(checkpoint, tmp_path)
    before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}

    def torch_save_fails_half_way(state, f):
        f.write(b"PK\x03\x04 half a file")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            if torch_error is None:
                raise
            raise torch_error

    monkeypatch.setattr(trainer_module.torch, "save", torch_save_fails_half_way)
    with pytest.raises(OSError, match=rf"^no space left on {out}: the save failed, and what the folder held before is "
                                      r"kept as it was; free some space there, or point --out elsewhere$") as caught:
        run_pretraining(DEMO_CORPUS, out, args(3), resume=out)
    assert caught.value.errno == errno.ENOSPC
    assert {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)} == before
    assert leftovers(tmp_path) == []
    assert main(["pretrain", "--corpus", DEMO_CORPUS, "--steps", "3", "--batch-size", "4", "--max-seq-length", "32",
                 "--resume", out, "--out", out, "--no-progress"]) == 1
    assert capsys.readouterr().err == f"bertfast pretrain: error: {caught.value}\n"


def test_resume_refuses_weights_from_another_step(checkpoint, tmp_path):
    """Weights of step 3 beside the state of step 2 (the kill between two files the old save allowed)."""
    later = tmp_path / "later"
    run_pretraining(DEMO_CORPUS, later, args(3), resume=copy_of(checkpoint, tmp_path))
    mixed = shutil.copytree(checkpoint, tmp_path / "mixed")
    shutil.copy(later / "model.safetensors", mixed)
    with pytest.raises(CheckpointError, match=r"\(step 2\) does not match its manifest: model.safetensors changed"):
        run_pretraining(DEMO_CORPUS, mixed, args(4), resume=str(mixed))


def test_resume_refuses_a_truncated_state_with_a_message(checkpoint, tmp_path, capsys):
    out = copy_of(checkpoint, tmp_path)
    data = open(os.path.join(out, TRAINER_STATE), "rb").read()
    open(os.path.join(out, TRAINER_STATE), "wb").write(data[: len(data) // 2])
    assert main(["pretrain", "--corpus", DEMO_CORPUS, "--steps", "3", "--batch-size", "4", "--max-seq-length", "32",
                 "--resume", out, "--out", out, "--no-progress"]) == 1
    assert ("does not match its manifest: trainer_state.pt changed since the checkpoint was written"
            in capsys.readouterr().err)


def save_in_a_loop(trainer: Trainer, out: str, saved) -> None:
    """Save again and again, every weight set to the step it is saved at; report each save."""
    for step in range(1, 10 ** 9):
        trainer.step = step
        with torch.no_grad():
            for parameter in trainer.model.parameters():
                parameter.fill_(step)
        trainer.save(out)
        saved.send(step)


def test_a_kill_during_saves_leaves_the_old_or_the_new_checkpoint_never_a_mix(tmp_path, small_vocab):
    """Three processes (forked from this one: nothing to import) saving in a loop, each SIGKILLed at a random
    point after a few saves; then each folder loads whole: manifest, state and weights of one step."""
    tokenizer = bertfast.BertTokenizer(small_vocab)
    config = bertfast.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    trainer = Trainer(bertfast.BertForPreTraining(config), tokenizer,
                      tokenize_documents(read_documents(DEMO_CORPUS), tokenizer), args(10 ** 9, device="cpu"))
    fork = multiprocessing.get_context("fork")
    rng = random.Random(0)
    for run in range(3):
        out = tmp_path / f"run{run}" / "ckpt"
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(target=save_in_a_loop, args=(trainer, str(out), send), daemon=True)
        child.start()
        for _ in range(rng.randint(1, 3)):
            assert receive.poll(60), "the saving process stopped"
            receive.recv()
        time.sleep(rng.uniform(0, 0.1))  # somewhere inside a later save
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # recovering an interrupted save warns (tests/test_atomic.py checks it)
            manifest = read_manifest(out)
        verify_checkpoint(out, manifest)
        state = load_trainer_state(out, manifest)
        weights = load_file(out / "model.safetensors")
        assert state["step"] == manifest["step"] >= 1
        assert all(bool((w == manifest["step"]).all()) for w in weights.values()), "weights from another step"
        assert leftovers(out.parent) == []


# ---------------------------------------------------------------- item 2: --out onto an existing folder

def test_out_onto_an_existing_model_or_checkpoint_is_refused_unless_overwrite(checkpoint, tmp_path, capsys,
                                                                             tiny_vocab_checkpoint, small_vocab):
    model_dir = shutil.copytree(tiny_vocab_checkpoint, tmp_path / "model")
    before = sorted(os.listdir(model_dir))
    argv = ["pretrain", "--corpus", DEMO_CORPUS, "--steps", "1", "--batch-size", "4", "--max-seq-length", "32",
            "--config", "tiny", "--vocab", small_vocab, "--no-progress"]
    assert main([*argv, "--out", str(model_dir)]) == 1
    assert "already holds files (config.json, model.safetensors" in capsys.readouterr().err
    assert sorted(os.listdir(model_dir)) == before
    other = copy_of(checkpoint, tmp_path)
    assert main([*argv, "--out", other]) == 1
    assert f"already holds a checkpoint: pass --resume {other} to continue it, --overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(model_dir), "--overwrite"]) == 0
    assert read_manifest(model_dir)["step"] == 1 and TRAINER_STATE in os.listdir(model_dir)
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="holds folders"):
        run_pretraining(DEMO_CORPUS, tmp_path / "deep", args(1), config="tiny", vocab=small_vocab, overwrite=True)


# ---------------------------------------------------------------- item 4: numbers checked, divergence stopped

@pytest.mark.parametrize("field, value", [
    ("learning_rate", math.inf), ("learning_rate", math.nan), ("learning_rate", 0.0), ("learning_rate", -1e-3),
    ("learning_rate", 1e38),  # finite, but AdamW's step size overflows: no AdamW learning rate exceeds 1
    ("weight_decay", math.nan), ("weight_decay", math.inf), ("weight_decay", -0.1), ("max_grad_norm", math.nan),
    ("max_grad_norm", math.inf), ("mlm_probability", math.nan), ("short_seq_prob", math.nan), ("steps", True),
    ("steps", 2.5), ("batch_size", 0), ("seed", -1), ("warmup_steps", -1), ("save_every", 0),
    ("max_predictions_per_seq", 0), ("whole_word_mask", "yes"), ("learning_rate", "1e-3"),
])
def test_every_numeric_argument_is_checked_before_the_corpus_is_read(field, value, tmp_path):
    options = args(2)
    setattr(options, field, value)
    with pytest.raises(ValueError, match=field):
        run_pretraining(tmp_path / "no-corpus.txt", tmp_path / "out", options, config="tiny",
                        vocab=str(tmp_path / "no-vocab.txt"))
    assert not (tmp_path / "out").exists()


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")


@pytest.mark.parametrize("device, message", [
    ("banana", "'banana' is not a device name"), ("mps", "'mps' is not supported"),
    pytest.param("cuda", "CUDA is not available on this machine; use --device cpu", marks=NO_CUDA),
])
def test_the_device_is_checked_up_front(device, message):
    with pytest.raises(ValueError, match=message):
        args(2, device=device).validate()


@pytest.mark.parametrize("what", ["loss", "gradient norm"])
def test_non_finite_training_stops_and_keeps_the_last_checkpoint(what, tmp_path, monkeypatch, small_vocab):
    """A NaN loss (or an infinite gradient) at step 3 of 4, checkpoints every 2 steps: the run stops before that
    step's update, and the folder holds step 2 with finite weights."""
    sums = losses_module.pretraining_sums
    calls = []

    def poisoned(model, batch):
        out = sums(model, batch)
        calls.append(1)
        if len(calls) == 3:
            if what == "loss":
                out = out * math.nan
            else:
                next(model.parameters()).register_hook(lambda grad: grad * math.inf)
        return out

    monkeypatch.setattr(losses_module, "pretraining_sums", poisoned)
    with pytest.raises(TrainingDivergedError, match=rf"step 3: the {what} is (nan|inf) .*the last checkpoint "
                                                    r"\(step 2\) is kept\. Lower --learning-rate"):
        run_pretraining(DEMO_CORPUS, tmp_path / "out", args(4, save_every=2), config="tiny", vocab=small_vocab)
    assert read_manifest(tmp_path / "out")["step"] == 2
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


# ---------------------------------------------------------------- item 5: resume with other data or config

@pytest.mark.parametrize("change, listed", [
    (dict(batch_size=8), "batch_size: 4 -> 8"), (dict(max_seq_length=48), "max_seq_length: 32 -> 48"),
    (dict(seed=1), "seed: 0 -> 1"), (dict(mlm_probability=0.2), "mlm_probability: 0.15 -> 0.2"),
])
def test_resume_with_other_data_arguments_is_refused_saying_which(change, listed, checkpoint, tmp_path):
    out = copy_of(checkpoint, tmp_path)
    with pytest.raises(ValueError, match=rf"resuming with different data .*{listed}.*--allow-data-changes"):
        run_pretraining(DEMO_CORPUS, out, args(3, **change), resume=out)
    with pytest.warns(UserWarning, match=listed):
        history = run_pretraining(DEMO_CORPUS, out, args(3, **change), resume=out, allow_data_changes=True)
    assert len(history) == 1


def test_resume_with_another_vocabulary_or_corpus_is_refused(checkpoint, tmp_path, small_vocab):
    out = copy_of(checkpoint, tmp_path)
    smaller, lines = tmp_path / "vocab.txt", open(small_vocab).readlines()
    smaller.write_text("".join(lines[:500]))
    with pytest.raises(ValueError, match=rf"vocabulary: {len(lines)} tokens \(sha256 \w+\) -> 500 tokens"):
        run_pretraining(DEMO_CORPUS, out, args(3), resume=out, vocab=str(smaller))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(open(DEMO_CORPUS).read().split("\n\n", 1)[1])  # without its first document
    with pytest.raises(ValueError, match=r"corpus: \d+ documents.* -> \d+ documents"):
        run_pretraining(corpus, out, args(3), resume=out)


def test_resume_with_another_corpus_of_the_same_counts_is_refused(checkpoint, tmp_path, small_vocab):
    """The words of every sentence in reverse order: as many documents, sentences and tokens, other token ids (the
    check compared the counts alone)."""
    out = copy_of(checkpoint, tmp_path)
    corpus = tmp_path / "reversed.txt"
    corpus.write_text("\n".join(" ".join(reversed(line.split())) for line in open(DEMO_CORPUS).read().split("\n")))
    tokenizer = bertfast.BertTokenizer(small_vocab)
    old, new = (corpus_signature(tokenize_documents(read_documents(path), tokenizer)) for path in (DEMO_CORPUS, corpus))
    assert {k: v for k, v in old.items() if k != "sha256"} == {k: v for k, v in new.items() if k != "sha256"}
    with pytest.raises(ValueError, match=rf"corpus: {old['documents']} documents, .* \(sha256 {old['sha256'][:12]}\) "
                                         rf"-> .* \(sha256 {new['sha256'][:12]}\)"):
        run_pretraining(corpus, out, args(3), resume=out)
    assert len(run_pretraining(DEMO_CORPUS, out, args(3), resume=out)) == 1  # the same corpus resumes


def test_a_manifest_without_the_corpus_digest_compares_the_counts():
    """Checkpoints written before the digest existed still resume on the same corpus, and refuse another count."""
    counts = {"documents": 3, "sentences": 9, "tokens": 80}
    assert differences({"corpus": counts}, {"corpus": {**counts, "sha256": "ab" * 32}}) == []
    assert differences({"corpus": counts}, {"corpus": {**counts, "tokens": 81, "sha256": "ab" * 32}}) == [
        "corpus: 3 documents, 9 sentences, 80 tokens -> 3 documents, 9 sentences, 81 tokens (sha256 abababababab)"]


def test_resume_into_a_model_with_another_config_says_what_changed(checkpoint, tmp_path):
    tokenizer = bertfast.BertTokenizer.from_pretrained(checkpoint)
    config = bertfast.BertConfig.from_json_file(os.path.join(checkpoint, "config.json"))
    config.num_hidden_layers += 1
    trainer = Trainer(bertfast.BertForPreTraining(config), tokenizer,
                      tokenize_documents(read_documents(DEMO_CORPUS), tokenizer), args(3))
    with pytest.raises(ValueError, match=r"config differs from the checkpoint's .*num_hidden_layers: 2 -> 3"):
        trainer.load_state(checkpoint)


def test_a_trainer_may_train_on_into_the_folder_it_saved(tmp_path, small_vocab):
    tokenizer = bertfast.BertTokenizer(small_vocab)
    trainer = Trainer(build_model(tokenizer, config="tiny"), tokenizer,
                      tokenize_documents(read_documents(DEMO_CORPUS), tokenizer), args(1))
    trainer.train(tmp_path / "out")
    trainer.args.steps = 2
    assert len(trainer.train(tmp_path / "out")) == 1 and read_manifest(tmp_path / "out")["step"] == 2


def test_a_checkpoint_gets_the_umask_modes(tmp_path, small_vocab, umask):
    run_pretraining(DEMO_CORPUS, tmp_path / "ckpt", args(1), config="tiny", vocab=small_vocab)
    assert {MANIFEST, TRAINER_STATE, "model.safetensors"} <= set(os.listdir(tmp_path / "ckpt"))
    assert_umask_modes(tmp_path / "ckpt", umask)
