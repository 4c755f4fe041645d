"""Fuzz: random command lines through `bertfast`, in-process. Every one ends with exit code 0, 1 with a one-line
message, or argparse's 2; never a traceback (an exception out of main). Nothing reaches the network (HF offline)
and nothing slow runs: the sources a command would train or export from are all broken."""
from __future__ import annotations

import contextlib
import io
import shutil

import pytest
from huggingface_hub import constants as hub_constants
from hypothesis import event, given
from hypothesis import strategies as st

from bertfast.cli import main
from tests.helpers import fuzz

TEXT = st.sampled_from(["The [MASK] sat.", "no mask", "", "[MASK]", "x " * 600 + "[MASK]", "caf\udce9 [MASK]",
                        "--", "-5", "日本 [MASK] 語"])
NUMBER = st.sampled_from(["0", "-1", "1", "2", "2.5", "nan", "inf", "-inf", "1e40", "x", "", "3e-5", "True"])
DEVICE = st.sampled_from(["cpu", "cuda", "cuda:7", "banana", "mps", "", "cpu:0", "CUDA"])
DTYPE = st.sampled_from(["float32", "float16", "bf16", "fp8", "banana"])
GARBAGE = st.sampled_from(["--bogus", "-x", "--json", "--help", "--", "extra", "--top-k", "--model"])
# Mostly nothing extra, so that most command lines get past argparse to the command itself.
EXTRAS = st.sampled_from([[]] * 6 + [["--json"], ["--bogus"], ["--help"], ["extra"], ["--"], ["--model"]])


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_vocab_checkpoint, minilm_dir):
    """Paths a command line may name: real checkpoints, and missing, empty, file or broken ones."""
    root = tmp_path_factory.mktemp("cli")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a folder\n")
    (root / "one-line.txt").write_text("Only one sentence.\n")
    (root / "no-weights").mkdir()
    (root / "no-weights" / "config.json").write_text('{"hidden_size": "big"}')
    return {"good": [tiny_vocab_checkpoint, minilm_dir, "tiny", "bert-base-uncased"],
            "bad": [str(root / "missing"), str(root / "empty"), str(root / "file.txt"), str(root / "no-weights"),
                    "acme/not-cached", "", "../x", "tiny"],
            "corpus": [str(root / "missing.txt"), str(root / "file.txt"), str(root / "one-line.txt"), str(root)],
            "out": [str(root / "out"), str(root / "file.txt"), str(root / "empty"),
                    str(shutil.copytree(tiny_vocab_checkpoint, root / "model"))]}


@pytest.fixture(scope="module", autouse=True)
def offline():
    """As with HF_HUB_OFFLINE=1: a hub name is looked up in the HF cache only."""
    before, hub_constants.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE, True
    yield
    hub_constants.HF_HUB_OFFLINE = before


def optional(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """``[]`` or ``[name, value]``."""
    return st.just([]) | values.map(lambda value: [name, value])


def required(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda value: [name, value])


def flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.just(name), max_size=1)


def joined(*parts: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(*parts).map(lambda lists: [token for tokens in lists for token in tokens])


def command_lines(places) -> st.SearchStrategy[list[str]]:
    good, bad = st.sampled_from(places["good"]), st.sampled_from(places["bad"])
    extras = EXTRAS
    inference = joined(optional("--model", good | bad), optional("--device", DEVICE), optional("--dtype", DTYPE),
                       flag("--allow-missing-weights"), extras)
    numbers = st.lists(st.sampled_from(["--lr", "--weight-decay", "--max-grad-norm", "--mlm-probability",
                                        "--short-seq-prob", "--batch-size", "--max-seq-length", "--seed",
                                        "--warmup-steps", "--save-every"]).flatmap(lambda name: optional(name, NUMBER)),
                       max_size=3).map(lambda lists: [token for tokens in lists for token in tokens])
    return st.one_of(
        joined(st.just(["fill-mask"]), st.lists(TEXT, min_size=1, max_size=1), optional("--top-k", NUMBER), inference),
        joined(st.just(["nsp"]), st.lists(TEXT, min_size=2, max_size=2), inference),
        joined(st.just(["embed"]), st.lists(TEXT, min_size=1, max_size=2),
               optional("--pooling", st.sampled_from(["mean", "cls", "max"])), inference),
        joined(st.just(["info"]), st.lists(good | bad, max_size=1), flag("--offline"), flag("--json"), extras),
        joined(st.just(["pretrain"]), required("--corpus", st.sampled_from(places["corpus"])),
               required("--steps", NUMBER), required("--out", st.sampled_from(places["out"])),
               required("--config", st.sampled_from(["tiny", "huge"])) | required("--model", bad)
               | required("--resume", good | bad), optional("--vocab", good | bad), optional("--device", DEVICE),
               optional("--dtype", DTYPE), numbers, flag("--overwrite"), extras),
        joined(st.just(["export-onnx"]), st.lists(bad, min_size=1, max_size=1),
               st.lists(st.sampled_from(places["out"]), min_size=1, max_size=1),
               optional("--opset", NUMBER), optional("--task", st.sampled_from(["fill-mask", "qa", "pretraining"])),
               optional("--triton-repo", st.sampled_from(places["out"])), flag("--overwrite"), extras),
        st.lists(GARBAGE | st.sampled_from(["frobnicate", "--version", "info", "bench"]), max_size=2),
    )


@fuzz(60)
@given(data=st.data())
def test_a_command_line_exits_0_1_or_2_never_with_a_traceback(places, data):
    argv = data.draw(command_lines(places), label="argv")
    if "bench" in argv and "--help" not in argv:
        argv = ["bench", "--help"]  # the benchmark itself is slow and not under test here
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help / --version (0) and usage errors (2)
            code = e.code
    event(f"{argv[0] if argv else None} exit {code}")
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    lines = err.getvalue().strip().splitlines()
    if code == 1:
        assert lines and lines[-1].startswith(f"bertfast {argv[0]}: error: "), (argv, err.getvalue())
    if code == 2:
        assert lines and lines[-1].startswith("bertfast") and "error:" in lines[-1], (argv, err.getvalue())
