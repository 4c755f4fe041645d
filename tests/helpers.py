"""Builders shared by the test files (imported as ``tests.helpers``; fixtures live in conftest.py)."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

from bertfast.config import BertConfig
from bertfast.export.onnx import ExportReport, export_onnx
from bertfast.inputs import random_batch
from bertfast.tokenizer_files import TOKENIZER_FILES

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Marks(tuple):
    """Several marks that work as one: ``@marks`` on a test, or ``pytest.param(..., marks=marks)``."""

    def __call__(self, test: Any) -> Any:
        for mark in self:
            test = mark(test)
        return test


# The one mark of the tests that need a CUDA GPU (they all have a CPU counterpart that always runs): skipped
# without CUDA; the `cuda` marker (pytest.ini) selects them: `python -m pytest -m cuda` (benchmarks/gpu_check).
needs_cuda = _Marks((pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs a CUDA GPU (bf16, bert-base shapes)")))
HIDDEN_ATOL = 1e-5  # CPU fp32 parity with transformers: hidden states
LOGITS_ATOL = 1e-4  # ... and logits
# Quick pretraining runs of the tiny preset (a few steps of small batches; no progress bar).
PRETRAIN_QUICK = dict(batch_size=4, max_seq_length=32, learning_rate=1e-3, warmup_steps=1, progress=False)
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def hf_pretraining_model(**config_kwargs: Any):
    """A random-init transformers BertForPreTraining with eager attention (so it can return attentions)."""
    return hf_task_model("BertForPreTraining", **config_kwargs)


# The task model classes, by transformers' (and bertfast's) name.
TASK_CLASSES = ("BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
                "BertForMultipleChoice")


def hf_task_model(architecture: str, num_labels: int = 3, **config_kwargs: Any):
    """A random-init transformers model of ``architecture`` (e.g. "BertForPreTraining"), eager attention; the task
    classes get an id2label naming ``num_labels`` labels (question answering: always 2, its start and end)."""
    import transformers

    if architecture in TASK_CLASSES:
        count = 2 if architecture == "BertForQuestionAnswering" else num_labels
        id2label = {i: f"TAG_{i}" for i in range(count)}
        config_kwargs = {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}, **config_kwargs}
    config = transformers.BertConfig(**config_kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(1234)
    return getattr(transformers, architecture)(config).eval()


def task_batch(class_name: str, vocab_size: int, lengths: list[int], num_choices: int = 3) -> dict[str, torch.Tensor]:
    """``padded_batch`` inputs (B, S) for a task class; for BertForMultipleChoice (B, num_choices, S), choice c
    of row b being ``lengths[b] - c`` tokens long (at least 1)."""
    if class_name != "BertForMultipleChoice":
        return padded_batch(vocab_size, lengths)
    rows = padded_batch(vocab_size, [max(1, n - c) for n in lengths for c in range(num_choices)])
    return {k: v.view(len(lengths), num_choices, -1) for k, v in rows.items()}  # (B, num_choices, S)


# Label sets of the random task checkpoints: sentiment classes, and CoNLL's BIO entity tags.
SENTIMENT_LABELS = {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG", 7: "B-MISC", 8: "I-MISC"}


def assert_umask_modes(path: str | os.PathLike, umask: int) -> None:
    """``path`` (a file, or a folder and everything in it) has the modes a plain open() / mkdir() gives under
    ``umask``: files 0o666 & ~umask, folders 0o777 & ~umask (symlinks are not followed, nor checked)."""
    path = os.fspath(path)
    entries = [path] + [os.path.join(root, name) for root, dirs, files in os.walk(path) for name in dirs + files]
    wrong = {}
    for entry in entries:
        mode = os.lstat(entry).st_mode
        if not stat.S_ISLNK(mode):
            expected = 0o777 & ~umask if stat.S_ISDIR(mode) else 0o666 & ~umask
            if stat.S_IMODE(mode) != expected:
                wrong[os.path.relpath(entry, path)] = f"{stat.S_IMODE(mode):o}, not {expected:o}"
    assert wrong == {}, f"modes under {path} (umask {umask:03o}): {wrong}"


def copy_tokenizer(source: str, target: str | os.PathLike) -> None:
    """The tokenizer files of ``source`` (e.g. the minilm_dir fixture) copied into the checkpoint ``target``."""
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(source, name), target)


def save_task_checkpoint(path: str | os.PathLike, model_class: str, tokenizer_dir: str, head_scale: float = 1.0,
                         **config_kwargs: Any) -> str:
    """A random-init transformers ``model_class`` (e.g. "BertForTokenClassification") over the bert-base-uncased
    vocabulary, saved with save_pretrained next to ``tokenizer_dir``'s tokenizer files. The head's weights are
    multiplied by ``head_scale``: random heads score every label alike, a scaled one gives decisive labels."""
    import transformers

    config = transformers.BertConfig(**{**TINY, "vocab_size": 30522, **config_kwargs})
    torch.manual_seed(1234)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(path)
    copy_tokenizer(tokenizer_dir, path)
    return str(path)


def copy_config(source: str, target: str | os.PathLike) -> None:
    """A checkpoint directory ``target`` holding ``source``'s config.json only (the weights are the test's)."""
    os.makedirs(target, exist_ok=True)
    shutil.copy(os.path.join(source, "config.json"), target)


def padded_batch(vocab_size: int, lengths: list[int], seq_len: int | None = None) -> dict[str, torch.Tensor]:
    """``bertfast.inputs.random_batch`` over a vocabulary of ``vocab_size`` (pad id 0, two token types)."""
    return random_batch(BertConfig(vocab_size=vocab_size), lengths, seq_len)


_EXPORTS: dict[tuple, tuple[str, ExportReport]] = {}


def exported(tmp_path_factory: Any, source: str, task: str, **options: Any) -> tuple[str, ExportReport]:
    """(export directory, report) of ``export_onnx(source, ..., task=task, **options)``, cached per session."""
    key = (source, task, tuple(sorted(options.items())))
    if key not in _EXPORTS:
        out = tmp_path_factory.mktemp("export") / task
        _EXPORTS[key] = (str(out), export_onnx(source, out, task=task, **options))
    return _EXPORTS[key]

# Sentences of varied kinds (paraphrases, an unrelated one, unicode) for the pipeline and model tests.
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "Café naïve résumé — 東京 is lovely in spring!",
]


def fuzz(examples: int):
    """The hypothesis settings of the fuzz suite (tests/fuzz): a bounded number of examples for CI, no deadline
    (2 shared cores), no example database written into the checkout."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def assert_close_real(actual: torch.Tensor, expected: torch.Tensor, batch: dict, atol: float) -> None:
    """(B, S, ...) outputs compared at real tokens: the padding-free path leaves zeros at padding positions."""
    real = batch["attention_mask"].bool()
    assert_close(actual[real], expected[real], atol)


