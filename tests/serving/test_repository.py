"""Triton Inference Server model repositories, checked against Triton's own config schema: the onnxruntime
backend for the task exports (output dims), and the Python backend (bertfast serving a checkpoint: the config,
the files, the recorded model, bad requests; it is started on the real tritonserver in tests/serving)."""
from __future__ import annotations

import json
import os
import re

import onnxruntime
import pytest
import torch
from google.protobuf import text_format
from safetensors.torch import load_file
from tritonclient.grpc import model_config_pb2

import bertfast
from bertfast.checkpoint import CheckpointError
from bertfast.serving import repository
from bertfast.export.sentence import PARAMETER_PREFIX
from bertfast.export.onnx_model import INPUT_NAMES
from bertfast.serving.repository import CHECKPOINT_DIR, MODEL_PY, write_triton_repository
from bertfast.serving.contract import contract_for
from tests.helpers import (HIDDEN_ATOL, LOGITS_ATOL, SENTENCES, assert_close, assert_umask_modes, exported,
                           sparse_encoder_folder, st_folder)


def parse(model_dir) -> model_config_pb2.ModelConfig:
    text = open(os.path.join(model_dir, "config.pbtxt"), encoding="utf-8").read()
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # Triton's own schema: unknown fields fail


def test_python_repository_config_is_the_task_contract(tmp_path, tiny_vocab_checkpoint):
    model_dir = write_triton_repository(tiny_vocab_checkpoint, tmp_path, backend="python", task="next-sentence",
                                        max_batch_size=8, instance_count=2, max_queue_delay_us=500, threads=1)
    assert model_dir == os.path.join(tmp_path, "next-sentence")
    config = parse(model_dir)
    assert (config.name, config.backend, config.max_batch_size) == ("next-sentence", "python", 8)
    string, fp32 = model_config_pb2.TYPE_STRING, model_config_pb2.TYPE_FP32
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("text", string, [1]),
                                                                            ("text_pair", string, [1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("logits", fp32, [2]), ("is_next_probability", fp32, [1]), ("label", string, [1])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)]
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    contract = contract_for("next-sentence")
    assert parameters == {"task": "next-sentence", "model": CHECKPOINT_DIR, "dtype": "float32", "device": "cpu",
                          "max_batch_tokens": "16384", "threads": "1",
                          **{f"doc.{s.name}": s.doc for s in (*contract.inputs, *contract.outputs)}}
    assert open(os.path.join(model_dir, "1", "model.py")).read() == MODEL_PY
    assert "from bertfast.serving.backend import TritonPythonModel" in MODEL_PY
    copied = os.path.join(model_dir, "1", CHECKPOINT_DIR)  # a local checkpoint travels with the repository
    assert sorted(os.listdir(copied)) == sorted(os.listdir(tiny_vocab_checkpoint))
    assert bertfast.pipeline("next-sentence", model=copied)("a", "b") == bertfast.pipeline(
        "next-sentence", model=tiny_vocab_checkpoint)("a", "b")
    assert sorted(os.listdir(tmp_path)) == ["next-sentence"]  # no temporary names left behind


def test_python_repository_records_paths_and_hub_ids_and_sizes_from_the_checkpoint(tmp_path, minilm_dir, monkeypatch):
    model_dir = write_triton_repository(minilm_dir, tmp_path, name="minilm", backend="python",
                                        task="feature-extraction", copy_checkpoint=False, device="cuda")
    config = parse(model_dir)
    assert [(o.name, list(o.dims)) for o in config.output] == [("embedding", [384])]  # hidden_size of the checkpoint
    assert config.parameters["model"].string_value == os.path.abspath(minilm_dir)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU  # from device="cuda"
    assert os.listdir(os.path.join(model_dir, "1")) == ["model.py"]
    resolved = []

    def resolve_file(name, filename):  # as if the hub had the model: no network in tests
        resolved.append(name)
        return os.path.join(minilm_dir, filename)

    monkeypatch.setattr(repository, "resolve_file", resolve_file)
    hub_dir = write_triton_repository("sentence-transformers/all-MiniLM-L6-v2", tmp_path, name="hub", backend="python",
                                      task="feature-extraction")
    assert resolved == ["sentence-transformers/all-MiniLM-L6-v2"]  # only config.json is read (for the sizes)
    assert parse(hub_dir).parameters["model"].string_value == "sentence-transformers/all-MiniLM-L6-v2"


