"""Fine-tuning data: labelled rows read from CSV / TSV / JSON Lines (SQuAD JSON for question answering), checked,
encoded into features and collated into padded batches for the task models.

- text-classification: a text column (and optionally a text-pair column) and a label column: one label name
  (single-label), several (multi-label: a JSON list, or names separated by ``|``), or a number (regression).
- token-classification: a column of words (a JSON list, or a string split on spaces) and one of word labels of
  the same length; each word's first word piece gets the word's label, its continuation pieces -100, as
  transformers' ``run_ner.py`` does (``label_all_tokens=False``).
- question-answering: in ``bertfast.training.qa_data`` (windows over long contexts).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

import torch

from bertfast.inputs import IGNORE_INDEX
from bertfast.tokenizer import BertTokenizer

LABEL_SEPARATOR = "|"  # between the labels of a multi-label row given as a string


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a .csv / .tsv (a header line names the columns) or .jsonl / .json file (one JSON object per line)."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} not found")
    if extension not in (".csv", ".tsv", ".jsonl", ".json"):
        raise ValueError(f"{path}: unknown data format {extension!r}; use .csv, .tsv or .jsonl")
    with open(path, encoding="utf-8", newline="") as f:
        try:
            rows = _table_rows(f, path, extension) if extension in (".csv", ".tsv") else _json_lines(f, path)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e}): save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from e
    if not rows:
        raise ValueError(f"{path} holds no rows")
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: every line must be a JSON object with named fields")
    return rows


def _table_rows(f: Any, path: str, extension: str) -> list[dict[str, Any]]:
    """The rows of a CSV / TSV file under its header; a row with more fields than the header names is an error."""
    reader = csv.DictReader(f, delimiter="\t" if extension == ".tsv" else ",")
    rows = []
    try:
        for row in reader:
            if None in row:  # DictReader's key for the fields beyond the header
                raise ValueError(f"{path} line {reader.line_num} has {len(row) - 1 + len(row[None])} fields but the "
                                 f"header names {len(reader.fieldnames)} ({', '.join(reader.fieldnames)}): quote a "
                                 f"field that holds the delimiter, or fix the row")
            rows.append(row)
    except csv.Error as e:
        raise ValueError(f"{path} line {reader.line_num} is not valid {extension[1:].upper()} ({e})") from e
    return rows


def _json_lines(f: Any, path: str) -> list[Any]:
    rows = []
    for number, line in enumerate(f, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number} is not a JSON object ({e}): write one object per "
                                 f"line (JSON Lines)") from e
    return rows


def check_columns(rows: Sequence[dict], columns: dict[str, str | None], path: str | os.PathLike) -> None:
    """Every named column (option -> column name) is present in every row, or a ValueError saying which option to fix."""
    available = sorted(rows[0])
    for option, column in columns.items():
        if column is None:
            continue
        for number, row in enumerate(rows, 1):
            if column not in row or row[column] is None:
                raise ValueError(f"{os.fspath(path)}: row {number} has no column {column!r} (columns: "
                                 f"{', '.join(available)}); name the right one with --{option}")


def _label_names(value: Any) -> list[str]:
    """A multi-label cell as label names: a list, a JSON list, or names separated by LABEL_SEPARATOR."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return [part.strip() for part in text.split(LABEL_SEPARATOR) if part.strip()]


def label_set(rows: Sequence[dict], column: str, problem_type: str, labels: Sequence[str] | None) -> list[str]:
    """The label names in id order: ``labels`` as given, else the sorted names the rows use (none for regression)."""
    if problem_type == "regression":
        return list(labels or ["LABEL_0"])
    if labels:
        if len(set(labels)) != len(labels):
            raise ValueError(f"--labels has duplicates: {list(labels)}")
        return list(labels)
    if problem_type == "multi_label_classification":
        return sorted({name for row in rows for name in _label_names(row[column])})
    return sorted({str(row[column]) for row in rows})


