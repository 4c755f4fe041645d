"""``feature-extraction``: sentence embeddings (mean / [CLS] pooling, optional L2 normalisation) or per-token
hidden states."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from bertfast.modeling import BertModel
from bertfast.pipelines.base import Pipeline, as_list

POOLINGS = ("mean", "cls", "none")


class FeatureExtractionPipeline(Pipeline):
    model_class = BertModel

    def __call__(self, text: str | Sequence[str], pooling: str = "mean", normalize: bool = False):
        """Sentence embeddings: (H,) for a string, (N, H) for a list. ``pooling="mean"`` averages the real
        tokens (padding excluded), ``"cls"`` takes the [CLS] hidden state, ``"none"`` returns each text's
        (tokens, H) hidden states. ``normalize`` L2-normalises (cosine similarity = dot product)."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        texts, single = as_list(text, "text")
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
