"""``sparse-embedding``: SPLADE vectors from an MLM head, as text-embeddings-inference's ``/embed_sparse`` and
sentence-transformers' ``SparseEncoder`` compute them: log(1 + relu(MLM logits)) max-pooled over the real tokens
(padding excluded), one weight per vocabulary entry.

Memory: the MLM logits are computed for ``CHUNK_TOKENS`` real tokens at a time and folded into a (B, vocab)
result, so a batch never holds (B, S, vocab) logits: about CHUNK_TOKENS x vocab x 4 bytes (62 MB for
bert-base-uncased) besides the encoder's activations. An ONNX fill-mask export returns the logits of every
position, so with backend="onnxruntime" the whole (B, S, vocab) tensor exists.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.heads.pretraining import BertForMaskedLM
from bertfast.padding import PackedBatch
from bertfast.pipelines.feature_extraction import SentenceConfigPipeline
from bertfast.st_config import SPLADE_ACTIVATIONS, SPLADE_POOLINGS

CHUNK_TOKENS = 512  # tokens whose (CHUNK_TOKENS, vocab) logits exist at once


def splade_activation_(logits: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """In place: log(1 + relu(logits)), or for "log1p_relu" log(1 + log(1 + relu(logits)))."""
    logits.relu_().log1p_()
    return logits.log1p_() if activation == "log1p_relu" else logits


class SparseEmbeddingPipeline(SentenceConfigPipeline):
    """Follows a SparseEncoder folder: its SpladePooling, ``max_seq_length`` and ``do_lower_case``; a plain MLM
    checkpoint gets max pooling of log(1 + relu)."""

    model_class = BertForMaskedLM
    packed_input = True
    model_type = "SparseEncoder"
    other_task = "feature-extraction"

    def __call__(self, text: str | Sequence[str], top_k: int | None = None, return_dense: bool = False,
                 pooling: str | None = None, activation: str | None = None, prompt: str | None = None,
                 prompt_name: str | None = None):
        """Sparse embeddings. Per text a list of ``{"index": token id, "value": weight}`` for its non-zero
        weights, largest first (the ``top_k`` largest when given): text-embeddings-inference's /embed_sparse
        shape; a list of such lists for a list of texts. ``return_dense=True`` returns the (vocab,) weights
        instead ((N, vocab) for a list). ``pooling`` ("max" or "sum" over tokens) and ``activation`` ("relu" or
        "log1p_relu") default to the folder's SpladePooling, else max and relu. ``prompt`` / ``prompt_name`` as
        in feature-extraction."""
        config = self.sentence_config
        pooling = config.splade_pooling if pooling is None else pooling
        activation = config.splade_activation if activation is None else activation
        if pooling not in SPLADE_POOLINGS or activation not in SPLADE_ACTIVATIONS:
            raise ValueError(f"pooling must be one of {SPLADE_POOLINGS} and activation one of {SPLADE_ACTIVATIONS}, "
                             f"got {pooling!r} and {activation!r}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None (every non-zero weight) or >= 1, got {top_k}")
        texts, single = self._texts(text, config.prompt_text(prompt, prompt_name))
        weights = self._run(texts, pooling=pooling, activation=activation)
        results = weights if return_dense else [self._sparse(w, top_k) for w in weights]
        if single:
            return results[0]
        return torch.stack(results) if return_dense else results

    @staticmethod
    def _sparse(weights: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
        """(vocab,) weights -> [{"index", "value"}] of the non-zero ones, largest first."""
        index = torch.nonzero(weights).squeeze(-1)
        values, order = weights[index].sort(descending=True, stable=True)
        index = index[order]
        if top_k is not None:
            values, index = values[:top_k], index[:top_k]
        return [{"index": i, "value": v} for i, v in zip(index.tolist(), values.tolist())]

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], pooling: str = "max",
                 activation: str = "relu") -> list[torch.Tensor]:
        if isinstance(self.model, OnnxModel):
            mask = batch["attention_mask"].bool()
            logits = self.model(**batch).logits.float()  # (B, S, vocab)
            weights = splade_activation_(logits, activation).masked_fill_(~mask[..., None], 0)
            pooled = weights.amax(1) if pooling == "max" else weights.sum(1)
            return list(pooled.cpu())
        hidden = self.model.base_model(batch).last_hidden_state  # (T, H): the real tokens, packed
        bounds = [0, *itertools.accumulate(batch.lengths)]  # on the host: row r holds tokens bounds[r]:bounds[r + 1]
        pooled = hidden.new_zeros(len(bounds) - 1, self.model.config.vocab_size, dtype=torch.float32)  # (B, vocab)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            end = min(start + CHUNK_TOKENS, hidden.shape[0])
            weights = splade_activation_(self.model.mlm_logits(hidden[start:end]).float(), activation)  # (chunk, vocab)
            for row in range(bisect.bisect_right(bounds, start) - 1, bisect.bisect_left(bounds, end)):
                part = weights[max(start, bounds[row]) - start:min(end, bounds[row + 1]) - start]  # (tokens, vocab)
                if pooling == "max":  # weights are >= 0, so max-pooling into zeros is exact
                    torch.maximum(pooled[row], part.amax(0), out=pooled[row])
                else:
                    pooled[row] += part.sum(0)
        return list(pooled.cpu())
