"""The bertfast console script, run in-process on small checkpoints."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

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


def test_serve_writes_a_python_backend_repository_and_refuses_what_this_build_lacks(capsys, tiny_vocab_checkpoint,
                                                                                    tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    argv = ["serve", tiny_vocab_checkpoint, "--task", "fill-mask", "--write-repository", str(tmp_path),
            "--name", "mlm", "--max-batch-size", "4", "--instances", "2", "--threads", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"Triton model: {tmp_path / 'mlm'}"
    config = text_format.Parse((tmp_path / "mlm" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.backend, config.max_batch_size, config.instance_group[0].count) == ("python", 4, 2)
    assert config.parameters["threads"].string_value == "1"
    assert main(argv) == 1 and "mlm exists and is not empty" in capsys.readouterr().err
    quantizable = "quantize" in inspect.signature(bertfast.BertForMaskedLM.from_pretrained).parameters
    code = main([*argv, "--overwrite", "--quantize", "int8"])
    if quantizable:
        assert code == 0 and "quantize" in (tmp_path / "mlm" / "config.pbtxt").read_text()
    else:
        assert code == 1 and "--quantize int8 is not available in this build" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", tiny_vocab_checkpoint, "--task", "summarize"])
