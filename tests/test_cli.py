"""The bertfast console script, run in-process on small checkpoints."""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
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


@pytest.mark.parametrize("command, alias", [("nsp", "next-sentence"), ("classify", "sentiment-analysis"),
                                            ("classify", "text-classification")])
def test_transformers_task_names_are_aliases_of_the_commands(capsys, tiny_vocab_checkpoint, sentiment_checkpoint,
                                                            command, alias):
    texts = ["It rained.", "The streets were wet."]
    model = tiny_vocab_checkpoint if command == "nsp" else sentiment_checkpoint
    assert run_json(capsys, alias, *texts, "--model", model) == run_json(capsys, command, *texts, "--model", model)
    with pytest.raises(SystemExit) as usage:  # the same arguments: the texts are required
        main([alias, "--model", model])
    assert usage.value.code == 2 and f"bertfast {command}: error: the following arguments are required" in (
        capsys.readouterr().err)


def test_qa_command_matches_the_pipeline(capsys, qa_checkpoint):
    question, context = "Where is the cat?", "The cat sat on the mat in the kitchen."
    options = {"top_k": 2, "max_answer_len": 4, "doc_stride": 8}
    result = run_json(capsys, "qa", question, context, "--model", qa_checkpoint, "--top-k", "2", "--max-answer-len",
                      "4", "--doc-stride", "8")
    expected = bertfast.pipeline("question-answering", model=qa_checkpoint)(question, context, **options)
    assert result == expected and len(result) == 2
    assert main(["qa", question, context, "--model", qa_checkpoint, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith(f"[{expected[0]['start']}:{expected[0]['end']}]  "
                                                 f"{expected[0]['answer']}")
    null = run_json(capsys, "qa", "How many moons does Mars have?", "Café", "--model", qa_checkpoint,
                    "--handle-impossible-answer")
    assert (null["answer"], null["start"], null["end"]) == ("", 0, 0)
    assert main(["qa", "What is it?", "\u200b", "--model", qa_checkpoint]) == 0  # characters, but no token
    assert "no answer" in capsys.readouterr().out
    assert main(["qa", "What is it?", " \t ", "--model", qa_checkpoint]) == 1  # as "" is
    assert "context 0 is empty (whitespace only)" in capsys.readouterr().err


def test_qa_command_needs_a_qa_head_unless_told_otherwise(capsys, tiny_vocab_checkpoint, qa_checkpoint):
    assert main(["qa", "Where?", "Here.", "--model", tiny_vocab_checkpoint]) == 1
    assert "has no task head" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="qa_outputs"):
        assert main(["qa", "Where?", "Here", "--model", tiny_vocab_checkpoint, "--allow-missing-weights"]) == 0
    assert "[0:4]  Here" in capsys.readouterr().out  # one context token: the only span
    assert main(["qa", "Where?", "", "--model", qa_checkpoint]) == 1
    assert "context 0 is empty" in capsys.readouterr().err


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


def broken_copy(source: str, target, config=None, weights=None) -> str:
    """A copy of checkpoint ``source`` whose config.json is edited by ``config(dict)`` and whose weights by
    ``weights(state)``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    if config is not None:
        data = json.loads((target / "config.json").read_text())
        config(data)
        (target / "config.json").write_text(json.dumps(data))
    if weights is not None:
        state = load_file(target / "model.safetensors")
        weights(state)
        save_file(state, target / "model.safetensors")
    return str(target)


def one_line_error(capsys, argv, *expected: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bertfast {argv[0]}: error: "), err
    assert all(text in err for text in expected), err


def test_a_broken_id2label_is_one_line_from_classify_and_info(capsys, sentiment_checkpoint, tmp_path):
    """It was a TypeError traceback from both."""
    for name, id2label, message in (("list", ["NEGATIVE", "NEUTRAL", "POSITIVE"], "id2label must be a non-empty dict"),
                                    ("keys", {"a": "NEGATIVE", "b": "POSITIVE"}, "id2label keys must be label ids")):
        model = broken_copy(sentiment_checkpoint, tmp_path / name,
                            config=lambda c: c.update(id2label=id2label, label2id=None))
        for argv in (["classify", "good", "--model", model], ["info", model]):
            one_line_error(capsys, argv, os.path.join(model, "config.json"), message)


def test_nan_weights_are_refused_by_classify_not_scored_nan(capsys, sentiment_checkpoint, tmp_path):
    model = broken_copy(sentiment_checkpoint, tmp_path / "nan",
                        weights=lambda s: s["classifier.weight"].__setitem__((0, 0), float("nan")))
    one_line_error(capsys, ["classify", "good", "--model", model], f"from {model}",
                   "hold NaN or infinite values: classifier.weight")


def test_an_unreadable_file_is_permission_denied_with_its_path(capsys, tiny_vocab_checkpoint, tmp_path,
                                                               monkeypatch):
    """A mode-000 file of another user was "No such file or directory" (safetensors' word for it). Tests run as root,
    who reads any file: the refusal is simulated where bertfast opens the files."""
    from bertfast import checkpoint
    from bertfast.training import finetune_data

    weights = os.path.join(tiny_vocab_checkpoint, "model.safetensors")
    train = tmp_path / "train.csv"
    train.write_text("text,label\nfine,a\nbad,b\n")

    def refusing(module, path):
        def guarded_open(file, *args, **kwargs):
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return open(file, *args, **kwargs)
        monkeypatch.setattr(module, "open", guarded_open, raising=False)

    refusing(checkpoint, weights)
    one_line_error(capsys, ["fill-mask", "a [MASK].", "--model", tiny_vocab_checkpoint],
                   f"error: permission denied: {weights} (check its permissions")
    refusing(finetune_data, train)
    one_line_error(capsys, ["finetune", "--model", tiny_vocab_checkpoint, "--train", str(train), "--eval",
                            str(train), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"],
                   f"error: permission denied: {train} (check its permissions")


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "bertfast", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "fill-mask" in result.stdout and "info" in result.stdout
    assert all(command in result.stdout for command in ("classify", "ner", "rerank"))


def embeddings(rows: list[dict]):
    return torch.tensor([r["embedding"] for r in rows])


@pytest.mark.parametrize("options, call", [
    ([], {}),
    (["--pooling", "cls", "--no-normalize"], dict(pooling="cls", normalize=False)),
    (["--pooling", "max", "--normalize"], dict(pooling="max", normalize=True)),
])
def test_embed_gives_the_python_pipelines_vectors(capsys, minilm_dir, tiny_vocab_checkpoint, options, call):
    texts = ["a cat", "a kitten sat on the mat"]
    for model in (minilm_dir, tiny_vocab_checkpoint):  # a sentence-transformers folder, a plain checkpoint
        rows = run_json(capsys, "embed", *texts, "--model", model, *options)
        expected = bertfast.pipeline("feature-extraction", model=model)(texts, **call)
        torch.testing.assert_close(embeddings(rows), expected, atol=1e-6, rtol=0)
    norms = embeddings(run_json(capsys, "embed", *texts, "--model", tiny_vocab_checkpoint)).norm(dim=-1)
    assert (norms - 1).abs().min() > 0.01  # a plain checkpoint: mean pooling, not normalised, by default


def test_max_length_and_batch_size_options_reach_the_pipeline(capsys, minilm_dir):
    text = "one two three four five six seven eight nine ten"
    rows = run_json(capsys, "embed", text, "x", "--model", minilm_dir, "--max-length", "4", "--batch-size", "1")
    expected = bertfast.pipeline("feature-extraction", model=minilm_dir, max_length=4)([text, "x"])
    torch.testing.assert_close(embeddings(rows), expected, atol=1e-6, rtol=0)
    assert (embeddings(rows)[0] - bertfast.pipeline("feature-extraction", model=minilm_dir)(text)).abs().max() > 1e-3


@pytest.fixture(scope="module")
def encoder_adapter(tmp_path_factory, tiny_vocab_checkpoint) -> str:
    """A peft LoRA adapter with random weights on the encoder of ``tiny_vocab_checkpoint``."""
    import peft
    import transformers

    path = tmp_path_factory.mktemp("adapter")
    encoder = transformers.BertModel.from_pretrained(tiny_vocab_checkpoint)
    wrapped = peft.get_peft_model(encoder, peft.LoraConfig(r=2, target_modules=["query", "value"],
                                                           init_lora_weights=False))
    with torch.no_grad():
        for param in wrapped.parameters():
            if param.requires_grad:
                param.normal_(0.0, 0.2)
    wrapped.save_pretrained(path)
    return str(path)


def test_adapter_option_on_fill_mask_nsp_and_embed(capsys, tiny_vocab_checkpoint, encoder_adapter):
    model, adapter = ["--model", tiny_vocab_checkpoint], ["--adapter", encoder_adapter]
    text = "The capital of France is [MASK]."
    for task, command, args, call in (("fill-mask", "fill-mask", [text], lambda p: p(text)),
                                      ("next-sentence", "nsp", ["It rained.", "It was wet."],
                                       lambda p: p("It rained.", "It was wet.")),
                                      ("feature-extraction", "embed", ["a cat", "a dog"],
                                       lambda p: [{"text": t, "embedding": v.tolist()}
                                                  for t, v in zip(["a cat", "a dog"], p(["a cat", "a dog"]))])):
        merged = run_json(capsys, command, *args, *model, *adapter)
        plain = run_json(capsys, command, *args, *model)
        assert merged == json.loads(json.dumps(call(bertfast.pipeline(task, model=tiny_vocab_checkpoint,
                                                                      adapter=encoder_adapter))))
        assert merged != plain
    assert main(["embed", "a cat", *model, "--adapter", tiny_vocab_checkpoint]) == 1
    assert "adapter_config.json not found" in capsys.readouterr().err


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


@pytest.mark.parametrize("options, named", [
    (["--threads", "-1"], "pass --threads 0"),
    (["--max-batch-tokens", "1"], r"max_batch_tokens \(1\) must be at least the model's max_length \(64\) so that "
                                  r"every accepted text fits in one model call: pass --max-batch-tokens 64 or more"),
    (["--task", "question-answering"], r"--task question-answering: .* cannot be served for it: .*no task head"),
], ids=["threads", "max-batch-tokens", "task"])
def test_serve_refuses_what_the_served_model_would_refuse_before_writing(capsys, tiny_vocab_checkpoint, tmp_path,
                                                                         options, named):
    argv = ["serve", tiny_vocab_checkpoint, "--task", "feature-extraction", "--write-repository", str(tmp_path),
            "--device", "cpu", *options]  # a later --task wins
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert re.match(rf"bertfast serve: error: .*{named}", captured.err), captured.err
    assert os.listdir(tmp_path) == []
