"""ModernBERT through the paths around the model, each against its peer on the same input: the pipelines against
transformers' (fill-mask, text and token classification) and the QA definition, a sentence-transformers folder
against sentence-transformers' encode, rerank against CrossEncoder, ONNX exports validated by onnxruntime and their
pipelines against the torch ones, `bertfast finetune` (loads back in transformers) and LoRA with PEFT's Wqkv / Wo /
Wi targets."""
from __future__ import annotations

import functools
import json

import pytest
import torch
import transformers

import bertfast
from bertfast.cli import main
from bertfast.training.finetune import FinetuneArguments, finetune
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, st_folder
from tests.models.parity import (TEXTS, Family, assert_fill_mask_matches, assert_lora_matches_peft,
                                 assert_text_classification_matches, assert_token_classification_matches, compare,
                                 encoded)
from tests.models.test_modernbert import DECISIVE, SIZES
from tests.pipelines.test_question_answering import reference, score_diff
from tests.training.test_finetune import sentiment_rows, write_csv


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return Family(tmp_path_factory, "modernbert", "ModernBert", SIZES, DECISIVE)


def test_fill_mask_pipeline_matches_transformers(family):
    assert_fill_mask_matches(family.folder("ForMaskedLM"))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_text_classification_pipeline_matches_transformers(family, pooling):
    assert_text_classification_matches(family.folder("ForSequenceClassification", classifier_pooling=pooling))


def test_token_classification_pipeline_matches_transformers(family):
    assert_token_classification_matches(family.folder("ForTokenClassification"))


def test_question_answering_pipeline_matches_the_definition(family):
    """tests/pipelines/test_question_answering.py's definition (transformers 4.x's) on a ModernBERT checkpoint:
    its pair template ([CLS] q [SEP] c [SEP]), byte-level BPE offsets, windows over a long context."""
    path = family.folder("ForQuestionAnswering")
    theirs = transformers.ModernBertForQuestionAnswering.from_pretrained(path).eval()
    tokenizer = functools.partial(transformers.AutoTokenizer.from_pretrained(path), return_token_type_ids=True)

    def model(input_ids, token_type_ids, attention_mask):  # ModernBERT takes no token types
        return theirs(input_ids=input_ids, attention_mask=attention_mask)

    ours = bertfast.pipeline("question-answering", model=path)
    context = TEXTS[3] + " " + TEXTS[0]
    for options in ({"top_k": 3, "max_seq_len": 48},
                    {"top_k": 2, "max_seq_len": 32, "doc_stride": 8, "handle_impossible_answer": True}):
        expected = reference(model, tokenizer, "Where is the café?", context, **options)
        assert score_diff(ours("Where is the café?", context, **options), expected) <= LOGITS_ATOL


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_sentence_transformers_folder_embeds_as_sentence_transformers(family, tmp_path, pooling):
    """A ModernBERT embedding folder (as gte-modernbert / modernbert-embed are) saved by sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    path = st_folder(tmp_path / "st", family.folder("Model"), pooling, normalize=True, max_seq_length=40)
    expected = SentenceTransformer(path, device="cpu").encode(TEXTS, convert_to_tensor=True)
    got = bertfast.pipeline("sentence-embedding", model=path)(TEXTS)
    torch.testing.assert_close(got, expected, atol=HIDDEN_ATOL, rtol=0)


def test_rerank_matches_cross_encoder(family):
    """A ModernBERT reranker (a one-label sequence classifier, as the ModernBERT cross-encoders are)."""
    from sentence_transformers import CrossEncoder

    path = family.folder("ForSequenceClassification", num_labels=1, classifier_pooling="mean")
    documents = TEXTS + ["", "cities"]
    query = "Where are the cities?"
    ranked = bertfast.pipeline("rerank", model=path)(query, documents)
    expected = torch.as_tensor(CrossEncoder(path, device="cpu").predict([(query, d) for d in documents]))
    got = torch.tensor([r["score"] for r in sorted(ranked, key=lambda r: r["index"])])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("task, head, optimize", [("fill-mask", "ForMaskedLM", False),
                                                   ("text-classification", "ForSequenceClassification", False),
                                                   ("feature-extraction", "Model", True)])
def test_onnx_exports_validate_and_their_pipelines_give_the_torch_answers(family, tmp_path, task, head, optimize):
    """The export validates itself at lengths up to 2,048 tokens; the feature-extraction one has a window (64 keys
    either side) wider than the traced example's 16 tokens, which the graph must keep, and goes through
    onnxruntime's transformers optimizer (its SkipLayerNormalization needs a bias: zeros are given)."""
    path = family.folder(head, **({"local_attention": 128} if optimize else {}))
    report = bertfast.export_onnx(path, tmp_path / task, task=task, optimize=optimize)
    assert max(report.max_abs_diff["fp32"].values()) <= LOGITS_ATOL
    if optimize:
        assert max(report.max_abs_diff["optimized"].values()) <= LOGITS_ATOL
        assert report.fused_operators["SkipLayerNormalization"] > 0 and report.fused_operators["MultiHeadAttention"] > 0
    onnx = bertfast.pipeline(task, model=tmp_path / task, backend="onnxruntime")
    assert onnx.model.config.model_type == "modernbert"
    texts = {"fill-mask": ["the quick brown [MASK] jumps", "[MASK] and 北京"]}.get(task, TEXTS[:3])
    got, expected = onnx(texts), bertfast.pipeline(task, model=path)(texts)
    if task == "feature-extraction":
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=1e-5, rtol=0)
        return
    for a, b in zip(got, expected, strict=True):
        a, b = (a, b) if isinstance(a, list) else ([a], [b])
        assert [(p.get("token"), p.get("label")) for p in a] == [(p.get("token"), p.get("label")) for p in b]
        torch.testing.assert_close(torch.tensor([p["score"] for p in a]), torch.tensor([p["score"] for p in b]),
                                   atol=1e-5, rtol=0)


