"""DistilBERT and ELECTRA through the paths around the model (RoBERTa's are in test_roberta.py): an ONNX export
validated by the export itself, whose onnxruntime pipeline gives the torch pipeline's labels and scores; and
`bertfast finetune` from a base checkpoint, which lowers the loss and writes a folder transformers loads with the
same logits. Every family (RoBERTa too): the Triton kernels through the interpreter, fp16 / bf16 within twice
transformers' own half-precision error (CPU here, CUDA under needs_cuda), and bertfast.optimize's graph buckets."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import bertfast
from bertfast.cli import main
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, needs_cuda
from tests.models.parity import TEXTS, Family, assert_lora_matches_peft, compare, encoded
from tests.models.test_modernbert import SIZES as MODERNBERT_SIZES
from tests.test_graphs import EmulatedCapture
from tests.training.test_finetune import sentiment_rows, write_csv

FAMILIES = {  # model_type -> (transformers' prefix, small sizes in the family's own config names)
    "distilbert": ("DistilBert", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)),
    "electra": ("Electra", dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64)),
}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {name: Family(tmp_path_factory, name, prefix, sizes, ("classifier", "pre_classifier"))
            for name, (prefix, sizes) in FAMILIES.items()}


@pytest.mark.parametrize("name", FAMILIES)
def test_an_onnx_export_validates_and_its_pipeline_gives_the_torch_answers(families, name, tmp_path):
    path = families[name].folder("ForSequenceClassification")
    report = bertfast.export_onnx(path, tmp_path / "onnx", task="text-classification")
    assert max(report.max_abs_diff["fp32"].values()) <= LOGITS_ATOL
    onnx = bertfast.pipeline("text-classification", model=tmp_path / "onnx", backend="onnxruntime")
    assert onnx.model.config.model_type == name
    got, expected = onnx(TEXTS[:3], top_k=None), bertfast.pipeline("text-classification", model=path)(TEXTS[:3],
                                                                                                       top_k=None)
    assert [[r["label"] for r in row] for row in got] == [[r["label"] for r in row] for row in expected]
    torch.testing.assert_close(torch.tensor([[r["score"] for r in row] for row in got]),
                               torch.tensor([[r["score"] for r in row] for row in expected]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_finetune_from_a_base_checkpoint_loads_in_transformers(families, name, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(32))
    out = str(tmp_path / "clf")
    assert main(["finetune", "--model", families[name].folder("Model"), "--train", train, "--eval", train, "--out",
                 out, "--epochs", "3", "--batch-size", "8", "--lr", "1e-2", "--warmup-ratio", "0", "--device", "cpu",
                 "--no-progress", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["epochs"][-1]["train_loss"] < results["epochs"][0]["train_loss"]
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(theirs).__name__ == FAMILIES[name][0] + "ForSequenceClassification"
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(out)
    batch = encoded(out)
    with torch.inference_mode():
        compare(ours(**batch), theirs(**batch), ("logits",), batch["attention_mask"].bool())


ALL = {**FAMILIES, "roberta": ("Roberta", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=37, max_position_embeddings=130, type_vocab_size=1,
                                               pad_token_id=1)),
       "modernbert": ("ModernBert", MODERNBERT_SIZES)}


@pytest.mark.parametrize("name", ALL)
def test_the_triton_kernels_run_each_family_as_the_torch_path(tmp_path_factory, name, monkeypatch):
    """BERTFAST_BACKEND=triton (the kernels through the interpreter without CUDA, padding-free): the same
    hidden states as the torch path and transformers, on a batch of mixed lengths."""
    prefix, sizes = ALL[name]
    path = Family(tmp_path_factory, name, prefix, sizes, ()).folder("Model")
    ours, theirs = bertfast.AutoModel.from_pretrained(path), transformers.AutoModel.from_pretrained(path).eval()
    batch = encoded(path, texts=TEXTS[:3])
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        monkeypatch.setenv("BERTFAST_BACKEND", "triton")
        fused = ours(**batch).last_hidden_state[mask]
        monkeypatch.setenv("BERTFAST_BACKEND", "torch")
        reference = ours(**batch).last_hidden_state[mask]
        expected = theirs(**batch).last_hidden_state[mask]
    torch.testing.assert_close(fused, reference, atol=HIDDEN_ATOL * 10, rtol=0)
    torch.testing.assert_close(fused, expected, atol=HIDDEN_ATOL * 10, rtol=0)


def test_finetune_lora_on_distilbert_targets_peft_names_and_peft_loads_it(families, tmp_path):
    """DistilBERT's PEFT targets are q_lin / v_lin, row blocks of bertfast's fused qkv: the adapter finetune writes
    loads in PEFT onto transformers' model with the outputs bertfast's merge gives."""
    from bertfast.training.finetune import FinetuneArguments, finetune

    train = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    base_dir = families["distilbert"].folder("Model")
    finetune(base_dir, train, train, tmp_path / "lora", FinetuneArguments(
        epochs=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, device="cpu", progress=False,
        lora="4,8,q_lin,v_lin"))
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_lin", "v_lin"]
    assert_lora_matches_peft(base_dir, tmp_path / "lora", "DistilBertForSequenceClassification")


def half_precision_errors(path: str, dtype: torch.dtype, device: str) -> tuple[float, float]:
    """The largest |difference| from transformers' float32 hidden states, over the real tokens of TEXTS, of
    bertfast's and of transformers' own model in ``dtype`` on ``device``."""
    batch = {k: v.to(device) for k, v in encoded(path).items()}
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        reference = transformers.AutoModel.from_pretrained(path).to(device).eval()(**batch).last_hidden_state
        theirs = transformers.AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()(**batch)
        ours = bertfast.AutoModel.from_pretrained(path, dtype=dtype, device=device)(**batch)
    assert ours.last_hidden_state.dtype == dtype
    return tuple((out.last_hidden_state.float() - reference)[mask].abs().max().item() for out in (ours, theirs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ALL)
def test_half_precision_on_cpu_within_twice_transformers_error(tmp_path_factory, name, dtype):
    prefix, sizes = ALL[name]
    ours, theirs = half_precision_errors(Family(tmp_path_factory, name, prefix, sizes, ()).folder("Model"), dtype,
                                         "cpu")
    assert 0 < theirs and ours <= 2 * theirs, (ours, theirs)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ALL)
def test_half_precision_on_gpu_within_twice_transformers_error(tmp_path_factory, name, dtype):
    prefix, sizes = ALL[name]
    ours, theirs = half_precision_errors(Family(tmp_path_factory, name, prefix, sizes, ()).folder("Model"), dtype,
                                         "cuda")
    assert ours <= 2 * theirs + 1e-3, (ours, theirs)


@pytest.mark.parametrize("name", ALL)
def test_optimize_serves_each_family_from_its_graph_buckets(tmp_path_factory, name):
    """bertfast.optimize (capture emulated on CPU, as tests/test_graphs.py does for BERT) over a family's
    classifier: the logits of the plain model, every call replayed from a captured bucket."""
    prefix, sizes = ALL[name]
    path = Family(tmp_path_factory, name, prefix, sizes, ("classifier", "pre_classifier")).folder(
        "ForSequenceClassification")
    model = bertfast.AutoModelForSequenceClassification.from_pretrained(path)
    runner = bertfast.optimize(model, batch_buckets=(4,), seq_buckets=(16, 48), capture=EmulatedCapture())
    with torch.inference_mode():
        for texts in (TEXTS[:3], TEXTS[:2]):
            batch = encoded(path, texts=texts)
            torch.testing.assert_close(runner(**batch).logits, model(**batch).logits, atol=LOGITS_ATOL, rtol=0)  # padded to the bucket: other GEMM shapes
    assert runner.stats()["eager_calls"] == 0 and runner.stats()["replays"] == 2
