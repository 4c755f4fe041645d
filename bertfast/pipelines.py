"""Pipelines shaped like transformers': fill-mask, next-sentence and feature-extraction (sentence embeddings)."""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from bertfast.heads import BertForMaskedLM, BertForNextSentencePrediction
from bertfast.modeling import BertModel, BertPreTrainedModel
from bertfast.onnx_model import OnnxModel
from bertfast.tokenizer import BertTokenizer
from bertfast.weights import resolve_dtype

DEFAULT_MODEL = "bert-base-uncased"
BACKENDS = ("torch", "onnxruntime")


class Pipeline:
    """Tokenize -> model -> postprocess, in length-sorted batches, without gradients."""

    model_class: type[BertPreTrainedModel] = BertModel

    def __init__(self, model: BertPreTrainedModel | OnnxModel, tokenizer: BertTokenizer, batch_size: int = 32,
                 max_length: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval() if isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or min(tokenizer.model_max_length, model.config.max_position_embeddings)

    def _encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict[str, torch.Tensor]]:
        """One encoding per batch of inputs, batches grouped by length so little padding is computed."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
        batches = []
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            encoding = self.tokenizer([texts[i] for i in index], [pairs[i] for i in index] if pairs else None,
                                      padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            encoding = {k: v.to(self.model.device) for k, v in encoding.items()}
            batches.append({"index": index, **encoding})
        return batches

    def _run(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **params: Any) -> list[Any]:
        results: list[Any] = [None] * len(texts)
        with torch.inference_mode():
            for batch in self._encode(texts, pairs):
                index = batch.pop("index")
                for i, result in zip(index, self._process(batch, **params)):
                    results[i] = result
        return results

    def _process(self, batch: dict[str, torch.Tensor], **params: Any) -> list[Any]:
        """Model outputs of one batch -> one result per row."""
        raise NotImplementedError


def _as_list(texts: str | Sequence[str], name: str) -> tuple[list[str], bool]:
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a string or a non-empty list of strings")
    return texts, False


class FillMaskPipeline(Pipeline):
    model_class = BertForMaskedLM

    def __call__(self, text: str | Sequence[str], top_k: int = 5, targets: Sequence[str] | None = None):
        """Top-k predictions for each [MASK]: a list of {score, token, token_str, sequence}; a list of such
        lists when the text holds several masks; one result per text for a list of texts."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        texts, single = _as_list(text, "text")
        candidates = None if targets is None else self._target_ids(targets)
        results = self._run(texts, top_k=top_k, candidates=candidates)
        return results[0] if single else results

    def _target_ids(self, targets: Sequence[str]) -> torch.Tensor:
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            if target not in vocab:
                pieces = self.tokenizer.tokenize(target)
                if not pieces:
                    raise ValueError(f"target {target!r} is empty after tokenization")
                warnings.warn(f"target {target!r} is not a single vocabulary token; using its first piece "
                              f"{pieces[0]!r}")
                target = pieces[0]
            ids.append(vocab[target])
        return torch.tensor(sorted(set(ids), key=ids.index), device=self.model.device)

    def _mask_logits(self, batch: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """MLM logits (masks, vocab) at the masked positions only: the vocabulary projection is skipped elsewhere
        (an exported graph computes the logits of every position)."""
        if isinstance(self.model, OnnxModel):
            return self.model(**batch).logits[rows, cols]
        hidden = self.model.bert(**batch).last_hidden_state  # (B, S, H)
        return self.model.mlm_logits(hidden[rows, cols])

    def _process(self, batch: dict[str, torch.Tensor], top_k: int = 5,
                 candidates: torch.Tensor | None = None) -> list[Any]:
        ids = batch["input_ids"]
        rows, cols = torch.nonzero(ids == self.tokenizer.mask_token_id, as_tuple=True)
        missing = sorted(set(range(len(ids))) - set(rows.tolist()))
        if missing:
            raise ValueError(f"fill-mask input has no {self.tokenizer.mask_token} token (after truncation to "
                             f"{ids.shape[1]} tokens): put {self.tokenizer.mask_token} where a word should be "
                             f"predicted")
        probs = self._mask_logits(batch, rows, cols).float().softmax(dim=-1)  # (masks, vocab)
        if candidates is not None:
            probs = probs[:, candidates]
        scores, tokens = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        if candidates is not None:
            tokens = candidates[tokens]
        results: list[list[list[dict[str, Any]]]] = [[] for _ in range(len(ids))]
        for row, col, row_scores, row_tokens in zip(rows.tolist(), cols.tolist(), scores.tolist(), tokens.tolist()):
            results[row].append(self._propositions(ids[row], col, row_scores, row_tokens))
        return [r[0] if len(r) == 1 else r for r in results]

    def _propositions(self, ids: torch.Tensor, col: int, scores: list[float], tokens: list[int]):
        real = ids[ids != self.tokenizer.pad_token_id].tolist()
        several_masks = real.count(self.tokenizer.mask_token_id) > 1
        out = []
        for score, token in zip(scores, tokens):
            filled = real[:col] + [token] + real[col + 1:]
            out.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                        # several masks: special tokens are kept so the other [MASK]s stay visible (as transformers)
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=not several_masks)})
        return out


