"""CPU int8 (bertfast.cpu.int8): the API and its refusals, every head padded and padding-free, and accuracy
against float32 measured on all-MiniLM-L6-v2's real weights and on random bert-base-shaped checkpoints.

The bars are the README's measured figures less a margin (CI CPUs differ: with or without VNNI)."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F

import bertfast
from bertfast.cpu.int8 import Int8Linear
from tests.helpers import TASK_CLASSES, TINY, padded_batch, task_batch
from tests.quantization_texts import sentence_pairs, varied_sentences

MINILM_MIN_COSINE = 0.96  # measured 0.976 (AVX2, no VNNI) over the 300 sentences
MINILM_MEAN_COSINE = 0.985  # measured 0.992
MINILM_SPEARMAN = 0.98  # measured 0.992 over 500 pairs
# Top-1 agreement with float32 (measured: classification 0.895 of 200 texts on MiniLM with a new random head, 1.0
# of 64 on bert-base shapes; fill-mask, every real token: 0.917 of 721 on bert-base shapes, 0.723 on MiniLM, whose
# MLM transform is random: random heads leave near-ties that int8's noise flips).
TOP1_AGREEMENT = {("classification", "minilm"): 0.85, ("classification", "bert-base"): 0.95,
                  ("fill-mask", "minilm"): 0.65, ("fill-mask", "bert-base"): 0.88}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # new random heads are announced: these tests make them on purpose
        return fn(*args, **kwargs)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([_ranks(a), _ranks(b)]))[0, 1].item()


@pytest.fixture(scope="module")
def minilm_embeddings(minilm_dir):
    texts = varied_sentences(300)
    fp32 = bertfast.pipeline("sentence-embedding", model=minilm_dir)(texts)
    int8 = bertfast.pipeline("sentence-embedding", model=minilm_dir, quantize="int8")(texts)
    return texts, fp32, int8


def test_minilm_embedding_cosine_and_similarity_ranking(minilm_embeddings):
    texts, fp32, int8 = minilm_embeddings
    assert len(set(texts)) > 250
    cosine = F.cosine_similarity(fp32, int8, dim=-1)
    assert cosine.min() >= MINILM_MIN_COSINE and cosine.mean() >= MINILM_MEAN_COSINE, (cosine.min(), cosine.mean())
    assert not torch.equal(fp32, int8)  # the pipeline did run quantized
    i, j = torch.tensor(sentence_pairs(texts, 500)).T
    rho = _spearman(F.cosine_similarity(fp32[i], fp32[j], dim=-1), F.cosine_similarity(int8[i], int8[j], dim=-1))
    assert rho >= MINILM_SPEARMAN, rho


def _agreement(fp32_logits: torch.Tensor, int8_logits: torch.Tensor) -> float:
    return (fp32_logits.argmax(-1) == int8_logits.argmax(-1)).double().mean().item()


@pytest.mark.parametrize("which", ["minilm", "bert-base"])
def test_classification_top1_agrees(which, minilm_dir, base_checkpoint):
    path = minilm_dir if which == "minilm" else base_checkpoint
    tok = bertfast.BertTokenizer.from_pretrained(minilm_dir)
    batch = tok(varied_sentences(64 if which == "bert-base" else 200), padding=True, return_tensors="pt")
    logits = []
    for quantize in (None, "int8"):
        torch.manual_seed(0)  # the same new head both times
        model = _quiet(bertfast.BertForSequenceClassification.from_pretrained, path, num_labels=5, quantize=quantize)
        with torch.no_grad():
            logits.append(model(**batch).logits)
    assert _agreement(*logits) >= TOP1_AGREEMENT["classification", which]


@pytest.mark.parametrize("which", ["minilm", "bert-base"])
def test_fill_mask_top1_agrees(which, minilm_dir, base_checkpoint):
    path = minilm_dir if which == "minilm" else base_checkpoint
    tok = bertfast.BertTokenizer.from_pretrained(minilm_dir)
    texts = [t.replace(" the ", " [MASK] ", 1) for t in varied_sentences(48)]
    batch = tok(texts, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    logits = []
    for quantize in (None, "int8"):
        torch.manual_seed(0)  # MiniLM has no MLM transform: the same random one both times
        model = _quiet(bertfast.BertForMaskedLM.from_pretrained, path, quantize=quantize,
                       allow_missing_weights=which == "minilm")
        with torch.no_grad():
            logits.append(model(**batch).logits[real])  # (real tokens, vocab)
    assert _agreement(*logits) >= TOP1_AGREEMENT["fill-mask", which]


@pytest.mark.parametrize("class_name", ["BertModel", "BertForPreTraining", *TASK_CLASSES])
def test_every_head_runs_int8_padded_and_padding_free(class_name, task_checkpoint, tiny_checkpoint):
    path = tiny_checkpoint if class_name in ("BertModel", "BertForPreTraining") else task_checkpoint(class_name)
    cls = getattr(bertfast, class_name)
    fp32 = cls.from_pretrained(path)
    int8 = cls.from_pretrained(path, quantize="int8")
    batch = task_batch(class_name, TINY["vocab_size"], [9, 5, 3])
    encoder = int8.base_model
    assert isinstance(encoder.encoder.layer[0].intermediate.dense, Int8Linear)
    if class_name == "BertForPreTraining":
        assert type(int8.cls.predictions.transform.dense) is torch.nn.Linear  # heads stay float32
    elif class_name != "BertModel":
        assert type(getattr(int8, "classifier", getattr(int8, "qa_outputs", None))) is torch.nn.Linear
    with torch.no_grad():
        expected = fp32(**batch)
        results = {}
        for padding_free in (True, False):
            encoder.padding_free = padding_free
            results[padding_free] = int8(**batch)
    field = "last_hidden_state" if class_name == "BertModel" else next(
        f for f in ("logits", "prediction_logits", "start_logits") if getattr(expected, f, None) is not None)
    for out in results.values():
        got, want = getattr(out, field), getattr(expected, field)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert F.cosine_similarity(got.flatten(), want.flatten(), dim=0) >= 0.99


def test_quantize_function_matches_from_pretrained(tiny_checkpoint):
    batch = padded_batch(TINY["vocab_size"], [7, 4])
    loaded = bertfast.BertModel.from_pretrained(tiny_checkpoint, quantize="int8")
    converted = bertfast.quantize(bertfast.BertModel.from_pretrained(tiny_checkpoint), "int8")
    assert converted.quantization == "int8" and not converted.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).last_hidden_state, converted(**batch).last_hidden_state)
    assert "quantize" in inspect.signature(bertfast.BertForMaskedLM.from_pretrained).parameters


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantize="int4"), "not a quantization mode"),
    (dict(quantize="int8", dtype=torch.bfloat16), "quantizes a float32 model"),
])
def test_bad_options_are_refused_before_loading(tiny_checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bertfast.BertModel.from_pretrained(tiny_checkpoint, **kwargs)


def test_refusals_of_a_quantized_model(tiny_checkpoint, tmp_path):
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint, quantize="int8")
    with pytest.raises(ValueError, match="already quantized"):
        bertfast.quantize(model, "int8")
    with pytest.raises(ValueError, match="is not saved.*quantize='int8'"):
        model.save_pretrained(tmp_path / "out")
    with pytest.raises(TypeError, match="takes a bertfast model"):
        bertfast.quantize(torch.nn.Linear(2, 2), "int8")
    with pytest.raises(ValueError, match="not one of"):
        bertfast.quantize(bertfast.BertModel.from_pretrained(tiny_checkpoint), "int8", engine="qnnpack-gpu")


def test_engine_override(monkeypatch, tiny_checkpoint):
    from bertfast.cpu import int8_engine

    monkeypatch.setenv("BERTFAST_INT8_ENGINE", "nonsense")
    with pytest.raises(ValueError, match="BERTFAST_INT8_ENGINE='nonsense'"):
        int8_engine()
    supported = [e for e in ("fbgemm", "onednn") if e in torch.backends.quantized.supported_engines]
    monkeypatch.setenv("BERTFAST_INT8_ENGINE", supported[0])
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint, quantize="int8")
    assert model.quantization_engine == supported[0]
    assert model.encoder.layer[0].attention.self.qkv.engine == supported[0]


def test_the_engine_is_measured_per_shape_once_and_cached(tmp_path, monkeypatch, tiny_checkpoint):
    import json

    import bertfast.cpu.gemm as cpu_gemm
    import bertfast.cpu.int8 as int8

    engines = [e for e in int8.MEASURED_ENGINES if e in torch.backends.quantized.supported_engines]
    if len(engines) < 2:
        pytest.skip(f"this torch build has one int8 engine of {int8.MEASURED_ENGINES}: nothing to measure")
    cache = tmp_path / "cpu-gemm.json"
    monkeypatch.setenv("BERTFAST_CPU_CACHE", str(cache))
    monkeypatch.delenv("BERTFAST_INT8_ENGINE", raising=False)
    int8._measured_engine.cache_clear()
    calls = []
    real = int8._measure_engines
    monkeypatch.setattr(int8, "_measure_engines", lambda *a: calls.append(a[:2]) or real(*a))
    first = int8.engine_for(48, 32)
    int8._measured_engine.cache_clear()  # a new process: the file answers
    assert int8.engine_for(48, 32) == first and calls == [(48, 32)]
    entry = json.loads(cache.read_text())[cpu_gemm.machine_key()]["int8 48x32"]
    assert entry["choice"] == first == min(entry["seconds"], key=entry["seconds"].get)
    assert "48x32" in int8.engine_path() and "int8" not in cpu_gemm.gemm_path()
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint, quantize="int8")
    for slot in int8.architecture_of(model.config).linear_layers(model):
        layer = slot.linear
        assert layer.engine == int8.engine_for(layer.out_features, layer.in_features)
    monkeypatch.setenv("BERTFAST_INT8_ENGINE", engines[1])
    assert int8.engine_for(48, 32) == engines[1] and "forced" in int8.engine_path()
    int8._measured_engine.cache_clear()
