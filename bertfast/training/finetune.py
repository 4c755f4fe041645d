"""``bertfast finetune`` / ``bertfast.finetune``: train a task head (and the encoder, or LoRA adapters only) on a
labelled file, evaluate on a held-out one each epoch and keep the best epoch's model.

The loss is the task model's own (``model(**batch, labels=...)``: transformers' losses, checked against them in
the tests); AdamW without decay on biases and LayerNorm weights, linear warm-up and decay over the optimizer
steps, gradient clipping. Under ``torchrun`` it runs DistributedDataParallel as pretraining does
(``bertfast.training.distributed``): every rank orders an epoch with the same seeded permutation and takes its
rows of each global batch (per-rank batch x ranks x ``grad_accum``; with several ranks or accumulation steps the
incomplete last global batch of an epoch is left out, so that every rank has a full micro-batch); rank 0 alone
evaluates, logs and writes. The output folder is swapped in whole (``bertfast.atomic``) each time an epoch beats
the best so far: a model folder that bertfast's and transformers' ``from_pretrained`` and pipelines load, or with
``lora`` a PEFT adapter folder; ``finetune_results.json`` beside it holds every epoch's metrics.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from bertfast.atomic import check_out_dir, replacing_directory
from bertfast.config import PROBLEM_TYPES, resolve_dtype
from bertfast.models.registry import read_config
from bertfast.hub import resolve_file
from bertfast.device import default_device, resolve_device
from bertfast.tasks import DEFAULT_FINETUNE_TASK, TaskSpec, get_task, load, task_names
from bertfast.auto_tokenizer import AutoTokenizer
from bertfast.tokenizer_base import TokenizerBase
from bertfast.training import metrics as task_metrics
from bertfast.training.checkpoints import disk_full_message
from bertfast.training.distributed import Distributed
from bertfast.training.finetune_data import TextClassificationData, TokenClassificationData, label_set
from bertfast.training.lora import LoraSpec, apply_lora, write_adapter
from bertfast.training.qa_data import QuestionAnsweringData
from bertfast.training.trainer import build_optimizer, linear_schedule

# task -> its table entry, for the tasks finetune trains (the entry's model class, head and ``finetune`` part)
TASKS: dict[str, TaskSpec] = {task: get_task(task) for task in task_names("finetune")}
RESULTS_FILE = "finetune_results.json"


@dataclass
class FinetuneArguments:
    task: str = DEFAULT_FINETUNE_TASK  # one of TASKS
    epochs: int = 3  # passes over the training file
    batch_size: int = 16  # examples per rank and micro-batch: a step sees batch_size x ranks x grad_accum
    grad_accum: int = 1  # micro-batches whose gradients are summed before each optimizer step
    learning_rate: float = 5e-5  # peak learning rate (LoRA usually wants ~1e-4 to 1e-3)
    warmup_ratio: float = 0.1  # fraction of the optimizer steps spent warming up linearly from 0
    weight_decay: float = 0.01  # AdamW's decoupled weight decay; never on biases and LayerNorm weights
    max_grad_norm: float = 1.0  # clip the global gradient L2 norm to this; 0 turns clipping off
    max_length: int | None = None  # tokens per example (QA: per window), special tokens included; None: the
    # task's ``finetune.max_length`` (bertfast.tasks), or the model's max_position_embeddings where that is less
    doc_stride: int | None = None  # question answering: context tokens consecutive windows share; None: min(128,
    # max_length // 2), as the question-answering pipeline
    seed: int = 0  # seeds the new head, LoRA's A matrices, the order of the examples and dropout
    device: str = dataclasses.field(default_factory=default_device)  # "cpu" or "cuda"
    dtype: str = "float32"  # "bfloat16" / "float16": autocast on CUDA (master weights stay float32)
    text_column: str = "text"  # the text (token classification: the words, a JSON list or space-separated)
    text_pair_column: str | None = None  # an optional second text (sentence pairs)
    label_column: str = "label"  # the label (token classification: the word labels)
    problem_type: str = "single_label_classification"  # text classification: also multi_label / regression
    labels: list[str] | None = None  # label names in id order (default: the training file's, sorted)
    num_labels: int | None = None  # with labels None: labels are the ids 0..num_labels-1
    lora: str | None = None  # "r,alpha[,targets]": train a LoRA adapter instead of all weights
    progress: bool = True  # show a tqdm progress bar (rank 0)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem type {self.problem_type!r}: use one of {', '.join(PROBLEM_TYPES)}")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "doc_stride"):
            value = getattr(self, name)
            if (value is not None or name not in ("max_length", "doc_stride")) and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, ok, allowed in (("learning_rate", lambda v: 0 < v <= 1, "in (0, 1]"),
                                  ("warmup_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
                                  ("weight_decay", lambda v: v >= 0, ">= 0"), ("max_grad_norm", lambda v: v >= 0, ">= 0")):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        if self.num_labels is not None and (not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool)
                                            or self.num_labels < 1):
            raise ValueError(f"--num-labels (num_labels) must be an int >= 1, got {self.num_labels!r}")
        if self.num_labels is not None and self.labels is not None and self.num_labels != len(self.labels):
            raise ValueError(f"--num-labels {self.num_labels} but --labels names {len(self.labels)} labels")
        if self.lora is not None:
            LoraSpec.parse(self.lora)
        if resolve_dtype(self.dtype) != torch.float32 and resolve_device(self.device).type != "cuda":
            raise ValueError(f"dtype {self.dtype!r} turns on autocast, which fine-tuning runs on CUDA only: use "
                             f"--device cuda, or --dtype float32 on the CPU")


def _given_labels(args: FinetuneArguments) -> list[str] | None:
    return args.labels or ([str(i) for i in range(args.num_labels)] if args.num_labels else None)


def text_classification_data(args: FinetuneArguments, tokenizer: TokenizerBase,
                             rows: list[dict]) -> tuple[TextClassificationData, list[str]]:
    """The data object and label names of text classification (the table's ``finetune.data``)."""
    labels = _given_labels(args)
    names = label_set(rows, args.label_column, args.problem_type, labels) if args.label_column in rows[0] else labels
    if not names:
        raise ValueError(f"the training file has no column {args.label_column!r} (columns: {', '.join(rows[0])}): "
                         f"name the label column with --label-column")
    return TextClassificationData(tokenizer, names, args.problem_type, args.text_column, args.text_pair_column,
                                  args.label_column, args.max_length), names


def token_classification_data(args: FinetuneArguments, tokenizer: TokenizerBase,
                              rows: list[dict]) -> tuple[TokenClassificationData, list[str]]:
    """The data object and tag names of token classification."""
    words = TokenClassificationData.words
    names = _given_labels(args) or sorted({tag for row in rows for tag in words(row.get(args.label_column, ""))})
    return TokenClassificationData(tokenizer, names, args.text_column, args.label_column, args.max_length), names


def question_answering_data(args: FinetuneArguments, tokenizer: TokenizerBase,
                            rows: list[dict]) -> tuple[QuestionAnsweringData, None]:
    """The data object of question answering (no label names: start and end positions)."""
    return QuestionAnsweringData(tokenizer, args.max_length, args.doc_stride), None


def check_classes(args: FinetuneArguments, labels: list[str] | None, train: str | os.PathLike) -> None:
    """Single-label text classification and token classification choose one label of several: one label alone is
    an error (its softmax always says 1: a loss of 0 and an accuracy of 1, whatever the model does)."""
    by_problem = TASKS[args.task].finetune.problem_types
    single = not by_problem or args.problem_type == "single_label_classification"
    if not single or labels is None or len(labels) >= 2:
        return
    source = ("--labels (labels)" if args.labels else "--num-labels (num_labels)" if args.num_labels
              else f"the training file {os.fspath(train)}")
    other = " (or --problem-type regression for one numeric output)" if by_problem else ""
    raise ValueError(f"{source} gives one label only ({labels[0]!r}): {args.task} needs at least two classes; add "
                     f"rows of the other classes, or name every label with --labels{other}")


def resolved_lengths(model: str, args: FinetuneArguments) -> FinetuneArguments:
    """``args`` with max_length (checked against the model's positions, max_position_embeddings of its config.json,
    or the task's default, at most that many) and doc_stride (default: min(128, max_length // 2)) filled in."""
    limit = read_config(resolve_file(model, "config.json")).max_sequence_length
    if args.max_length is not None and args.max_length > limit:
        raise ValueError(f"--max-length (max_length) {args.max_length} is above the model's limit of {limit} tokens "
                         f"(max_position_embeddings in the config.json of {model}): pass --max-length {limit} or less")
    default = TASKS[args.task].finetune.max_length
    max_length = min(default, limit) if args.max_length is None else args.max_length
    doc_stride = min(128, max_length // 2) if args.doc_stride is None else args.doc_stride
    return dataclasses.replace(args, max_length=max_length, doc_stride=doc_stride)


def load_model(model: str, args: FinetuneArguments, labels: list[str] | None):
    spec = TASKS[args.task]
    if labels is None:  # question answering: start and end
        return spec.model_class.from_pretrained(model, num_labels=2)
    loaded = spec.model_class.from_pretrained(model, id2label=dict(enumerate(labels)))
    if spec.finetune.problem_types:
        loaded.config.problem_type = args.problem_type
    return loaded


def finetune(model: str, train: str | os.PathLike, eval: str | os.PathLike, out: str | os.PathLike,
             args: FinetuneArguments | None = None, overwrite: bool = False) -> dict:
    """Fine-tune checkpoint ``model`` on ``train`` (CSV / TSV / JSON Lines; SQuAD JSON for question answering),
    evaluating on ``eval`` after each epoch; ``out`` receives the best epoch's model (or LoRA adapter). Returns
    {"epochs": [per-epoch metrics], "best": the best epoch's, "metric": the metric compared} (under torchrun: on
    rank 0, which evaluates; the other ranks' lists stay empty)."""
    args = args or FinetuneArguments()
    args.validate()
    dist = Distributed.from_environment(resolve_device(args.device))
    if dist.is_main:
        check_out_dir(out, overwrite, lambda where, _: f"--out {where} is not empty: choose a new --out, or pass "
                                                       f"--overwrite (overwrite=True) to replace what it holds",
                      only_files=True)
    dist.barrier()
    device, dtype = dist.device(resolve_device(args.device)), resolve_dtype(args.dtype)
    args = resolved_lengths(model, args)
    tokenizer = AutoTokenizer.from_pretrained(model)
    spec = TASKS[args.task]
    reader = load(spec.finetune.reader)
    train_rows, eval_rows = reader(train), reader(eval)
    data, labels = load(spec.finetune.data)(args, tokenizer, train_rows)
    check_classes(args, labels, train)
    train_features, eval_features = data.features(train_rows, train), data.features(eval_rows, eval)
    global_batch = args.batch_size * dist.world_size * args.grad_accum
    if len(train_features) < global_batch:
        raise ValueError(f"{os.fspath(train)} gives {len(train_features)} training examples, fewer than one global "
                         f"batch of {global_batch} (per-rank batch x ranks x gradient accumulation): use a smaller "
                         f"--batch-size or fewer ranks")
    torch.manual_seed(args.seed)
    net = load_model(model, args, labels).to(device).train()
    heads = [prefix.rstrip(".") for prefix in net.new_head_prefixes] or [spec.head]  # every module of the new head
    lora = LoraSpec.parse(args.lora) if args.lora else None
    adapted = apply_lora(net, lora, heads) if lora else None
    engine = net if dist.world_size == 1 else DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(args.seed + dist.rank)  # dropout differs between ranks
    keep_last = dist.world_size * args.grad_accum == 1
    steps_per_epoch = len(train_features) // global_batch + (keep_last and len(train_features) % global_batch > 0)
    total = steps_per_epoch * args.epochs
    optimizer = build_optimizer(net, args.learning_rate, args.weight_decay)
    scheduler = linear_schedule(optimizer, int(total * args.warmup_ratio), total)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    metric = task_metrics.best_metric(args.task, args.problem_type)
    results: dict = {"epochs": [], "best": None, "metric": metric}
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not args.progress or not dist.is_main)
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(args.seed + epoch))
        losses = []
        for start in range(0, steps_per_epoch * global_batch, global_batch):
            batch_ids = order[start:start + global_batch].tolist()
            parts = [batch_ids] if keep_last else [[i for _, i in part]
                                                   for part in dist.micro_batches(batch_ids, args.grad_accum)]
            losses.append(_step(engine, net, data, [[train_features[i] for i in part] for part in parts], optimizer,
                                scheduler, scaler, args, dist, device, dtype))
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", epoch=epoch + 1)
        if dist.is_main:
            scores = task_metrics.evaluate(net, data, eval_features, eval_rows, args, device)
            scores = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), **scores}
            results["epochs"].append(scores)
            better = task_metrics.is_better(metric, scores[metric], results["best"] and results["best"][metric])
            if better:
                results["best"] = scores
            _save(out, net, tokenizer, results, adapted, lora, heads, args.task, model, save_model=better)
        dist.barrier()
    bar.close()
    return results