class NextSentencePipeline(Pipeline):
    model_class = BertForNextSentencePrediction

    def __call__(self, text_a: str | Sequence[str], text_b: str | Sequence[str]):
        """For each pair: {"label": "IsNext"/"NotNext", "is_next_probability": p, "logits": [is_next, not_next]}."""
        a, single = _as_list(text_a, "text_a")
        b, single_b = _as_list(text_b, "text_b")
        if single != single_b or len(a) != len(b):
            raise ValueError(f"text_a and text_b must pair up: got {len(a)} and {len(b)} texts")
        results = self._run(a, b)
        return results[0] if single else results

    def _process(self, batch: dict[str, torch.Tensor], **params: Any) -> list[Any]:
        logits = self.model(**batch).logits.float()  # (B, 2)
        probs = logits.softmax(dim=-1)[:, 0].tolist()
        return [{"label": "IsNext" if p >= 0.5 else "NotNext", "is_next_probability": p, "logits": l}
                for p, l in zip(probs, logits.tolist())]


POOLINGS = ("mean", "cls", "none")


class FeatureExtractionPipeline(Pipeline):
    model_class = BertModel

    def __call__(self, text: str | Sequence[str], pooling: str = "mean", normalize: bool = False):
        """Sentence embeddings: (H,) for a string, (N, H) for a list. ``pooling="mean"`` averages the real
        tokens (padding excluded), ``"cls"`` takes the [CLS] hidden state, ``"none"`` returns each text's
        (tokens, H) hidden states. ``normalize`` L2-normalises (cosine similarity = dot product)."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        texts, single = _as_list(text, "text")
        results = self._run(texts, pooling=pooling, normalize=normalize)
        if single:
            return results[0]
        return results if pooling == "none" else torch.stack(results)

    def _process(self, batch: dict[str, torch.Tensor], pooling: str = "mean",
                 normalize: bool = False) -> list[torch.Tensor]:
        hidden = self.model(**batch).last_hidden_state.float()  # (B, S, H)
        mask = batch["attention_mask"]
        if pooling == "none":
            rows = [h[m.bool()] for h, m in zip(hidden, mask)]
            return [F.normalize(r, dim=-1).cpu() if normalize else r.cpu() for r in rows]
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = F.normalize(pooled, dim=-1) if normalize else pooled
        return list(pooled.cpu())


TASKS: dict[str, type[Pipeline]] = {
    "fill-mask": FillMaskPipeline,
    "next-sentence": NextSentencePipeline,
    "feature-extraction": FeatureExtractionPipeline,
}


def pipeline(task: str, model: str | os.PathLike | BertPreTrainedModel | OnnxModel = DEFAULT_MODEL,
             tokenizer: str | os.PathLike | BertTokenizer | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype | str = torch.float32, batch_size: int = 32, backend: str = "torch",
             **load_kwargs: Any) -> Pipeline:
    """Build a pipeline: ``pipeline("fill-mask", model="bert-base-uncased")`` (also "next-sentence",
    "feature-extraction"). ``model`` is a checkpoint (directory or hub id) or a loaded bertfast model;
    ``tokenizer`` defaults to the checkpoint's.

    ``backend="onnxruntime"`` runs an export of the same task instead (``bertfast export-onnx``): ``model`` is
    its directory, its .onnx file or an ``OnnxModel``; ``device`` "cuda" picks the CUDA execution provider;
    ``load_kwargs`` go to ``OnnxModel``; the dtype was fixed at export (``--fp16``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {BACKENDS}")
    cls = TASKS[task]
    if backend == "onnxruntime" or isinstance(model, OnnxModel):
        return _onnx_pipeline(task, model, tokenizer, device, dtype, batch_size, **load_kwargs)
    if isinstance(model, BertPreTrainedModel):
        if tokenizer is None:
            raise ValueError("pass tokenizer= (a path or BertTokenizer) together with an already loaded model")
        loaded = model
    else:
        loaded = cls.model_class.from_pretrained(model, dtype=resolve_dtype(dtype), device=device, **load_kwargs)
        tokenizer = model if tokenizer is None else tokenizer
    if not isinstance(loaded, cls.model_class):
        raise TypeError(f"task {task!r} needs a {cls.model_class.__name__}, got {type(loaded).__name__}")
    return cls(loaded, _as_tokenizer(tokenizer), batch_size=batch_size)


def _as_tokenizer(tokenizer: str | os.PathLike | BertTokenizer) -> BertTokenizer:
    return tokenizer if isinstance(tokenizer, BertTokenizer) else BertTokenizer.from_pretrained(tokenizer)


def _onnx_pipeline(task: str, model: str | os.PathLike | OnnxModel,
                   tokenizer: str | os.PathLike | BertTokenizer | None, device: torch.device | str,
                   dtype: torch.dtype | str, batch_size: int, **session_kwargs: Any) -> Pipeline:
    if resolve_dtype(dtype) != torch.float32:
        raise ValueError("with backend='onnxruntime' the dtype was fixed at export time: export with --fp16 "
                         "(fp16=True) for a float16 graph and leave dtype at float32")
    if not isinstance(model, OnnxModel):
        provider = "cuda" if torch.device(device).type == "cuda" else "cpu"
        model = OnnxModel(model, provider=provider, **session_kwargs)
    if model.task != task:
        raise ValueError(f"{model.path} is a {model.task!r} export; the {task!r} pipeline needs an export made "
                         f"with --task {task}")
    if tokenizer is None:
        tokenizer = os.path.dirname(model.path)  # export_onnx saves the tokenizer files beside model.onnx
    return TASKS[task](model, _as_tokenizer(tokenizer), batch_size=batch_size)
