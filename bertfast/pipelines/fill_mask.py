"""``fill-mask``: the top-k tokens for each [MASK], as transformers' FillMaskPipeline."""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.heads.pretraining import BertForMaskedLM
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline, as_list


class FillMaskPipeline(Pipeline):
    model_class = BertForMaskedLM
    packed_input = True

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

    def _masks(self, batch: PackedBatch | dict[str, torch.Tensor]) -> tuple[list[list[int]], list[tuple[int, int]],
                                                                             torch.Tensor]:
        """(each row's real token ids, each mask's (row, column) in row-major order, and the masks' indices into
        the model's output: flat (T,) positions of a packed batch, (rows, cols) of a padded one)."""
        if isinstance(batch, PackedBatch):
            starts = [0, *itertools.accumulate(batch.lengths)]
            ids = batch.input_ids.tolist()
            sequences = [ids[a:b] for a, b in zip(starts, starts[1:])]
        else:  # right padding (TokenBatch.padded): the real tokens are each row's first ones
            sequences = [row[:n].tolist() for row, n in zip(batch["input_ids"], batch["attention_mask"].sum(1))]
        masks = [(row, col) for row, seq in enumerate(sequences) for col, t in enumerate(seq)
                 if t == self.tokenizer.mask_token_id]
        if isinstance(batch, PackedBatch):
            return sequences, masks, torch.tensor([starts[r] + c for r, c in masks], device=batch.device)
        return sequences, masks, torch.tensor(masks, device=batch["input_ids"].device).reshape(-1, 2).T

    def _mask_logits(self, batch: PackedBatch | dict[str, torch.Tensor], where: torch.Tensor) -> torch.Tensor:
        """MLM logits (masks, vocab) at the masked positions only: the vocabulary projection is skipped elsewhere
        (an exported graph computes the logits of every position)."""
        if isinstance(self.model, OnnxModel):
            return self.model(**batch).logits[where[0], where[1]]
        hidden = self.model.base_model(batch).last_hidden_state  # packed (T, H)
        return self.model.mlm_logits(hidden[where])

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], top_k: int = 5,
                 candidates: torch.Tensor | None = None) -> list[Any]:
        sequences, masks, where = self._masks(batch)
        missing = sorted(set(range(len(sequences))) - {row for row, _ in masks})
        if missing:  # the texts hold the token (checked in __call__): truncation cut it off
            raise ValueError(f"truncation to {max(map(len, sequences))} tokens cut off the {self.tokenizer.mask_token} "
                             f"token: shorten the text or put {self.tokenizer.mask_token} earlier")
        probs = self._mask_logits(batch, where).float().softmax(dim=-1)  # (masks, vocab)
        if candidates is not None:
            probs = probs[:, candidates]
        scores, tokens = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        if candidates is not None:
            tokens = candidates[tokens]
        results: list[list[list[dict[str, Any]]]] = [[] for _ in sequences]
        for (row, col), row_scores, row_tokens in zip(masks, scores.tolist(), tokens.tolist()):
            results[row].append(self._propositions(sequences[row], col, row_scores, row_tokens))
        return [r[0] if len(r) == 1 else r for r in results]

    def _propositions(self, real: list[int], col: int, scores: list[float], tokens: list[int]):
        several_masks = real.count(self.tokenizer.mask_token_id) > 1
        out = []
        for score, token in zip(scores, tokens):
            filled = real[:col] + [token] + real[col + 1:]
            out.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                        # several masks: special tokens are kept so the other [MASK]s stay visible (as transformers)
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=not several_masks)})
        return out
