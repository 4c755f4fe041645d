"""ONNX export: graph contract, validation on unseen shapes, optimize/fp16, Triton repository, bad input."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import time
import warnings

import onnx
import onnxruntime
import pytest
import torch
import transformers
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import bertfast
from bertfast import ops
from bertfast.atomic import recover_directory
from bertfast.cli import main
from bertfast.serving import repository as triton_repo
from bertfast.export.onnx import _write, export_onnx
from bertfast.export.validation import ExportValidationError
from bertfast.serving.repository import write_triton_repository
from bertfast.export.onnx_model import INPUT_NAMES
from tests.helpers import TINY, assert_umask_modes, padded_batch, task_batch
from tests.helpers import exported

ELEM_TYPES = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


def signature(values) -> list[tuple[str, str, list]]:
    """(name, dtype, dims) of graph inputs/outputs, a symbolic dim as its name."""
    return [(v.name, ELEM_TYPES[v.type.tensor_type.elem_type],
             [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]


def test_base_checkpoint_export_matches_pytorch_on_unseen_padded_shapes(tmp_path_factory, base_checkpoint):
    out, report = exported(tmp_path_factory, base_checkpoint, "feature-extraction")
    assert report.path == os.path.join(out, "model.onnx") and report.opset == 20
    assert report.shapes == [(1, 1), (3, 7), (5, 33), (1, 512)]
    model = onnx.load(report.path)
    assert signature(model.graph.input) == [(n, "int64", ["batch_size", "sequence_length"]) for n in INPUT_NAMES]
    assert signature(model.graph.output) == [("last_hidden_state", "float32", ["batch_size", "sequence_length", 768]),
                                             ("pooler_output", "float32", ["batch_size", 768])]
    assert {n.domain for n in model.graph.node} == {""}  # standard operators only: no Triton or custom op
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["task"], meta["opset"], meta["bertfast_version"]) == ("feature-extraction", "20", bertfast.__version__)
    torch_model = bertfast.BertModel.from_pretrained(base_checkpoint)
    assert json.loads(meta["config"]) == torch_model.config.to_dict()
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx"]  # the checkpoint has no tokenizer files
    session = onnxruntime.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    for lengths in ([3], [17, 5, 1, 11], [40, 33, 2]):
        batch = padded_batch(torch_model.config.vocab_size, lengths)
        hidden, pooled = session.run(None, {k: v.numpy() for k, v in batch.items()})
        with torch.inference_mode():
            expected = torch_model(**batch)
        torch.testing.assert_close(torch.from_numpy(hidden), expected.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.from_numpy(pooled), expected.pooler_output, atol=1e-5, rtol=0)


# task -> (class, graph outputs with their dims); TINY config, 9 labels
TASK_EXPORTS = {
    "text-classification": ("BertForSequenceClassification", [("logits", ["batch_size", 9])]),
    "token-classification": ("BertForTokenClassification", [("logits", ["batch_size", "sequence_length", 9])]),
    "question-answering": ("BertForQuestionAnswering", [("start_logits", ["batch_size", "sequence_length"]),
                                                        ("end_logits", ["batch_size", "sequence_length"])]),
    "multiple-choice": ("BertForMultipleChoice", [("logits", ["batch_size", "num_choices"])]),
}


@pytest.mark.parametrize("task", TASK_EXPORTS)
def test_task_exports_have_dynamic_axes_and_match_transformers(task, tmp_path_factory, task_checkpoint):
    name, outputs = TASK_EXPORTS[task]
    path = task_checkpoint(name, 9)
    out, report = exported(tmp_path_factory, path, task)
    choices = task == "multiple-choice"
    assert report.shapes == ([(1, 1, 1), (3, 2, 7), (5, 4, 33), (1, 2, 64)] if choices
                             else [(1, 1), (3, 7), (5, 33), (1, 64)])
    assert all(diff <= 1e-4 for diff in report.max_abs_diff["fp32"].values()) and report.outputs == tuple(
        n for n, _ in outputs)
    graph = onnx.load(report.path).graph
    axes = ["batch_size", "num_choices", "sequence_length"] if choices else ["batch_size", "sequence_length"]
    assert signature(graph.input) == [(n, "int64", axes) for n in INPUT_NAMES]
    assert signature(graph.output) == [(n, "float32", dims) for n, dims in outputs]
    session = onnxruntime.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    hf = getattr(transformers, name).from_pretrained(path, attn_implementation="eager").eval()
    batch = task_batch(name, TINY["vocab_size"], [11, 6, 2], num_choices=4)  # shapes it was not validated on
    results = session.run(None, {k: v.numpy() for k, v in batch.items()})
    with torch.inference_mode():
        expected = hf(**batch)
    real = batch["attention_mask"].bool()
    for (output, dims), result in zip(outputs, results, strict=True):
        ours, theirs = torch.from_numpy(result), getattr(expected, output)
        if "sequence_length" in dims:
            ours, theirs = ours[real], theirs[real]
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_minilm_optimized_fp16_export_fuses_and_stays_close(tmp_path_factory, minilm_dir):
    out, report = exported(tmp_path_factory, minilm_dir, "feature-extraction", optimize=True, fp16=True)
    assert report.fused_operators == {"Attention": 0, "MultiHeadAttention": 6, "SkipLayerNormalization": 13,
                                      "BiasGelu": 6, "EmbedLayerNormalization": 0}
    assert set(report.max_abs_diff) == {"fp32", "optimized", "fp16"}
    assert report.max_abs_diff["fp16"]["last_hidden_state"] > 1e-4  # it did run in float16
    model = onnx.load(report.path)
    assert [t for _, t, _ in signature(model.graph.input)] == ["int64"] * 3
    assert [t for _, t, _ in signature(model.graph.output)] == ["float32"] * 2
    weights = [i for i in model.graph.initializer if len(i.dims) == 2 and i.dims[0] > 100]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["optimized"], meta["fp16"]) == ("True", "True")
    assert {"vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    texts = ["A man is playing a guitar.", "Stocks fell sharply on Tuesday.", "Café naïve — 東京"]
    ours = bertfast.pipeline("feature-extraction", model=out, backend="onnxruntime")(texts, normalize=True)
    reference = bertfast.pipeline("feature-extraction", model=minilm_dir)(texts, normalize=True)
    torch.testing.assert_close(ours, reference, atol=5e-3, rtol=0)


def test_export_traces_the_torch_reference_never_a_triton_kernel_and_overwrites(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("BERTFAST_BACKEND", "triton")  # outside an export this would pick Triton for every op
    seen = []
    backend_for = ops.backend_for

    def spy(t: torch.Tensor) -> str:
        seen.append((os.environ["BERTFAST_BACKEND"], backend_for(t)))
        return seen[-1][1]

    monkeypatch.setattr(ops, "backend_for", spy)
    out = tmp_path / "out"
    out.mkdir()
    (out / "vocab.txt").write_text("stale\n")  # an earlier export's file: overwrite=True replaces it
    (out / "notes.txt").write_text("mine\n")  # not an export file: kept
    report = export_onnx(tiny_checkpoint, out, task="next-sentence", overwrite=True)
    traced = [choice for env, choice in seen if env == "triton"]
    assert len(traced) >= 4 * TINY["num_hidden_layers"] and set(traced) == {"torch"}
    assert {n.domain for n in onnx.load(report.path).graph.node} == {""}
    assert os.environ["BERTFAST_BACKEND"] == "triton"  # the eager reference's override was undone
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx", "notes.txt"]


def test_validation_catches_a_dimension_frozen_to_the_example(tmp_path, tiny_checkpoint, monkeypatch):
    export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, dynamic_shapes=None, **k: export(*a, **k))
    with pytest.raises(ExportValidationError, match="onnxruntime cannot run the fp32 export"):
        export_onnx(tiny_checkpoint, tmp_path / "out", task="next-sentence")
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_triton_repository_and_refuses_occupied_directories(tmp_path, tiny_checkpoint, capsys):
    out, repo = tmp_path / "bert-nsp", tmp_path / "repo"
    argv = ["export-onnx", tiny_checkpoint, str(out), "--task", "next-sentence", "--triton-repo", str(repo),
            "--triton-kind", "cpu", "--triton-max-batch-size", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "logits" in printed and "max|diff|" in printed and f"Triton model: {repo / 'bert-nsp'}" in printed
    text = (repo / "bert-nsp" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())  # Triton's own schema: unknown fields fail
    assert (config.name, config.platform, config.max_batch_size) == ("bert-nsp", "onnxruntime_onnx", 8)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (n, model_config_pb2.TYPE_INT64, [-1]) for n in INPUT_NAMES]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("logits", model_config_pb2.TYPE_FP32, [2])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    served = str(repo / "bert-nsp" / "1" / "model.onnx")
    session = onnxruntime.InferenceSession(served, providers=["CPUExecutionProvider"])
    batch = padded_batch(TINY["vocab_size"], [9, 4, 6])
    (logits,) = session.run(None, {k: v.numpy() for k, v in batch.items()})
    with torch.inference_mode():
        expected = bertfast.BertForNextSentencePrediction.from_pretrained(tiny_checkpoint)(**batch).logits
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)
    assert bertfast.OnnxModel(served).task == "next-sentence"  # the metadata travels with the file
    assert main([*argv, "--triton-name", "other"]) == 1  # the export directory is refused before any work
    assert "bert-nsp exists and is not empty" in capsys.readouterr().err
    assert main([*argv[:2], str(tmp_path / "new"), *argv[3:], "--triton-name", "bert-nsp"]) == 1  # and a Triton one
    assert "bert-nsp exists and is not empty" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_bad_export_requests_are_clear_errors(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"unknown task 'summarization'; available: \['feature-extraction'"):
        export_onnx(tiny_checkpoint, out, task="summarization")
    with pytest.raises(ValueError, match="opset 14 is too low: .*LayerNormalization.* >= 17"):
        export_onnx(tiny_checkpoint, out, opset=14)
    with pytest.raises(ValueError, match="opset 99 is newer than the installed onnx knows"):
        export_onnx(tiny_checkpoint, out, opset=99)
    with pytest.raises(TypeError, match="opset must be an int or None"):
        export_onnx(tiny_checkpoint, out, opset="20")
    with pytest.raises(TypeError, match="task 'fill-mask' exports a BertForMaskedLM, got a BertModel"):
        export_onnx(bertfast.BertModel.from_pretrained(tiny_checkpoint), out, task="fill-mask")
    with pytest.raises(TypeError, match="must be a checkpoint directory, a hub id or a bertfast model"):
        export_onnx(42, out)
    (out / "sub").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="exists and is not empty; .*overwrite=True"):
        export_onnx(tiny_checkpoint, out)
    (tmp_path / "file.onnx").write_text("")
    with pytest.raises(FileExistsError, match="is a file; the output path is a directory"):
        export_onnx(tiny_checkpoint, tmp_path / "file.onnx")
    assert os.listdir(out) == ["sub"]


# ---------------------------------------------------------------- writes that leave the old export whole

@pytest.fixture
def old_export(tmp_path_factory, tmp_path, tiny_checkpoint):
    """(a copy of a next-sentence export in tmp_path/out, its report, the exported model)."""
    source, report = exported(tmp_path_factory, tiny_checkpoint, "next-sentence")
    out = shutil.copytree(source, tmp_path / "out")
    return str(out), report, bertfast.BertForNextSentencePrediction.from_pretrained(tiny_checkpoint)


def files(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def fail_half_way(proto, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(proto.SerializeToString()[:100])
    raise OSError(28, "No space left on device")


def test_a_failed_write_keeps_the_previous_export_and_leaves_nothing_half_written(old_export, monkeypatch,
                                                                                 tiny_checkpoint):
    out, report, model = old_export
    before = files(out)
    proto = onnx.load(os.path.join(out, "model.onnx"))
    monkeypatch.setattr(onnx, "save_model", fail_half_way)
    with pytest.raises(OSError, match="No space left"):
        _write(proto, report, model, tiny_checkpoint, out)  # what export_onnx(..., overwrite=True) ends with
    assert files(out) == before
    fresh = os.path.join(os.path.dirname(out), "fresh")
    with pytest.raises(OSError, match="No space left"):
        _write(proto, report, model, tiny_checkpoint, fresh)
    assert sorted(os.listdir(os.path.dirname(out))) == ["out"]  # no half-written model, no temporary folder


def test_a_failed_triton_write_keeps_the_previous_model(old_export, tmp_path, monkeypatch):
    out, _, _ = old_export
    model_dir = write_triton_repository(out, tmp_path / "repo", name="nsp", kind="cpu")
    before = {name: files(os.path.join(model_dir, name)) if name == "1" else open(os.path.join(model_dir, name)).read()
              for name in os.listdir(model_dir)}

    def copy_fails(source, target):
        open(target, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton_repo.shutil, "copyfile", copy_fails)
    with pytest.raises(OSError, match="No space left"):
        write_triton_repository(out, tmp_path / "repo", name="nsp", kind="gpu", overwrite=True)
    after = {name: files(os.path.join(model_dir, name)) if name == "1" else open(os.path.join(model_dir, name)).read()
             for name in os.listdir(model_dir)}
    assert after == before and os.listdir(tmp_path / "repo") == ["nsp"]


def write_in_a_loop(proto, report, model, out: str, written) -> None:
    """Rewrite the export again and again, each time with another config (initializer_range marks the round)."""
    for round_ in range(1, 10 ** 9):
        model.config.initializer_range = round_ / 1000
        _write(proto, report, model, None, out)
        written.send(round_)


def test_a_kill_during_writes_leaves_the_old_or_the_new_export_never_a_mix(old_export):
    """Three forked processes rewriting one export each, SIGKILLed at random points: the folder then holds one
    whole export whose model.onnx metadata and config.json are of the same round."""
    out, report, model = old_export
    proto = onnx.load(os.path.join(out, "model.onnx"))
    fork, rng = multiprocessing.get_context("fork"), random.Random(0)
    for run in range(3):
        target = os.path.join(os.path.dirname(out), f"run{run}", "export")
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(target=write_in_a_loop, args=(proto, report, model, target, send), daemon=True)
        child.start()
        for _ in range(rng.randint(1, 3)):
            assert receive.poll(60), "the writing process stopped"
            receive.recv()
        time.sleep(rng.uniform(0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the recovery of an interrupted swap warns
            recover_directory(target)
        written = onnx.load(os.path.join(target, "model.onnx"))
        meta = json.loads({p.key: p.value for p in written.metadata_props}["config"])
        config = json.load(open(os.path.join(target, "config.json")))
        assert meta["initializer_range"] == config["initializer_range"] > 0
        assert sorted(os.listdir(os.path.dirname(target))) == ["export"]


def test_an_export_gets_the_umask_modes(tmp_path, tiny_checkpoint, umask):
    out = tmp_path / "out"
    export_onnx(tiny_checkpoint, out, task="next-sentence")
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx"]
    assert_umask_modes(out, umask)


@pytest.mark.parametrize("umask", [0o027], indirect=True, ids=["027"])
def test_files_copied_into_an_export_get_the_umask_modes_too(old_export, tmp_path, umask):
    """A tokenizer file copied from a private source (0600) ends up as a plain open() would make it."""
    out, report, model = old_export
    source = tmp_path / "source"
    source.mkdir()
    (source / "vocab.txt").write_text("[PAD]\n")
    (source / "vocab.txt").chmod(0o600)
    _write(onnx.load(os.path.join(out, "model.onnx")), report, model, str(source), str(tmp_path / "fresh"))
    assert sorted(os.listdir(tmp_path / "fresh")) == ["config.json", "model.onnx", "vocab.txt"]
    assert_umask_modes(tmp_path / "fresh", umask)