def test_finetune_from_a_masked_lm_checkpoint_lowers_the_loss_and_loads_in_transformers(family, tmp_path, capsys):
    """`bertfast finetune` from a ModernBERT masked LM (as answerdotai/ModernBERT-base is): its prediction head is
    kept, a classifier is new; the saved folder is transformers' ModernBertForSequenceClassification."""
    train = write_csv(tmp_path / "train.csv", sentiment_rows(32))
    out = str(tmp_path / "clf")
    assert main(["finetune", "--model", family.folder("ForMaskedLM"), "--train", train, "--eval", train, "--out",
                 out, "--epochs", "3", "--batch-size", "8", "--lr", "1e-2", "--warmup-ratio", "0", "--device", "cpu",
                 "--no-progress", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["epochs"][-1]["train_loss"] < results["epochs"][0]["train_loss"]
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(theirs).__name__ == "ModernBertForSequenceClassification"
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(out)
    batch = encoded(out)
    with torch.inference_mode():
        compare(ours(**batch), theirs(**batch), ("logits",), batch["attention_mask"].bool())


def test_finetune_lora_targets_peft_names_and_peft_loads_it(family, tmp_path):
    """PEFT's ModernBERT targets Wqkv / Wo / Wi (Wo is both the attention's and the MLM's output): the adapter
    finetune writes loads in PEFT onto transformers' model with the outputs bertfast's merge gives."""
    train = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    base_dir = family.folder("Model")
    finetune(base_dir, train, train, tmp_path / "lora", FinetuneArguments(
        epochs=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, device="cpu", progress=False,
        lora="4,8,Wqkv,Wo,Wi"))
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["Wi", "Wo", "Wqkv"]
    assert_lora_matches_peft(base_dir, tmp_path / "lora", "ModernBertForSequenceClassification")


def test_pipelines_take_the_model_positions_not_512_as_their_limit(family, tmp_path):
    """A long text runs whole through the pipeline (ModernBERT-base's tokenizer says 8,192 tokens; this model's
    positions, 2,048, cap it), equal to transformers; past the positions it is truncated there, not at 512."""
    import shutil

    path = shutil.copytree(family.folder("Model"), tmp_path / "long")
    settings = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 8192}))
    pipe = bertfast.pipeline("feature-extraction", model=str(path))
    assert pipe.max_length == 2048
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    text = " ".join(TEXTS * 8)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert 700 < ids.shape[1] < 2048, ids.shape  # past 512 and past the 16-token window, within the positions
    with torch.inference_mode():
        expected = transformers.AutoModel.from_pretrained(path).eval()(ids).last_hidden_state[0]
    got = torch.as_tensor(pipe(text, pooling="none"))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=HIDDEN_ATOL, rtol=0)
    assert torch.as_tensor(pipe(" ".join(TEXTS * 20), pooling="none")).shape[0] == 2048