def test_bad_python_repository_requests_are_clear_errors(tmp_path, tiny_vocab_checkpoint):
    def write(**options):
        return write_triton_repository(tiny_vocab_checkpoint, tmp_path, **options)

    with pytest.raises(ValueError, match=r"unknown Triton backend 'tensorrt'; available: \('onnxruntime', 'python'\)"):
        write(backend="tensorrt")
    with pytest.raises(TypeError, match="backend='python' needs task="):
        write(backend="python")
    with pytest.raises(TypeError, match=r"\['task'\] apply to backend='python' only"):
        write(task="fill-mask")
    with pytest.raises(ValueError, match="unknown task 'summarize'; served tasks"):
        write(backend="python", task="summarize")
    with pytest.raises(ValueError, match="Triton model name 'a b' must be letters"):
        write(backend="python", task="fill-mask", name="a b")
    with pytest.raises(ValueError, match="max_batch_size must be an int >= 1"):
        write(backend="python", task="fill-mask", max_batch_size=0)
    assert os.listdir(tmp_path) == []  # refused before anything was written
    write(backend="python", task="fill-mask")
    with pytest.raises(FileExistsError, match="fill-mask exists and is not empty"):
        write(backend="python", task="fill-mask")
    assert parse(write(backend="python", task="fill-mask", overwrite=True, max_batch_size=4)).max_batch_size == 4


def test_options_the_served_model_would_refuse_are_refused_before_writing(tmp_path, tiny_vocab_checkpoint, monkeypatch):
    def write(model=tiny_vocab_checkpoint, task="feature-extraction", **options):
        return write_triton_repository(model, tmp_path, backend="python", task=task, **options)

    with pytest.raises(ValueError, match=r"threads must be an int >= 0, got -1: pass --threads 0"):
        write(threads=-1)
    with pytest.raises(ValueError, match=r"max_batch_tokens must be an int >= 1, got 0: pass --max-batch-tokens"):
        write(max_batch_tokens=0)
    # 64 positions: the pipeline's max_length (the tokenizer's 512, at most the model's positions)
    with pytest.raises(ValueError, match=r"max_batch_tokens \(1\) must be at least the model's max_length \(64\) .*"
                                         r"pass --max-batch-tokens 64 or more"):
        write(max_batch_tokens=1)
    with pytest.raises(CheckpointError, match=r"--task question-answering: .* cannot be served for it: "
                                              r"BertForQuestionAnswering: the checkpoint has no task head"):
        write(task="question-answering")
    monkeypatch.setattr(repository, "resolve_file", lambda name, filename: pytest.fail("read a file of a hub id"))
    with pytest.raises(ValueError, match="threads must be an int >= 0"):  # a hub id: refused before it is read
        write("sentence-transformers/all-MiniLM-L6-v2", threads=-1)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    assert parse(write(max_batch_tokens=64, threads=0)).parameters["max_batch_tokens"].string_value == "64"


def settings(config) -> dict[str, str]:
    """A config's sentence-transformers parameters, without their prefix."""
    return {k.removeprefix(PARAMETER_PREFIX): v.string_value for k, v in config.parameters.items()
            if k.startswith(PARAMETER_PREFIX)}


def client_inputs(version_dir: str, params: dict[str, str], texts: list[str]) -> tuple[dict, int]:
    """What a client sends, made from the parameters alone: (the encoded texts as numpy, the prompt's tokens with
    [CLS])."""
    tokenizer = bertfast.BertTokenizer.from_pretrained(version_dir)
    prompt = json.loads(params["prompts"]).get(params["default_prompt_name"], "")
    lower = (lambda t: t.lower()) if params["do_lower_case"] == "true" else (lambda t: t)
    batch = tokenizer([lower(prompt + t) for t in texts], padding=True, truncation=True,
                      max_length=int(params["max_seq_length"]), return_tensors="pt")
    return {name: t.numpy() for name, t in batch.items()}, len(tokenizer(lower(prompt))["input_ids"]) - 1


