"""The bertfast console script, run in-process on small checkpoints."""
from __future__ import annotations

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


def test_classify_command_matches_the_pipeline(capsys, sentiment_checkpoint):
    texts = ["I loved it.", "Awful service, never again", "Café 東京"]
    classify = bertfast.pipeline("text-classification", model=sentiment_checkpoint)
    assert run_json(capsys, "classify", *texts, "--model", sentiment_checkpoint) == classify(texts)
    result = run_json(capsys, "classify", *texts, "--model", sentiment_checkpoint, "--top-k", "2",
                      "--text-pair", "Really.", "--function-to-apply", "sigmoid")
    assert result == classify(texts, text_pair=["Really."] * 3, top_k=2, function_to_apply="sigmoid")
    assert main(["classify", *texts, "--model", sentiment_checkpoint, "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(label in lines[0] for label in ("NEGATIVE", "NEUTRAL", "POSITIVE"))


def test_ner_command_matches_the_pipeline(capsys, ner_checkpoint):
    text = "My name is Wolfgang Amadeus and I live in Berlin, near the Café 東京."
    ner = bertfast.pipeline("token-classification", model=ner_checkpoint)
    assert run_json(capsys, "ner", text, "--model", ner_checkpoint) == ner(text)
    entities = run_json(capsys, "ner", text, "--model", ner_checkpoint, "--aggregation-strategy", "first",
                        "--ignore-labels", "I-MISC", "MISC", "--stride", "3")
    assert entities and entities == ner(text, aggregation_strategy="first", ignore_labels=["I-MISC", "MISC"])
    assert run_json(capsys, "ner", text, "--model", ner_checkpoint, "--ignore-labels") == ner(text, ignore_labels=[])
    assert main(["ner", text, "--model", ner_checkpoint, "--aggregation-strategy", "simple"]) == 0
    lines = capsys.readouterr().out.splitlines()
    groups = ner(text, aggregation_strategy="simple")
    assert len(lines) == len(groups) and text[groups[0]["start"]:groups[0]["end"]] in lines[0]


def test_rerank_command_matches_the_pipeline(capsys, cross_encoder_checkpoint):
    query, documents = "Who plays the guitar?", ["A man plays a guitar.", "Stocks fell.", "東京 in spring"]
    rerank = bertfast.pipeline("rerank", model=cross_encoder_checkpoint)
    assert run_json(capsys, "rerank", query, *documents, "--model", cross_encoder_checkpoint) == rerank(query,
                                                                                                         documents)
    result = run_json(capsys, "rerank", query, *documents, "--model", cross_encoder_checkpoint, "--top-k", "2",
                      "--return-documents", "--function-to-apply", "none")
    assert result == rerank(query, documents, top_k=2, return_documents=True, function_to_apply="none")
    assert main(["rerank", query, *documents, "--model", cross_encoder_checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and documents[rerank(query, documents)[0]["index"]] in lines[0]


def test_allow_missing_weights_gives_a_base_checkpoint_a_random_head(capsys, tiny_vocab_checkpoint):
    assert main(["classify", "a text", "--model", tiny_vocab_checkpoint]) == 1
    assert "has no task head" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="initialised 2 weights missing from the checkpoint randomly"):
        result = run_json(capsys, "classify", "a text", "--model", tiny_vocab_checkpoint, "--allow-missing-weights")
    assert result[0]["label"] in ("LABEL_0", "LABEL_1")
    with pytest.warns(UserWarning, match="missing from the checkpoint"):
        assert isinstance(run_json(capsys, "ner", "a text", "--model", tiny_vocab_checkpoint,
                                   "--allow-missing-weights"), list)
    with pytest.warns(UserWarning, match="missing from the checkpoint"):  # loads, then is refused: two labels
        assert main(["rerank", "q", "doc", "--model", tiny_vocab_checkpoint, "--allow-missing-weights"]) == 1
    assert "rerank needs a cross-encoder" in capsys.readouterr().err


def test_errors_are_messages_with_a_nonzero_exit(capsys, tiny_vocab_checkpoint, tmp_path):
    assert main(["fill-mask", "no mask here", "--model", tiny_vocab_checkpoint]) == 1
    assert "no [MASK] token" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="missing from the checkpoint"):
        assert main(["classify", "a", "--model", tiny_vocab_checkpoint, "--allow-missing-weights", "--top-k",
                     "0"]) == 1
    assert "top_k must be a positive int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "bertfast", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "fill-mask" in result.stdout and "info" in result.stdout
    assert all(command in result.stdout for command in ("classify", "ner", "rerank"))