class TextClassificationData:
    """Rows -> features (input_ids, token_type_ids, label) -> padded batches for BertForSequenceClassification."""

    def __init__(self, tokenizer: BertTokenizer, labels: Sequence[str], problem_type: str, text_column: str = "text",
                 text_pair_column: str | None = None, label_column: str = "label", max_length: int = 128) -> None:
        self.tokenizer, self.labels, self.problem_type = tokenizer, list(labels), problem_type
        self.label2id = {name: i for i, name in enumerate(self.labels)}
        self.columns = {"text-column": text_column, "text-pair-column": text_pair_column, "label-column": label_column}
        self.max_length = max_length

    def _label(self, value: Any, where: str) -> Any:
        if self.problem_type == "regression":
            try:
                return float(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: label {value!r} is not a number (regression needs numeric labels)") from e
        names = _label_names(value) if self.problem_type == "multi_label_classification" else [str(value)]
        unknown = [name for name in names if name not in self.label2id]
        if unknown:
            raise ValueError(f"{where}: unknown label {unknown[0]!r}; the labels are {self.labels} (from --labels or "
                             f"the training file): add it to --labels or fix the row")
        if self.problem_type == "single_label_classification":
            return self.label2id[names[0]]
        return [float(name in names) for name in self.labels]

    def features(self, rows: Sequence[dict], path: str | os.PathLike) -> list[dict[str, Any]]:
        check_columns(rows, self.columns, path)
        text, pair, label = (self.columns[k] for k in ("text-column", "text-pair-column", "label-column"))
        encoded = self.tokenizer([str(r[text]) for r in rows], [str(r[pair]) for r in rows] if pair else None,
                                 truncation=True, max_length=self.max_length, return_token_type_ids=True)
        return [{"input_ids": ids, "token_type_ids": types,
                 "label": self._label(row[label], f"{os.fspath(path)} row {number}")}
                for number, (row, ids, types) in enumerate(zip(rows, encoded["input_ids"], encoded["token_type_ids"]), 1)]

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features, self.tokenizer.pad_token_id)
        dtype = torch.int64 if self.problem_type == "single_label_classification" else torch.float32
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=dtype)
        return batch


class TokenClassificationData:
    """Rows of words and word labels -> features with labels on first word pieces -> batches for
    BertForTokenClassification."""

    def __init__(self, tokenizer: BertTokenizer, labels: Sequence[str], words_column: str = "tokens",
                 label_column: str = "tags", max_length: int = 128) -> None:
        self.tokenizer, self.labels = tokenizer, list(labels)
        self.label2id = {name: i for i, name in enumerate(self.labels)}
        self.columns = {"text-column": words_column, "label-column": label_column}
        self.max_length = max_length

    @staticmethod
    def words(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else (
            [str(v) for v in json.loads(value)] if str(value).startswith("[") else str(value).split())

    def features(self, rows: Sequence[dict], path: str | os.PathLike) -> list[dict[str, Any]]:
        check_columns(rows, self.columns, path)
        tok, out = self.tokenizer, []
        for number, row in enumerate(rows, 1):
            words, tags = self.words(row[self.columns["text-column"]]), self.words(row[self.columns["label-column"]])
            where = f"{os.fspath(path)} row {number}"
            if len(words) != len(tags) or not words:
                raise ValueError(f"{where}: {len(words)} words but {len(tags)} labels: give one label per word")
            unknown = [tag for tag in tags if tag not in self.label2id]
            if unknown:
                raise ValueError(f"{where}: unknown label {unknown[0]!r}; the labels are {self.labels}")
            pieces = tok(words, add_special_tokens=False, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"]
            ids, labels = [tok.cls_token_id], [IGNORE_INDEX]
            for word_pieces, tag in zip(pieces, tags):
                ids += word_pieces
                labels += [self.label2id[tag]] + [IGNORE_INDEX] * (len(word_pieces) - 1)
            ids, labels = ids[:self.max_length - 1] + [tok.sep_token_id], labels[:self.max_length - 1] + [IGNORE_INDEX]
            out.append({"input_ids": ids, "token_type_ids": [0] * len(ids), "labels": labels})
        return out

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features, self.tokenizer.pad_token_id)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for r, f in enumerate(features):
            labels[r, :len(f["labels"])] = torch.tensor(f["labels"])
        batch["labels"] = labels
        return batch


def pad(features: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask (B, S) int64, padded on the right to the longest feature."""
    seq_len = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), seq_len), pad_token_id, dtype=torch.int64)
    token_type_ids, attention_mask = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    for r, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[r, :n], token_type_ids[r, :n], attention_mask[r, :n] = (
            torch.tensor(f["input_ids"]), torch.tensor(f["token_type_ids"]), 1)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
