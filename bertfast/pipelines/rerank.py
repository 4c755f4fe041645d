"""``rerank``: score documents against a query with a cross-encoder (a sequence-classification checkpoint with
one label), as sentence-transformers' ``CrossEncoder.rank`` / ``predict``, in text-embeddings-inference's
``/rerank`` shape."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from bertfast.heads.tasks import BertForSequenceClassification
from bertfast.hub import resolve_file
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline, check_top_k
from bertfast.pipelines.text_classification import apply_function, check_function

# sentence-transformers' saved activation (a torch.nn class) -> our function_to_apply
ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "none"}


def _saved_activation(name_or_path: str | os.PathLike, local_files_only: bool) -> str | None:
    """The activation a sentence-transformers CrossEncoder saved, where it looks: config_sentence_transformers.json
    ("activation_fn"), then config.json ("sentence_transformers": {"activation_fn"}, or the older
    "sbert_ce_default_activation_function"); None when there is none."""
    found = []
    for filename, keys in (("config_sentence_transformers.json", [("activation_fn",)]),
                           ("config.json", [("sentence_transformers", "activation_fn"),
                                            ("sbert_ce_default_activation_function",)])):
        path = resolve_file(name_or_path, filename, required=False, local_files_only=local_files_only)
        if path is not None:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            for key in keys:
                value = data
                for part in key:
                    value = value.get(part) if isinstance(value, dict) else None
                found.append(value)
    return next((value for value in found if value is not None), None)


class RerankPipeline(Pipeline):
    model_class = BertForSequenceClassification
    packed_input = True

    def __init__(self, model: BertForSequenceClassification, tokenizer: Any, batch_size: int = 32,
                 max_length: int | None = None, function_to_apply: str = "sigmoid"):
        """``function_to_apply``: the default of each call ("sigmoid", sentence-transformers' default for one
        label, unless the checkpoint saved another activation; see ``folder_options``)."""
        if model.config.num_labels != 1:
            raise ValueError(f"rerank needs a cross-encoder, a sequence-classification checkpoint with one label; this "
                             f"one has {model.config.num_labels} ({model.config.id2label}): use the "
                             f"'text-classification' pipeline for it")
        super().__init__(model, tokenizer, batch_size=batch_size, max_length=max_length)
        self.function_to_apply = check_function(function_to_apply)

    @classmethod
    def folder_options(cls, name_or_path: str | os.PathLike, local_files_only: bool = False) -> dict[str, Any]:
        """The activation a sentence-transformers CrossEncoder saved with the checkpoint, as function_to_apply."""
        saved = _saved_activation(name_or_path, local_files_only)
        if saved is None:
            return {}
        name = saved.rsplit(".", 1)[-1]
        if name not in ACTIVATIONS:
            raise ValueError(f"{name_or_path} asks for the activation {saved!r}; rerank implements "
                             f"{sorted(ACTIVATIONS)} (function_to_apply 'sigmoid' / 'none'): load the model yourself "
                             f"and pass it with tokenizer=, then choose function_to_apply per call")
        return {"function_to_apply": ACTIVATIONS[name]}

    def __call__(self, query: str, documents: Sequence[str], top_k: int | None = None,
                 return_documents: bool = False, function_to_apply: str | None = None) -> list[dict[str, Any]]:
        """Score each document against ``query``: a list of ``{"index", "score"}`` (plus ``"text"`` with
        ``return_documents``) sorted best first, ``top_k`` of them (None: all). ``index`` is the document's
        position in ``documents``; ``score`` the activation (``function_to_apply``: "sigmoid" or "none" for raw
        logits; None = the pipeline's) of the cross-encoder's logit for the pair (query, document), truncated to
        ``max_length`` tokens as sentence-transformers does (longest first)."""
        check_top_k(top_k)
        function = self.function_to_apply if function_to_apply is None else check_function(function_to_apply)
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError("documents must be a list of strings (one document is ['its text'])")
        if not documents or not all(isinstance(d, str) for d in documents):
            raise ValueError("documents must be a non-empty list of strings")
        scores = self.score_pairs([query] * len(documents), list(documents), function_to_apply=function)
        ranked = [{"index": i, "score": s, **({"text": documents[i]} if return_documents else {})}
                  for i, s in enumerate(scores)]
        ranked.sort(key=lambda r: r["score"], reverse=True)  # stable: equal scores keep the documents' order
        return ranked[:top_k]

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str],
                    function_to_apply: str | None = None) -> list[float]:
        """The score of each (query, document) pair, in order, unsorted (sentence-transformers'
        ``CrossEncoder.predict`` on pairs): what ``__call__`` ranks, for pairs of different queries at once."""
        function = self.function_to_apply if function_to_apply is None else check_function(function_to_apply)
        if len(queries) != len(documents):
            raise ValueError(f"score_pairs takes one query per document, got {len(queries)} queries and "
                             f"{len(documents)} documents")
        return self._run(list(queries), list(documents), function=function)

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], function: str = "sigmoid") -> list[float]:
        return apply_function(self._call_model(batch).logits, function)[:, 0].tolist()  # (B,)
