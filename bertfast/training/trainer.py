"""BERT pretraining: the MLM + NSP loss, AdamW with linear warm-up and decay, the loop, checkpoints, resume.

``run_pretraining`` implements ``bertfast pretrain``. A run tokenizes the corpus once (tokenization is the
costly, epoch-independent part), draws fresh NSP pairs every epoch and masks every batch anew (see
``bertfast.training.pretraining``). A checkpoint directory holds what ``from_pretrained`` of bertfast and of
transformers load (config.json, model.safetensors, tokenizer files) and, beside it, ``trainer_state.pt``:
optimizer, loss scaler, step (the learning rate schedule is a function of it), data position and RNG
states, so that a resumed run continues exactly as an uninterrupted one would (same data arguments: a resume
checks them). The folder is swapped in whole with a manifest (``bertfast.training.checkpoints``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import BinaryIO
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from bertfast.atomic import replacing_directory
from bertfast.config import PRESETS, BertConfig, resolve_dtype
from bertfast.heads.pretraining import BertForPreTraining
from bertfast.device import default_device, resolve_device
from bertfast.training.checkpoints import (TRAINER_STATE, check_out_dir, check_resume_data, data_signature,
                                           differences, disk_full_message, load_trainer_state, read_manifest,
                                           save_torch, verify_checkpoint, write_manifest)
from bertfast.training.distributed import Distributed, example_seed
from bertfast.training.losses import (PretrainingLoss, PretrainingSums, _metrics, batch_counts,  # noqa: F401
                                      evaluate, pretraining_loss, pretraining_sums)
from bertfast.training.pretraining import (Document, PairBatches, PretrainingCollator, check_masking_options,
                                           check_pair_options, read_documents, tokenize_documents)
from bertfast.training.streaming import StreamingCorpus, StreamingPairBatches
from bertfast.tokenizer import BertTokenizer

WARMUP_FRACTION = 0.1  # of the steps, when warmup_steps is not given


@dataclass
class PretrainingArguments:
    steps: int = 1000  # optimizer steps in total; a resumed run continues up to this count
    batch_size: int = 32  # sentence pairs per rank and micro-batch: a step sees batch_size x ranks x grad_accum
    grad_accum: int = 1  # micro-batches whose gradients are summed before each optimizer step
    max_seq_length: int = 128  # tokens per pair, the 3 special tokens included
    learning_rate: float = 1e-4  # peak learning rate, reached at the end of the warm-up
    warmup_steps: int | None = None  # linear warm-up from 0 (None: WARMUP_FRACTION of steps), then decay to 0
    weight_decay: float = 0.01  # AdamW's decoupled weight decay; never on biases and LayerNorm weights
    max_grad_norm: float = 1.0  # clip the global gradient L2 norm to this; 0 turns clipping off
    mlm_probability: float = 0.15  # fraction of the tokens that are predicted
    max_predictions_per_seq: int | None = None  # cap on predicted tokens per pair (BERT: 20 at length 128)
    whole_word_mask: bool = False  # mask a word's ## pieces together
    short_seq_prob: float = 0.1  # probability of a shorter target length for a document's pairs
    seed: int = 0  # seeds initialisation, pair sampling, masking and dropout
    device: str = dataclasses.field(default_factory=default_device)  # "cpu" or "cuda" (default: cuda if present)
    dtype: str = "float32"  # "bfloat16" / "float16": autocast on CUDA (master weights stay float32)
    save_every: int | None = None  # also checkpoint every N steps (always at the end)
    progress: bool = True  # show a tqdm progress bar (rank 0)
    log_file: str | None = None  # rank 0 appends each step's metrics to this file, one JSON object per line
    stream: bool = False  # read the corpus in shards through a bounded shuffle buffer (bertfast.training.streaming)
    cache: str | None = None  # a folder of token ids: a later run reads them and never tokenizes (implies stream)
    shard_documents: int = 1000  # streaming: documents tokenized (and paired) together
    shuffle_buffer: int = 10000  # streaming: sentence pairs mixed before batching

    def __post_init__(self) -> None:
        if self.cache is not None:
            self.stream = True  # the cache is read a shard at a time

    def validate(self) -> None:
        """Every field's type and range (numbers finite), before anything is read: a ValueError naming the field."""
        for name, low in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("max_seq_length", 1), ("seed", 0),
                          ("shard_documents", 2), ("shuffle_buffer", 1),
                          ("warmup_steps", 0), ("save_every", 1), ("max_predictions_per_seq", 1)):
            value = getattr(self, name)
            optional = name in ("warmup_steps", "save_every", "max_predictions_per_seq")
            if not (value is None and optional) and (not isinstance(value, int) or isinstance(value, bool)
                                                     or not low <= value < 2 ** 63):
                raise ValueError(f"{name} must be {'None or ' if optional else ''}an int >= {low}, got {value!r}")
        for name, in_range, allowed in (("learning_rate", lambda v: 0 < v <= 1, "in (0, 1]"),
                                        ("weight_decay", lambda v: v >= 0, ">= 0"),
                                        ("max_grad_norm", lambda v: v >= 0, ">= 0 (0: no clipping)"),
                                        ("mlm_probability", lambda v: 0 < v < 1, "in (0, 1)"),
                                        ("short_seq_prob", lambda v: 0 <= v <= 1, "in [0, 1]")):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or not in_range(value)):
                raise ValueError(f"{name} must be {allowed} (a finite number), got {value!r}")
        check_masking_options(self.mlm_probability, self.max_predictions_per_seq)  # before the corpus is read
        check_pair_options(self.max_seq_length, self.short_seq_prob)
        if self.log_file is not None and not isinstance(self.log_file, (str, os.PathLike)):
            raise ValueError(f"log_file must be None or a path, got {self.log_file!r}")
        if self.cache is not None and not isinstance(self.cache, (str, os.PathLike)):
            raise ValueError(f"cache must be None or a folder path, got {self.cache!r}")
        for name in ("whole_word_mask", "progress", "stream"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        device = resolve_device(self.device)
        if resolve_dtype(self.dtype) != torch.float32 and device.type != "cuda":
            raise ValueError(f"dtype {self.dtype!r} turns on autocast, which the trainer runs on CUDA only: "
                             "use --device cuda, or --dtype float32 on the CPU")


class TrainingDivergedError(ValueError):
    """The loss or the gradient norm became NaN or infinite: training stops before the step that would spread it
    into the weights (the last checkpoint on disk is kept)."""


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as BERT sets it up (betas 0.9/0.999, eps 1e-6), without weight decay on 1-D parameters (biases and
    LayerNorm weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-6,
                             fused=params[0].device.type == "cuda")


def _linear_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly from 0 to its peak over ``warmup_steps``, then falling linearly to 0 at
    ``total_steps`` (transformers' ``get_linear_schedule_with_warmup``), positioned at ``step`` steps done."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(_linear_factor, warmup=warmup_steps, total=total_steps), last_epoch=step - 1)


class Trainer:
    """Pretrains a ``BertForPreTraining`` on tokenized documents (see ``PretrainingArguments``), in one process or
    as one rank of a torchrun launch (``bertfast.training.distributed``): DistributedDataParallel, each rank
    running its micro-batches of every global batch; rank 0 alone writes checkpoints and logs."""

    def __init__(self, model: BertForPreTraining, tokenizer: BertTokenizer,
                 documents: Sequence[Document] | StreamingCorpus, args: PretrainingArguments) -> None:
        args.validate()
        config = model.config
        if args.max_seq_length > config.max_position_embeddings:
            raise ValueError(f"--max-seq-length (max_seq_length) {args.max_seq_length} exceeds the model's "
                             f"max_position_embeddings: pass --max-seq-length {config.max_position_embeddings} or less")
        if len(tokenizer) > config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                             f"{config.vocab_size}: pass the vocabulary the model was trained with")
        self.args, self.tokenizer = args, tokenizer
        self.dist = Distributed.from_environment(resolve_device(args.device))
        self.device, self.dtype = self.dist.device(resolve_device(args.device)), resolve_dtype(args.dtype)
        self.model = model.to(self.device).train()
        global_batch = args.batch_size * self.dist.world_size * args.grad_accum
        if isinstance(documents, StreamingCorpus):
            self.data = StreamingPairBatches(documents, global_batch, args.max_seq_length, args.short_seq_prob,
                                             args.seed, args.shuffle_buffer)
        else:
            self.data = PairBatches(documents, global_batch, args.max_seq_length, args.short_seq_prob, args.seed)
        self.collator = PretrainingCollator(tokenizer, args.mlm_probability, args.max_predictions_per_seq,
                                            args.whole_word_mask)  # each pair masked with its example_seed
        self.engine: torch.nn.Module = PretrainingSums(self.model)
        if self.dist.world_size > 1:  # rank 0's weights are broadcast to every rank here
            self.engine = DistributedDataParallel(self.engine, device_ids=[self.device.index]
                                                  if self.device.type == "cuda" else None)
            torch.manual_seed(args.seed + self.dist.rank)  # dropout differs between ranks
        self.optimizer = build_optimizer(self.model, args.learning_rate, args.weight_decay)
        self.warmup_steps = int(args.steps * WARMUP_FRACTION) if args.warmup_steps is None else args.warmup_steps
        self.scheduler = linear_schedule(self.optimizer, self.warmup_steps, args.steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step = self.epoch = self.batch_index = 0  # steps done; position of the next batch
        streamed = isinstance(documents, StreamingCorpus)
        self.signature = data_signature(signature_arguments(args, self.dist), tokenizer,
                                        None if streamed else documents)
        if streamed:
            self.signature["corpus"] = documents.signature
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed from
        self.checkpoint_dir: str | None = None  # ... and its folder, which train() may write to again

    def micro_batches(self, epoch: int, index: int, pairs: list) -> list[dict[str, torch.Tensor]]:
        """This rank's collated micro-batches of global batch ``index`` of ``epoch``; each pair masked with the seed
        of its place in the epoch's stream."""
        first = index * len(pairs)
        return [self.collator([pair for _, pair in part],
                              [example_seed(self.args.seed, epoch, first + i) for i, _ in part])
                for part in self.dist.micro_batches(pairs, self.args.grad_accum)]

    def train_step(self, micro_batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step on this rank's collated micro-batches of a global batch; returns the global batch's
        loss, accuracies, token count, gradient norm (before clipping) and learning rate. Each micro-batch's loss is
        its sums over the global counts (labelled positions, pairs), so the accumulated, rank-averaged gradient is
        the global batch's mean loss's. A non-finite loss or gradient norm raises ``TrainingDivergedError`` before
        the optimizer step (with float16's loss scaling, an infinite gradient norm only skips the step)."""
        batches = [{k: v.to(self.device, non_blocking=True) for k, v in b.items()} for b in micro_batches]
        counts = self.dist.all_reduce_sum(torch.stack([batch_counts(b) for b in batches]).sum(0))  # (3,)
        lr = self.scheduler.get_last_lr()[0]
        sums = torch.zeros(4, device=self.device)
        for m, batch in enumerate(batches):
            last = m == len(batches) - 1
            with contextlib.nullcontext() if last or self.dist.world_size == 1 else self.engine.no_sync():
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                    part = self.engine(batch)  # (4,)
                loss = (part[0] / counts[0] + part[1] / counts[1]) * self.dist.world_size  # DDP averages over ranks
                self.scaler.scale(loss).backward()
            sums += part.detach()
        self.dist.all_reduce_sum(sums)
        mlm_loss, nsp_loss = sums[0] / counts[0], sums[1] / counts[1]
        out = PretrainingLoss(mlm_loss + nsp_loss, mlm_loss, nsp_loss, sums[2], sums[3])
        self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        metrics = {**_metrics(out, counts, grad_norm), "lr": lr}  # the step's one host synchronisation
        self._check_finite(metrics)
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.args.max_grad_norm, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def _kept(self) -> str:
        return ("no checkpoint was written by this run" if self.saved_step is None
                else f"the last checkpoint (step {self.saved_step}) is kept")

    def _check_finite(self, metrics: dict[str, float]) -> None:
        checked = ("loss", "grad_norm") if not self.scaler.is_enabled() else ("loss",)
        bad = [name for name in checked if not math.isfinite(metrics[name])]
        if bad:
            kept = self._kept()
            what = "loss" if bad[0] == "loss" else "gradient norm"
            raise TrainingDivergedError(
                f"step {self.step + 1}: the {what} is {metrics[bad[0]]} (learning rate {metrics['lr']:g}); training "
                f"stopped before the optimizer step and {kept}. Lower --learning-rate (or raise --warmup-steps), "
                f"clip with --max-grad-norm, or use --dtype float32")

    def train(self, out_dir: str | os.PathLike, overwrite: bool = False) -> list[dict[str, float]]:
        """Train up to ``args.steps``, checkpointing into ``out_dir``; returns the metrics of each step run.

        ``out_dir`` must be new or empty, the folder this trainer resumed from or last saved to, or (``overwrite``)
        a folder of files to replace; it is checked before the first step.
        """
        if self.dist.is_main:
            check_out_dir(out_dir, overwrite, self.checkpoint_dir)
        self.dist.barrier()
        history: list[dict[str, float]] = []
        batches = self.data(self.epoch, self.batch_index)
        tokens, start = 0, time.perf_counter()
        # unbuffered: a failed write (a full disk) leaves nothing behind for close() to fail on again
        log = open(self.args.log_file, "ab", buffering=0) if self.args.log_file and self.dist.is_main else None
        with tqdm(total=self.args.steps, initial=self.step, desc="pretrain", unit="step",
                  disable=not self.args.progress or not self.dist.is_main) as bar, log or contextlib.nullcontext():
            while self.step < self.args.steps:
                self.epoch, index, pairs = next(batches)
                self.batch_index = index + 1
                metrics = self.train_step(self.micro_batches(self.epoch, index, pairs))
                self.step += 1
                tokens += metrics["tokens"]
                metrics["tokens_per_s"] = tokens / (time.perf_counter() - start)
                history.append(metrics)
                if log is not None:
                    self._log(log, {"step": self.step, **metrics})
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", mlm_acc=f"{metrics['mlm_accuracy']:.3f}",
                                nsp_acc=f"{metrics['nsp_accuracy']:.2f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
                bar.update()
                if self.args.save_every and self.step % self.args.save_every == 0 and self.step < self.args.steps:
                    self.save(out_dir)
        self.save(out_dir)
        return history

    def _log(self, log: BinaryIO, metrics: dict[str, float]) -> None:
        """One JSON line of ``metrics`` into the open ``log_file``; a full disk is one line naming it."""
        try:
            log.write((json.dumps(metrics) + "\n").encode("utf-8"))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            error = OSError(f"no space left for --log-file {os.path.abspath(self.args.log_file)} at step {self.step}: "
                            f"training stopped and {self._kept()}; free some space there or point --log-file "
                            f"elsewhere")
            error.errno = e.errno
            raise error from e

    def save(self, directory: str | os.PathLike) -> None:
        """A HF-compatible checkpoint (config.json, model.safetensors, tokenizer files) + trainer_state.pt and the
        manifest, written beside ``directory`` and swapped in whole (the previous checkpoint there is replaced); by
        rank 0 alone, the other ranks waiting until it is in place. The masking needs no state: it is seeded per
        example; ``torch_rng`` (dropout) is each rank's, in rank order."""
        rng = self.dist.gather_to_all(torch.get_rng_state())
        if self.dist.is_main:
            state = {"step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                     "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                     "torch_rng": rng[0], "rank_torch_rng": rng,
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                     "arguments": dataclasses.asdict(self.args)}
            with disk_full_message(directory), replacing_directory(directory) as new:
                self.model.save_pretrained(new)
                self.tokenizer.save_pretrained(new)
                save_torch(state, os.path.join(new, TRAINER_STATE))
                write_manifest(new, self.step, self.signature, _config_of(self.model))
        self.dist.barrier()
        self.saved_step, self.checkpoint_dir = self.step, os.fspath(directory)

    def load_state(self, directory: str | os.PathLike, allow_data_changes: bool = False) -> None:
        """Continue from a checkpoint written by ``save`` (the model weights are loaded by ``from_pretrained``).

        The checkpoint's files are checked against its manifest, its data arguments, vocabulary and corpus against
        this run's (a difference is an error, a warning with ``allow_data_changes``) and its model config against
        this model's. The learning rate is a function of the step: the schedule is rebuilt at the saved step for
        this run's ``steps``, so resuming with a larger ``steps`` stretches the decay from where the run stands.
        """
        manifest = read_manifest(directory)
        verify_checkpoint(directory, manifest)
        changed = differences(manifest["config"], _config_of(self.model))
        if changed:
            raise ValueError(f"the model's config differs from the checkpoint's in {directory} ({'; '.join(changed)}): "
                             f"resume with the checkpoint's own model (--resume loads it)")
        check_resume_data(manifest["data"], self.signature, allow_data_changes)
        state = load_trainer_state(directory, manifest)
        if state["step"] >= self.args.steps:
            raise ValueError(f"the checkpoint in {directory} is already at step {state['step']}: pass a larger "
                             f"--steps (the total step count) to train further")
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self.scheduler = linear_schedule(self.optimizer, self.warmup_steps, self.args.steps, self.step)
        ranks = state.get("rank_torch_rng", [])
        torch.set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.saved_step, self.checkpoint_dir = self.step, os.fspath(directory)


def signature_arguments(args: PretrainingArguments, dist: Distributed) -> dict:
    """The arguments the data signature records: the fields, and the number of ranks (global batch = batch_size x
    ranks x grad_accum, so the stream of batches depends on it)."""
    return {**dataclasses.asdict(args), "world_size": dist.world_size}


def _config_of(model: BertForPreTraining) -> dict:
    """The model config as the manifest records it, in its JSON form (so it compares equal after a round trip:
    int dict keys become strings); ``architectures`` is informational and left out."""
    return json.loads(json.dumps({k: v for k, v in model.config.to_dict().items() if k != "architectures"}))


def load_tokenizer(vocab: str | None, model_dir: str | None) -> BertTokenizer:
    """The vocabulary: ``vocab`` (a vocab.txt file or a tokenizer directory), else the model directory's."""
    if vocab is not None:
        return BertTokenizer(vocab) if os.path.isfile(vocab) else BertTokenizer.from_pretrained(vocab)
    if model_dir is None:
        raise ValueError("a new model (--config) needs a vocabulary: pass --vocab with a vocab.txt file or a "
                         "tokenizer directory (e.g. a bert-base-uncased checkpoint)")
    try:
        return BertTokenizer.from_pretrained(model_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} Or pass --vocab with a vocab.txt file or a tokenizer directory.") from err


def build_model(tokenizer: BertTokenizer, model: str | None = None, config: str | None = None,
                allow_missing_weights: bool = True) -> BertForPreTraining:
    """A checkpoint to continue from (heads it lacks are initialised unless ``allow_missing_weights`` is False),
    or a new random model from a preset name or a config.json path whose vocab_size becomes the tokenizer's."""
    if config is None:
        return BertForPreTraining.from_pretrained(model, allow_missing_weights=allow_missing_weights)
    if config in PRESETS:
        bert_config = BertConfig.from_preset(config)
    elif os.path.isfile(config):
        bert_config = BertConfig.from_json_file(config)
    else:
        raise ValueError(f"--config {config!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a config.json")
    return BertForPreTraining(dataclasses.replace(bert_config, vocab_size=len(tokenizer)))


def run_pretraining(corpus: str | os.PathLike, out_dir: str | os.PathLike, args: PretrainingArguments,
                    model: str | None = None, config: str | None = None, vocab: str | None = None,
                    resume: str | None = None, overwrite: bool = False,
                    allow_data_changes: bool = False) -> list[dict[str, float]]:
    """``bertfast pretrain``: train from exactly one of ``model`` (a checkpoint), ``config`` (a new model) or
    ``resume`` (a directory this command wrote); returns the per-step metrics.

    Everything that can be checked is checked before the corpus is read: the arguments, ``out_dir`` (new or
    empty, the ``resume`` folder, or replaced with ``overwrite``) and, when resuming, the checkpoint's manifest
    and data arguments (see ``Trainer.load_state``).
    """
    if sum(source is not None for source in (model, config, resume)) != 1:
        raise ValueError("pass exactly one of --model (start from a checkpoint), --config (a new model from a "
                         "preset or config.json) and --resume (continue a run from its output directory)")
    args.validate()
    dist = Distributed.from_environment(resolve_device(args.device))
    for turn in ("main", "others"):  # rank 0 first: checking a folder may finish or undo an interrupted save
        if dist.is_main == (turn == "main"):
            check_out_dir(out_dir, overwrite, resume)
            manifest = read_manifest(resume) if resume is not None else None
        dist.barrier()
    tokenizer = load_tokenizer(vocab, model or resume)
    if manifest is not None:
        check_resume_data(manifest["data"], data_signature(signature_arguments(args, dist), tokenizer),
                          allow_data_changes)
    if args.stream or args.cache is not None:
        documents = StreamingCorpus(corpus, tokenizer, args.shard_documents, args.cache)
        for turn in ("main", "others"):  # rank 0 writes the token cache; the others then read it
            if dist.is_main == (turn == "main"):
                documents.prepare()
            dist.barrier()
    else:
        documents = tokenize_documents(read_documents(corpus), tokenizer)
    torch.manual_seed(args.seed)
    trainer = Trainer(build_model(tokenizer, model or resume, config, allow_missing_weights=resume is None),
                      tokenizer, documents, args)
    if resume is not None:
        trainer.load_state(resume, allow_data_changes)
    return trainer.train(out_dir, overwrite)
