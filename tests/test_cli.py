"""The bertfast console script, run in-process on small checkpoints."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

import bertfast
from bertfast.cli import main


def run_json(capsys, *argv: str):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fill_mask_command_matches_the_pipeline(capsys, tiny_vocab_checkpoint):
    text = "The capital of France is [MASK]."
    result = run_json(capsys, "fill-mask", text, "--model", tiny_vocab_checkpoint, "--top-k", "3")
    expected = bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint)(text, top_k=3)
    assert [r["token_str"] for r in result] == [r["token_str"] for r in expected]
    assert main(["fill-mask", text, "--model", tiny_vocab_checkpoint, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and expected[0]["sequence"] in lines[0]


def test_nsp_and_embed_commands(capsys, tiny_vocab_checkpoint, minilm_dir):
    result = run_json(capsys, "nsp", "It rained.", "The streets were wet.", "--model", tiny_vocab_checkpoint)
    assert set(result) == {"label", "is_next_probability", "logits"} and 0 <= result["is_next_probability"] <= 1
    rows = run_json(capsys, "embed", "a cat", "a kitten", "--model", minilm_dir)
    assert [r["text"] for r in rows] == ["a cat", "a kitten"] and len(rows[0]["embedding"]) == 384
    assert main(["embed", "a cat", "a kitten", "stocks fell", "--model", minilm_dir]) == 0
    out = capsys.readouterr().out
    assert "dim=384" in out and "cosine similarity:" in out


def test_info_reads_a_checkpoint_and_falls_back_to_presets(capsys, minilm_dir, monkeypatch):
    info = run_json(capsys, "info", minilm_dir)
    assert info["config"]["hidden_size"] == 384 and info["config_source"] == "checkpoint"
    assert info["parameters"]["BertModel"] == bertfast.BertModel.from_pretrained(minilm_dir).num_parameters()

    def not_found(name, filename, **kwargs):
        raise FileNotFoundError(f"no {filename} for {name}")

    monkeypatch.setattr(bertfast.cli, "resolve_file", not_found)  # as if nothing were cached
    info = run_json(capsys, "info", "bert-base-uncased", "--offline")
    assert info["config_source"].startswith("preset") and info["config"]["hidden_size"] == 768
    assert info["parameters"]["BertModel"] == 109_482_240


def test_errors_are_messages_with_a_nonzero_exit(capsys, tiny_vocab_checkpoint, tmp_path):
    assert main(["fill-mask", "no mask here", "--model", tiny_vocab_checkpoint]) == 1
    assert "no [MASK] token" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "bertfast", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "fill-mask" in result.stdout and "info" in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.strip() == f"bertfast {bertfast.__version__}"


def test_info_of_a_preset_never_asks_the_hub(capsys, monkeypatch):
    """`bertfast info tiny` looks in the HF cache only (it used to wait ~25 s on hub retries offline)."""

    def cache_only(name, filename, local_files_only=False, **kwargs):
        assert local_files_only, f"the hub was asked for {name}/{filename}"
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: pytest.fail("the hub was probed"))
    info = run_json(capsys, "info", "tiny")
    assert info["config_source"].startswith("preset") and info["config"]["hidden_size"] == 128


def test_info_table_aligns_every_row(capsys, minilm_dir):
    """Values start in one column, also after the longest key (\"parameters, BertModel without embeddings\")."""
    assert main(["info", minilm_dir]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    columns = {re.match(r"^  \S.*?\S {2,}(?=\S)", row).end() for row in rows}  # keys hold single spaces only
    assert len(rows) >= 20 and len(columns) == 1, "\n".join(rows)
    assert any("parameters, BertModel without embeddings" in row for row in rows)


def test_pretrain_summary_prints_counts_as_integers(capsys, tmp_path, small_vocab):
    from bertfast.training.pretraining import DEMO_CORPUS

    assert main(["pretrain", "--config", "tiny", "--vocab", small_vocab, "--corpus", DEMO_CORPUS, "--steps", "1",
                 "--batch-size", "4", "--max-seq-length", "32", "--lr", "3e-5", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    rows = dict(line.split() for line in capsys.readouterr().out.splitlines()[1:])
    assert rows["tokens"].isdigit() and int(rows["tokens"]) > 4, rows  # was "tokens 2411.0000"
    assert rows["lr"] == "3e-05" and len(rows["loss"].replace(".", "")) <= 6, rows  # was "lr 0.0000"


def test_missing_weights_and_devices_are_command_line_messages(capsys, minilm_dir, tmp_path):
    """A bare encoder has no MLM head: the message names the flag, and the flag works; a device the machine lacks
    is reported before any file is read."""
    text = "The capital of France is [MASK]."
    assert main(["fill-mask", text, "--model", minilm_dir]) == 1
    assert "Pass allow_missing_weights=True (on the command line: --allow-missing-weights)" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="initialised .* weights missing from the checkpoint randomly"):
        assert main(["fill-mask", text, "--model", minilm_dir, "--allow-missing-weights", "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["embed", "a", "--model", str(tmp_path / "nothing"), "--device", "banana"]) == 1
    assert "device 'banana' is not a device name: use 'cpu' or 'cuda'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["nsp", "a", "b", "--model", str(tmp_path / "nothing"), "--device", "cuda"]) == 1
        assert "CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err


def test_usage_errors_exit_2_and_ours_exit_1_without_a_traceback():
    for argv, code in ((["fill-mask"], 2), (["info", "--bogus"], 2), (["--version", "x"], 0),
                       (["info", "/no/such/dir"], 1), (["fill-mask", "x", "--top-k", "0", "--model", "/no/dir"], 1)):
        result = subprocess.run([sys.executable, "-m", "bertfast", *argv], capture_output=True, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
        assert result.returncode == code, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        assert code == 0 or result.stderr.strip().splitlines()[-1].startswith(("bertfast", "usage: bertfast")) \
            or "error:" in result.stderr
