"""The served model: the requests Triton's dynamic batcher gathered -> model calls cut by a token budget, run
padding-free -> one response (or one error) per request.

Each request is checked on its own before anything runs: text inputs must be non-empty UTF-8, every input of
a request must have the same number of rows, and no row may be longer than the row limit (a text is never
truncated silently). The valid requests are grouped by the optional inputs they carry (text-classification's
``text_pair``); the rows of each group are then cut, in order, into model calls of at most ``max_batch_tokens``
real tokens (a gathered batch over the budget is split, never truncated). Each text is tokenized once: the
token ids counted here are handed to the pipeline (``Pipeline.known_tokens``), which builds its model calls from
them. If a model call still fails, its requests are retried one by one so that only the failing one gets the
error.

Limits: a request carries at most ``max_batch_size`` rows (Triton refuses more). A row holds at most the
model's ``max_length`` tokens (``min(tokenizer model_max_length, max_position_embeddings)``, 512 for BERT),
except for the tasks whose pipeline runs long texts in windows (token-classification, question-answering):
there at most ``max_batch_tokens`` tokens, and such a row's windows, which overlap, may make one model call
run more tokens than the budget. ``max_batch_tokens`` must be at least ``max_length``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertfast.pipelines import pipeline
from bertfast.pipelines.base import KnownTokens, Pipeline
from bertfast.serving.contract import TaskContract, contract_for

DEFAULT_MAX_BATCH_SIZE = 32  # rows per request and per gathered batch (Triton's max_batch_size)
DEFAULT_MAX_BATCH_TOKENS = 16384  # real tokens per model call


class RequestError(ValueError):
    """A request that cannot be served as sent; the message says how to fix it. Its neighbours are served."""


@dataclass
class Prepared:
    """One valid request: its decoded rows per input and the token count of each row."""

    rows: dict[str, list[str]]
    lengths: list[int]


def decode_rows(name: str, array: np.ndarray | None) -> list[str]:
    """A BYTES input of shape (N, 1) -> N strings; a RequestError for a missing, empty or non-UTF-8 row."""
    if array is None:
        raise RequestError(f"input {name!r} is missing: send it as a BYTES tensor of shape [N, 1]")
    rows = []
    for i, value in enumerate(array.reshape(-1).tolist()):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError as e:
            raise RequestError(f"input {name!r} row {i} is not valid UTF-8 ({e.reason} at byte {e.start}): send "
                               f"UTF-8 encoded text") from None
        if not isinstance(text, str):
            raise RequestError(f"input {name!r} row {i} is not text but {type(value).__name__}: send BYTES")
        if not text:
            raise RequestError(f"input {name!r} row {i} is empty: send one non-empty text per row")
        rows.append(text)
    if not rows:
        raise RequestError(f"input {name!r} has no rows: send at least one text")
    return rows


def token_chunks(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive row ranges whose token counts sum to at most ``budget`` (every length must be <= budget)."""
    chunks, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if n > budget:
            raise ValueError(f"row {i} has {n} tokens, over the budget of {budget} tokens per model call")
        if total + n > budget:
            chunks.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(lengths):
        chunks.append(range(start, len(lengths)))
    return chunks


