"""DistilBERT and ELECTRA through the paths around the model (RoBERTa's are in test_roberta.py): an ONNX export
validated by the export itself, whose onnxruntime pipeline gives the torch pipeline's labels and scores; and
`bertfast finetune` from a base checkpoint, which lowers the loss and writes a folder transformers loads with the
same logits."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import bertfast
from bertfast.cli import main
from tests.helpers import LOGITS_ATOL
from tests.models.parity import TEXTS, Family, compare, encoded
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