def _step(engine, net, data, micro_features, optimizer, scheduler, scaler, args, dist, device, dtype) -> float:
    """One optimizer step over this rank's micro-batches; returns the step's loss averaged over them and the ranks."""
    total = torch.zeros((), device=device)
    for m, features in enumerate(micro_features):
        batch = {k: v.to(device) for k, v in data.collate(features).items()}
        last = m == len(micro_features) - 1
        with contextlib.nullcontext() if last or dist.world_size == 1 else engine.no_sync():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = engine(**batch).loss / len(micro_features)
            scaler.scale(loss).backward()
        total += loss.detach()
    scaler.unscale_(optimizer)
    parameters = [p for p in net.parameters() if p.grad is not None]
    if args.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    value = dist.all_reduce_sum(total).item() / dist.world_size
    if not math.isfinite(value):
        raise ValueError(f"the training loss became {value}: lower --learning-rate or use --dtype float32")
    return value


def _save(out, net, tokenizer, results, adapted, spec, heads, task, base_model, save_model: bool) -> None:
    """The folder ``out`` swapped in whole: the best model (or adapter) and the results so far; when this epoch is
    not the best, the best model's files are carried over unchanged and only the results are new."""
    with disk_full_message(out), replacing_directory(out, owned=None if save_model else [RESULTS_FILE]) as new:
        if save_model and adapted is not None:
            write_adapter(new, net, adapted, spec, heads, task, os.fspath(base_model))
            tokenizer.save_pretrained(new)
        elif save_model:
            net.save_pretrained(new)
            tokenizer.save_pretrained(new)
        with open(os.path.join(new, RESULTS_FILE), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