def test_a_sentence_export_says_what_the_client_does_and_carries_the_dense_weights(tmp_path_factory, tmp_path,
                                                                                 tiny_vocab_checkpoint):
    folder = st_folder(tmp_path / "st", tiny_vocab_checkpoint, "mean", dense=True, normalize=True,
                       include_prompt=False, prompts={"query": "Find: "}, default_prompt_name="query",
                       max_seq_length=20)
    out, _ = exported(tmp_path_factory, folder, "feature-extraction")
    config = parse(write_triton_repository(out, tmp_path / "repo", name="st", kind="cpu"))
    params = settings(config)
    assert {k: params[k] for k in ("model_type", "max_seq_length", "do_lower_case", "default_prompt_name", "pooling",
                                   "include_prompt", "normalize")} == {
        "model_type": "SentenceTransformer", "max_seq_length": "20", "do_lower_case": "false",
        "default_prompt_name": "query", "pooling": "mean", "include_prompt": "false", "normalize": "true"}
    assert json.loads(params["prompts"])["query"] == "Find: "
    assert json.loads(params["dense"]) == [{"path": "2_Dense", "in_features": 32, "out_features": 24, "bias": True,
                                            "activation": "tanh"}]
    steps = config.parameters["client_steps"].string_value
    assert re.search(r"1\) prepend the default prompt 'query' .* 2\) tokenize with truncation to 20 tokens .* 3\) pool "
                     r"last_hidden_state over attention_mask: mean, leaving out the first tokens: \[CLS\] and the "
                     r"prompt's .* 4\) apply Dense 2_Dense \(32 -> 24\): tanh\(x @ W\.T \+ b\).* 5\) L2-normalise",
                     steps), steps
    version_dir = str(tmp_path / "repo" / "st" / "1")
    texts = SENTENCES + [" ".join(SENTENCES * 3)]  # the last one over 20 tokens
    batch, skip = client_inputs(version_dir, params, texts)  # the client, from the parameters alone
    session = onnxruntime.InferenceSession(os.path.join(version_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    hidden = torch.from_numpy(session.run(["last_hidden_state"], batch)[0])  # (N, S, H)
    mask = torch.from_numpy(batch["attention_mask"]).float()
    mask[:, :skip] = 0
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    dense = load_file(os.path.join(version_dir, "2_Dense", "model.safetensors"))
    client = torch.nn.functional.normalize(torch.tanh(pooled @ dense["linear.weight"].T + dense["linear.bias"]), dim=-1)
    reference = bertfast.pipeline("sentence-embedding", model=folder)(texts)
    assert_close(client, reference, HIDDEN_ATOL)
    local = bertfast.pipeline("sentence-embedding", model=version_dir, backend="onnxruntime")  # as the steps say
    assert_close(local(texts), reference, HIDDEN_ATOL)


def test_a_sparse_encoder_export_says_its_splade_pooling(tmp_path_factory, tmp_path, tiny_vocab_checkpoint):
    folder = sparse_encoder_folder(tmp_path / "splade", tiny_vocab_checkpoint, "sum", "log1p_relu", 16,
                                   prompts={"query": "query: "}, default_prompt_name="query")
    out, _ = exported(tmp_path_factory, folder, "fill-mask")
    config = parse(write_triton_repository(out, tmp_path / "repo", name="splade", kind="cpu"))
    params = settings(config)
    assert {k: params[k] for k in ("model_type", "max_seq_length", "splade_pooling", "splade_activation",
                                   "default_prompt_name")} == {
        "model_type": "SparseEncoder", "max_seq_length": "16", "splade_pooling": "sum",
        "splade_activation": "log1p_relu", "default_prompt_name": "query"}
    assert "take log(1 + relu(logits)) and log(1 + x) once more at each real token (attention_mask 1) and its sum " \
           "over the tokens" in config.parameters["client_steps"].string_value
    version_dir = str(tmp_path / "repo" / "splade" / "1")
    batch, _ = client_inputs(version_dir, params, SENTENCES)
    session = onnxruntime.InferenceSession(os.path.join(version_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    weights = torch.log1p(torch.log1p(torch.relu(torch.from_numpy(session.run(["logits"], batch)[0]))))
    client = (weights * torch.from_numpy(batch["attention_mask"])[..., None]).sum(1)  # (N, vocab)
    assert_close(client, bertfast.pipeline("sparse-embedding", model=folder)(SENTENCES, return_dense=True), LOGITS_ATOL)


# task -> (class, input dims and output dims after the implicit batch axis; -1 = dynamic); 3 labels
TASKS = {
    "text-classification": ("BertForSequenceClassification", [-1], {"logits": [3]}),
    "token-classification": ("BertForTokenClassification", [-1], {"logits": [-1, 3]}),
    "question-answering": ("BertForQuestionAnswering", [-1], {"start_logits": [-1], "end_logits": [-1]}),
    "multiple-choice": ("BertForMultipleChoice", [-1, -1], {"logits": [-1]}),
}


@pytest.mark.parametrize("task", TASKS)
def test_task_repositories_give_each_output_its_dims(task, tmp_path_factory, tmp_path, task_checkpoint):
    name, input_dims, outputs = TASKS[task]
    out, _ = exported(tmp_path_factory, task_checkpoint(name), task)
    model_dir = bertfast.write_triton_repository(out, tmp_path / "repo", name="bert", kind="cpu")
    text = (tmp_path / "repo" / "bert" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert model_dir == str(tmp_path / "repo" / "bert") and config.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (n, model_config_pb2.TYPE_INT64, input_dims) for n in INPUT_NAMES]
    assert {o.name: list(o.dims) for o in config.output} == outputs
    assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in config.output)
    assert not config.parameters and os.listdir(tmp_path / "repo" / "bert" / "1") == ["model.onnx"]  # no client steps
    assert bertfast.OnnxModel(tmp_path / "repo" / "bert" / "1" / "model.onnx").task == task


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True, ids=["022", "027"])
def test_repositories_get_the_umask_modes(tmp_path_factory, tmp_path, task_checkpoint, tiny_vocab_checkpoint, umask):
    """Both backends, the copied checkpoint included (whatever the modes of its source files)."""
    out, _ = exported(tmp_path_factory, task_checkpoint("BertForSequenceClassification"), "text-classification")
    write_triton_repository(out, tmp_path / "repo", name="onnx", kind="cpu")
    write_triton_repository(tiny_vocab_checkpoint, tmp_path / "repo", name="python", backend="python",
                            task="next-sentence")
    assert sorted(os.listdir(tmp_path / "repo")) == ["onnx", "python"]
    assert os.path.isfile(tmp_path / "repo" / "python" / "1" / CHECKPOINT_DIR / "model.safetensors")
    assert_umask_modes(tmp_path / "repo", umask)
