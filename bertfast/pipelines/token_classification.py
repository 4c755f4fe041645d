"""``token-classification`` (alias ``ner``): a label per token, or entities grouped from them, with character
offsets into the text, as transformers' TokenClassificationPipeline. Texts longer than ``max_length`` tokens run
in overlapping windows (transformers' ``stride``) instead of being truncated."""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.heads.tasks import BertForTokenClassification
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline, as_list

AGGREGATIONS = ("none", "simple", "first", "average", "max")
WORD_AGGREGATIONS = ("first", "average", "max")  # one label per word: its tokens cannot disagree
Entity = dict[str, Any]


@dataclass
class Window:
    """One model input of a text: its tokens' ids, character offsets, special-token flags and label scores."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[int]
    scores: list[list[float]]  # (tokens, num_labels) softmax of the logits
    first_index: int  # the index of this window's first text token in the whole text's encoding ([CLS] = 0)


def _argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)  # the first of equal maxima, as numpy


def _tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity type) of a label: "B-PER" -> ("B", "PER"); a label without a prefix counts as "I"."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _merge_windows(entities: list[Entity]) -> list[Entity]:
    """Entities of overlapping windows -> one per span: of entities starting inside another, the longer wins,
    then the surer (transformers' rule)."""
    kept: list[Entity] = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        last = kept[-1] if kept else None
        if last is not None and last["start"] <= entity["start"] < last["end"]:
            length, last_length = entity["end"] - entity["start"], last["end"] - last["start"]
            if length > last_length or (length == last_length and entity["score"] > last["score"]):
                kept[-1] = entity
        else:
            kept.append(entity)
    return kept


class TokenClassificationPipeline(Pipeline):
    model_class = BertForTokenClassification

    def __call__(self, text: str | Sequence[str], aggregation_strategy: str = "none",
                 ignore_labels: Sequence[str] | None = None, stride: int | None = None):
        """Entities of a text (a list of dicts), or of each text of a list.

        ``aggregation_strategy`` (transformers' meanings): "none" gives every token ``{"entity", "score", "index",
        "word", "start", "end"}``; "simple" groups adjacent tokens of one entity type (a "B-" label starts a new
        group) into ``{"entity_group", "score" (the mean), "word", "start", "end"}``; "first" / "average" / "max"
        first give each word one label (its first token's; the best of its tokens' mean scores; its surest
        token's), then group. A word is a token and the "##" pieces after it, told apart by the offsets as
        transformers does: a token whose vocabulary text and span of the text differ in length ("##ing" for "ing")
        continues the word before it; a vocabulary without "##" pieces (byte-level BPE, Unigram) falls back, as
        transformers does with a warning, on the text: a piece glued to the character before it continues the
        word. ``start`` / ``end`` are
        character offsets into the text; entities labelled one of ``ignore_labels`` (default ["O"]) are dropped.

        Texts longer than ``max_length`` tokens run in windows of ``max_length`` tokens, consecutive windows sharing
        ``stride`` tokens (default: a quarter of a window); an entity found in two windows is kept once (the
        longer, then the surer). "index" is then the token's index in the whole text's encoding.
        """
        texts, single = as_list(text, "text")
        strategy = aggregation_strategy.lower() if isinstance(aggregation_strategy, str) else aggregation_strategy
        if strategy not in AGGREGATIONS:
            raise ValueError(f"aggregation_strategy must be one of {AGGREGATIONS}, got {aggregation_strategy!r}")
        ignore = ["O"] if ignore_labels is None else ignore_labels
        if isinstance(ignore, str) or not all(isinstance(label, str) for label in ignore):
            raise TypeError(f"ignore_labels must be a list of label names, got {ignore_labels!r}")
        stride = (self.max_length - 2) // 4 if stride is None else stride
        results = []
        for source, windows in zip(texts, self._windows(texts, stride)):
            entities = [e for window in windows for e in self._aggregate(source, window, strategy)
                        if e.get("entity", e.get("entity_group")) not in ignore]
            results.append(_merge_windows(entities) if len(windows) > 1 else entities)
        return results[0] if single else results

    def _windows(self, texts: list[str], stride: int) -> list[list[Window]]:
        """Each text's windows with their label scores: windows of a group of texts are batched, ``batch_size``
        windows per model call."""
        step = self.max_length - 2 - stride  # text tokens from one window's start to the next's
        windows: list[list[Window]] = [[] for _ in texts]
        with torch.inference_mode():
            for batch in self._encode(texts, stride=stride, return_overflowing_tokens=True,
                                      return_offsets_mapping=True, return_special_tokens_mask=True):
                owners = [batch["index"][i] for i in batch.pop("overflow_to_sample_mapping").tolist()]
                lengths = batch["attention_mask"].sum(1).tolist()  # right padding: each row's real tokens first
                offsets, special = batch.pop("offset_mapping").tolist(), batch.pop("special_tokens_mask").tolist()
                inputs = {k: v for k, v in batch.items() if k != "index"}
                ids, types = ([row[:n] for row, n in zip(inputs[key].tolist(), lengths)]
                              for key in ("input_ids", "token_type_ids"))
                for start in range(0, len(owners), self.batch_size):
                    rows = slice(start, start + self.batch_size)
                    for row, row_scores in enumerate(self._scores(inputs, ids[rows], types[rows], rows), start):
                        owner, n = owners[row], lengths[row]
                        windows[owner].append(Window(ids[row], offsets[row][:n], special[row][:n], row_scores,
                                                     len(windows[owner]) * step))
        return windows

    def _scores(self, inputs: dict[str, torch.Tensor], ids: list[list[int]], types: list[list[int]],
                rows: slice) -> list[list[list[float]]]:
        """Each row's label scores (its real tokens x num_labels): a bertfast model runs the rows packed, an
        exported graph the padded tensors."""
        if isinstance(self.model, OnnxModel):
            logits = self.model(**{k: v[rows] for k, v in inputs.items()}).logits  # (b, S, num_labels)
            return [scores[:len(row)] for scores, row in zip(logits.float().softmax(dim=-1).tolist(), ids)]
        packed = PackedBatch.from_token_lists(ids, types, device=self.model.device)
        scores = self.model(packed).logits.float().softmax(dim=-1).tolist()  # (T, num_labels)
        starts = [0, *itertools.accumulate(packed.lengths)]
        return [scores[a:b] for a, b in zip(starts, starts[1:])]

    def _tokens(self, text: str, window: Window) -> list[Entity]:
        """The window's text tokens: word (vocabulary text), scores, index, start, end, whether a word continues."""
        tokens = []
        for position, (token_id, (start, end), special) in enumerate(zip(window.ids, window.offsets, window.special)):
            if special:
                continue
            word, span = self.tokenizer.convert_ids_to_tokens(token_id), text[start:end]
            unknown = token_id == self.tokenizer.unk_token_id
            if self.tokenizer.word_aware:
                continues = len(word) != len(span)
            else:  # transformers' fallback: a piece glued to the character before it
                continues = start > 0 and " " not in text[start - 1:start + 1]
            tokens.append({"word": span if unknown else word, "scores": window.scores[position],
                           "index": window.first_index + position, "start": start, "end": end,
                           "is_subword": not unknown and continues})
        return tokens

    def _aggregate(self, text: str, window: Window, strategy: str) -> list[Entity]:
        labels = self.model.config.id2label
        tokens = self._tokens(text, window)
        if strategy in WORD_AGGREGATIONS and not self.tokenizer.word_aware:
            warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning)
        if strategy in WORD_AGGREGATIONS:
            words: list[list[Entity]] = []
            for token in tokens:
                if words and token["is_subword"]:
                    words[-1].append(token)
                else:
                    words.append([token])
            entities = [self._word(word, strategy) for word in words]
        else:
            entities = []
            for token in tokens:
                best = _argmax(token["scores"])
                entities.append({"entity": labels[best], "score": token["scores"][best], "index": token["index"],
                                 "word": token["word"], "start": token["start"], "end": token["end"]})
        return entities if strategy == "none" else self._group(entities)

    def _word(self, tokens: list[Entity], strategy: str) -> Entity:
        """One labelled word from its tokens, by the strategy's rule."""
        if strategy == "average":
            scores = [sum(column) / len(tokens) for column in zip(*(t["scores"] for t in tokens))]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: max(t["scores"]))["scores"]
        else:
            scores = tokens[0]["scores"]
        best = _argmax(scores)
        return {"entity": self.model.config.id2label[best], "score": scores[best],
                "word": self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens]),
                "start": tokens[0]["start"], "end": tokens[-1]["end"]}

    def _group(self, entities: list[Entity]) -> list[Entity]:
        """Adjacent entities of one type -> entity groups; a "B-" label, or another type, starts a new group."""
        groups: list[list[Entity]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [{"entity_group": group[0]["entity"].split("-", 1)[-1],  # "B-PER" -> "PER", as transformers
                 "score": sum(e["score"] for e in group) / len(group),
                 "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                 "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]