def st_folder(out, encoder_dir: str, pooling, dense: bool = False, normalize: bool = False, **options) -> str:
    """A sentence-transformers folder saved by sentence-transformers itself: Transformer -> Pooling -> Dense? ->
    Normalize? around ``encoder_dir``. ``options``: max_seq_length, do_lower_case, include_prompt, prompts,
    default_prompt_name."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(encoder_dir, max_seq_length=options.get("max_seq_length"),
                              do_lower_case=options.get("do_lower_case", False))
    pooling_module = Pooling(TINY["hidden_size"], pooling_mode=pooling,
                             include_prompt=options.get("include_prompt", True))
    modules = [transformer, pooling_module]
    if dense:
        torch.manual_seed(3)
        modules.append(Dense(pooling_module.get_embedding_dimension(), 24))
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=options.get("prompts"),
                                default_prompt_name=options.get("default_prompt_name"))
    model.save(str(out))
    return str(out)


def sparse_encoder_folder(out, mlm_dir: str, pooling: str = "max", activation: str = "relu", max_seq_length: int = 16,
                          **prompts) -> str:
    """A SparseEncoder (Transformer fill-mask -> SpladePooling) around ``mlm_dir``, saved by sentence-transformers;
    ``prompts``: its prompts and default_prompt_name."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    modules = [Transformer(mlm_dir, transformer_task="fill-mask", max_seq_length=max_seq_length),
               SpladePooling(pooling_strategy=pooling, activation_function=activation)]
    SparseEncoder(modules=modules, device="cpu", **prompts).save(str(out))
    return str(out)