class ServedModel:
    """A pipeline behind a task contract: ``infer(requests)`` answers each gathered request on its own."""

    def __init__(self, pipe: Pipeline, contract: TaskContract, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS):
        if max_batch_tokens < pipe.max_length:
            raise ValueError(f"max_batch_tokens ({max_batch_tokens}) must be at least the model's max_length "
                             f"({pipe.max_length}) so that every accepted text fits in one model call: pass "
                             f"--max-batch-tokens {pipe.max_length} or more")
        self.pipe, self.contract, self.max_batch_tokens = pipe, contract, max_batch_tokens

    @classmethod
    def load(cls, model: str | os.PathLike, task: str, dtype: str = "float32", device: str = "cpu",
             quantize: str | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
             max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> "ServedModel":
        contract = contract_for(task)
        pipe = pipeline(task, model=model, device=device, dtype=dtype, batch_size=max_batch_size,
                        **({} if quantize is None else {"quantize": quantize}))
        return cls(pipe, contract, max_batch_tokens)

    def infer(self, requests: Sequence[dict[str, np.ndarray | None]]) -> list[dict[str, np.ndarray] | Exception]:
        """One result per request, in order: its outputs (rows on axis 0) or the exception that refused it.
        Each request maps input names to arrays (None for an input it lacks)."""
        results: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        valid: list[tuple[int, Prepared]] = []
        known: KnownTokens = {}  # what prepare tokenized, for the pipeline
        for i, request in enumerate(requests):
            try:
                valid.append((i, self.prepare(request, known)))
            except RequestError as e:
                results[i] = e
        groups: dict[tuple[str, ...], list[tuple[int, Prepared]]] = {}  # one model call never mixes input sets
        for item in valid:
            groups.setdefault(tuple(item[1].rows), []).append(item)
        with self.pipe.known_tokens(known):
            for group in groups.values():
                for i, result in self._run_isolated(group):
                    results[i] = result
        return results

    @property
    def row_limit(self) -> int:
        """The most tokens one row may hold."""
        return self.max_batch_tokens if self.contract.windowed else self.pipe.max_length

    def prepare(self, request: dict[str, np.ndarray | None], known: KnownTokens | None = None) -> Prepared:
        """One request checked and its rows tokenized; their token ids go into ``known`` (keyed by the rows'
        texts) when given. A RequestError says what to fix."""
        rows = {spec.name: decode_rows(spec.name, request.get(spec.name)) for spec in self.contract.inputs
                if not (spec.optional and request.get(spec.name) is None)}
        counts = {name: len(r) for name, r in rows.items()}
        if len(set(counts.values())) > 1:
            raise RequestError(f"inputs must have the same number of rows, got {counts}")
        first, *pair = (rows[name] for name in self.contract.tokenized if name in rows)
        encoding = self.pipe.tokenizer(first, pair[0] if pair else None, truncation=False,
                                       return_attention_mask=False, return_token_type_ids=True)
        ids = encoding["input_ids"]
        if known is not None:
            keys = zip(first, pair[0] if pair else [None] * len(first))
            known.update(zip(keys, zip(ids, encoding["token_type_ids"])))
        limit = self.row_limit
        for i, row_ids in enumerate(ids):
            if len(row_ids) > limit:
                raise RequestError(f"row {i} is {len(row_ids)} tokens long, over this model's limit of {limit} "
                                   f"tokens: split the text (nothing is truncated)")
            if self.contract.check is not None:
                try:
                    self.contract.check(self.pipe, {name: texts[i] for name, texts in rows.items()}, row_ids)
                except ValueError as e:
                    raise RequestError(f"row {i}: {e}") from None
        return Prepared(rows, [len(row_ids) for row_ids in ids])

    def _run_isolated(self, valid: list[tuple[int, Prepared]]) -> list[tuple[int, dict[str, np.ndarray] | Exception]]:
        """Run the requests together; if that fails, each on its own, so an error stays with its request."""
        if not valid:
            return []
        try:
            return list(zip([i for i, _ in valid], self.run([p for _, p in valid])))
        except Exception as e:  # noqa: BLE001  (whatever the model raised goes back to the client)
            if len(valid) == 1:
                return [(valid[0][0], e)]
            return [result for one in valid for result in self._run_isolated([one])]

    def run(self, prepared: Sequence[Prepared]) -> list[dict[str, np.ndarray]]:
        """The rows of all requests in model calls of at most ``max_batch_tokens`` tokens; outputs per request."""
        names = list(prepared[0].rows)  # the same inputs in every request (infer groups them)
        rows = {name: [text for p in prepared for text in p.rows[name]] for name in names}
        lengths = [n for p in prepared for n in p.lengths]
        parts = [self.contract.run(self.pipe, {name: rows[name][chunk.start:chunk.stop] for name in names})
                 for chunk in token_chunks(lengths, self.max_batch_tokens)]
        outputs = {spec.name: np.concatenate([part[spec.name] for part in parts]) for spec in self.contract.outputs}
        bounds = np.cumsum([0] + [len(p.lengths) for p in prepared])
        return [{name: out[start:stop] for name, out in outputs.items()} for start, stop in zip(bounds, bounds[1:])]
