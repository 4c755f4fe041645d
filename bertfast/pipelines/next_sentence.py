"""``next-sentence``: does text B follow text A (BERT's NSP head)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from bertfast.heads.pretraining import BertForNextSentencePrediction
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline, as_list


class NextSentencePipeline(Pipeline):
    model_class = BertForNextSentencePrediction
    packed_input = True

    def __call__(self, text_a: str | Sequence[str], text_b: str | Sequence[str]):
        """For each pair: {"label": "IsNext"/"NotNext", "is_next_probability": p, "logits": [is_next, not_next]}."""
        a, single = as_list(text_a, "text_a")
        b, single_b = as_list(text_b, "text_b")
        if single != single_b or len(a) != len(b):
            raise ValueError(f"text_a and text_b must pair up: got {len(a)} and {len(b)} texts")
        results = self._run(a, b)
        return results[0] if single else results

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], **params: Any) -> list[Any]:
        logits = self._call_model(batch).logits.float()  # (B, 2)
        probs = logits.softmax(dim=-1)[:, 0].tolist()
        return [{"label": "IsNext" if p >= 0.5 else "NotNext", "is_next_probability": p, "logits": l}
                for p, l in zip(probs, logits.tolist())]
