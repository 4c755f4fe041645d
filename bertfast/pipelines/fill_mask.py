"""``fill-mask``: the top-k tokens for each [MASK], as transformers' FillMaskPipeline."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.heads.pretraining import BertForMaskedLM
from bertfast.pipelines.base import Pipeline, as_list


class FillMaskPipeline(Pipeline):
    model_class = BertForMaskedLM

    def __call__(self, text: str | Sequence[str], top_k: int = 5, targets: Sequence[str] | None = None):
        """Top-k predictions for each [MASK]: a list of {score, token, token_str, sequence}; a list of such
        lists when the text holds several masks; one result per text for a list of texts."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        texts, single = as_list(text, "text")
        unmasked = [i for i, t in enumerate(texts) if self.tokenizer.mask_token not in t]
        if unmasked:
            raise ValueError(f"fill-mask input{'' if single else ' ' + str(unmasked[0])} has no "
                             f"{self.tokenizer.mask_token} token: put {self.tokenizer.mask_token} where a word "
                             f"should be predicted")
        candidates = None if targets is None else self._target_ids(targets)
        results = self._run(texts, top_k=top_k, candidates=candidates)
        return results[0] if single else results

    def _target_ids(self, targets: str | Sequence[str]) -> torch.Tensor:
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, Sequence) or not targets or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"targets must be a token string or a non-empty list of them (the candidates scored "
                             f"at each [MASK]), got {targets!r}; pass targets=None to score the whole vocabulary")
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
        if missing:  # the texts hold the token (checked in __call__): truncation cut it off
            raise ValueError(f"truncation to {ids.shape[1]} tokens cut off the {self.tokenizer.mask_token} token: "
                             f"shorten the text or put {self.tokenizer.mask_token} earlier")
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
