"""``text-classification`` (alias ``sentiment-analysis``): labels of a text or a text pair, as transformers'
TextClassificationPipeline; and the score functions the rerank pipeline shares."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from bertfast.config import BertConfig
from bertfast.heads.tasks import BertForSequenceClassification
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline, as_list, check_top_k

FUNCTIONS = ("softmax", "sigmoid", "none")  # what turns logits into scores
PAIR_KEYS = ("text", "text_pair")
TextItem = str | tuple[str, str] | Mapping[str, str]


class _BestLabel:
    """The default of ``top_k`` (transformers' "not given"): each input's best label as one dict."""

    def __repr__(self) -> str:
        return "BEST_LABEL"


BEST_LABEL = _BestLabel()


def default_function(config: BertConfig) -> str:
    """transformers' choice: none for regression, sigmoid for multi-label or one label, softmax otherwise."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def check_function(function: str) -> str:
    name = function.lower() if isinstance(function, str) else function
    if name not in FUNCTIONS:
        raise ValueError(f"function_to_apply must be one of {FUNCTIONS}, got {function!r}")
    return name


def apply_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    """Scores (B, num_labels) in float32 from logits (B, num_labels)."""
    logits = logits.float()
    if function == "softmax":
        return logits.softmax(dim=-1)
    return logits.sigmoid() if function == "sigmoid" else logits


def _split_item(item: Any) -> tuple[str, str | None]:
    """A text, a (text, text_pair) tuple or a {"text", "text_pair"} dict -> (text, text_pair or None)."""
    if isinstance(item, Mapping):
        if "text" not in item or set(item) - set(PAIR_KEYS):
            raise ValueError(f"a dict input takes the keys 'text' and optionally 'text_pair', got {sorted(item)}")
        item = (item["text"], item.get("text_pair"))
    elif isinstance(item, str):
        item = (item, None)
    elif not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(f"each input must be a string, a (text, text_pair) tuple or a {{'text', 'text_pair'}} dict, "
                        f"got {item!r:.80}")
    if not isinstance(item[0], str) or not isinstance(item[1], (str, type(None))):
        raise TypeError(f"texts must be strings, got {item!r:.80}")
    return item


def text_pairs(text: TextItem | Sequence[TextItem], text_pair: str | Sequence[str] | None
               ) -> tuple[list[str], list[str] | None, bool]:
    """(texts, text pairs or None, whether one input was given) from the accepted input forms."""
    single = not isinstance(text, list)
    items = [_split_item(item) for item in ([text] if single else list(text))]
    if not items:
        raise TypeError("text must be a string, a pair, or a non-empty list of them")
    if text_pair is not None:
        pairs, single_pair = as_list(text_pair, "text_pair")
        if single_pair != single or len(pairs) != len(items) or any(p is not None for _, p in items):
            raise ValueError(f"text_pair= must give one pair per text ({len(items)} texts, {len(pairs)} pairs), and "
                             f"the texts then cannot be pairs themselves")
        return [t for t, _ in items], pairs, single
    if len({p is None for _, p in items}) > 1:
        raise ValueError("give every input a text_pair or none of them (classify the two kinds in separate calls)")
    pairs = None if items[0][1] is None else [p for _, p in items]
    return [t for t, _ in items], pairs, single


class TextClassificationPipeline(Pipeline):
    model_class = BertForSequenceClassification
    packed_input = True

    def __call__(self, text: TextItem | Sequence[TextItem], text_pair: str | Sequence[str] | None = None,
                 top_k: int | None | _BestLabel = BEST_LABEL, function_to_apply: str | None = None):
        """Classify texts or text pairs: a text is a string, a ``(text, text_pair)`` tuple or a
        ``{"text", "text_pair"}`` dict (or give ``text_pair=``); a list of them is a batch.

        As transformers' TextClassificationPipeline: without ``top_k``, each input's best label as a
        ``{"label", "score"}`` dict, and one string (with or without ``text_pair=``) gives a list of that one dict,
        one pair (tuple or dict) the dict itself; ``top_k=None``: every label, ``top_k`` an int: the ``top_k`` best
        (all if there are fewer), either way a list sorted best first per input (for one input, that list).
        ``function_to_apply`` "softmax" / "sigmoid" / "none"; None chooses as transformers does (none for
        regression, sigmoid for multi-label or a single label, softmax otherwise). One result per input for a list.
        Inputs longer than ``max_length`` tokens are truncated.
        """
        best_only = top_k is BEST_LABEL
        if not best_only:
            check_top_k(top_k)
        function = default_function(self.model.config) if function_to_apply is None else check_function(
            function_to_apply)
        texts, pairs, single = text_pairs(text, text_pair)
        results = self._run(texts, pairs, top_k=1 if best_only else top_k, function=function)
        if best_only:
            results = [ranked[0] for ranked in results]
        if not single:
            return results
        return [results[0]] if best_only and isinstance(text, str) else results[0]

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], top_k: int | None = None,
                 function: str = "softmax") -> list[list[dict[str, Any]]]:
        """Per row, the ``top_k`` best labels (all for None), best first; ties keep the lower label id first."""
        scores = apply_function(self._call_model(batch).logits, function)  # (B, num_labels)
        labels = self.model.config.id2label
        best, ids = scores.sort(dim=-1, descending=True, stable=True)  # (B, num_labels)
        return [[{"label": labels[i], "score": s} for s, i in zip(row_scores[:top_k], row_ids[:top_k])]
                for row_scores, row_ids in zip(best.tolist(), ids.tolist())]
