"""``bertfast pretrain`` and ``bertfast finetune``: their options (defaults from the argument dataclasses) and runs."""
from __future__ import annotations

import argparse
import dataclasses

from bertfast.cli.common import emit, number, table
from bertfast.config import PROBLEM_TYPES
from bertfast.training.distributed import is_main_process, process_group
from bertfast.training.finetune import TASKS as FINETUNE_TASKS, FinetuneArguments, finetune
from bertfast.training.trainer import WARMUP_FRACTION, PretrainingArguments, run_pretraining


def cmd_pretrain(args: argparse.Namespace) -> None:
    options = PretrainingArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainingArguments)})
    with process_group():
        history = run_pretraining(args.corpus, args.out, options, model=args.model, config=args.config,
                                  vocab=args.vocab, resume=args.resume, overwrite=args.overwrite,
                                  allow_data_changes=args.allow_data_changes)
    if not is_main_process():
        return
    result = {"out": args.out, "steps_run": len(history), "last_step": history[-1]}
    emit(args, result, lambda r: [f"checkpoint: {r['out']}  ({r['steps_run']} steps run)"]
          + table([(k, number(v)) for k, v in r["last_step"].items()]))


def pretrain_parser(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint directory or hub id to continue pretraining")
    source.add_argument("--config", help="a new random model: preset name (e.g. tiny) or config.json path")
    source.add_argument("--resume", help="output directory of an earlier run to continue from")
    p.add_argument("--corpus", required=True, help="text file: one sentence per line, blank line between documents")
    p.add_argument("--vocab", help="vocab.txt or tokenizer directory (needed with --config)")
    p.add_argument("--out", required=True, help="checkpoint directory to write: new or empty, the --resume one, "
                                                "or replaced with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds (a checkpoint or model)")
    p.add_argument("--allow-data-changes", action="store_true",
                   help="with --resume: warn instead of failing when batch size, sequence length, seed, masking, "
                        "vocabulary or corpus differ from the checkpoint's run")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps")
    d = PretrainingArguments()  # the defaults, written once there
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="pairs per rank and micro-batch; a step sees batch size x ranks x --grad-accum")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="micro-batches accumulated per optimizer step (default: %(default)s)")
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length)
    p.add_argument("--learning-rate", "--lr", type=float, default=d.learning_rate)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help=f"linear warm-up steps (default: {WARMUP_FRACTION * 100:g}%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    p.add_argument("--mlm-probability", type=float, default=d.mlm_probability)
    p.add_argument("--max-predictions-per-seq", type=int, default=d.max_predictions_per_seq)
    p.add_argument("--whole-word-mask", action="store_true", default=d.whole_word_mask)
    p.add_argument("--short-seq-prob", type=float, default=d.short_seq_prob)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--dtype", default=d.dtype, help="float32, or bfloat16 / float16 autocast on CUDA")
    p.add_argument("--save-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--log-file", help="append each step's metrics to this file as JSON lines (rank 0)")
    p.add_argument("--stream", action="store_true", help="read the corpus in shards through a bounded shuffle "
                                                         "buffer (memory does not grow with the corpus)")
    p.add_argument("--cache", metavar="DIR", help="token-id cache folder: a later run reads it and does not tokenize "
                                                  "again (implies --stream)")
    p.add_argument("--shard-documents", type=int, default=d.shard_documents, help="streaming: documents per shard")
    p.add_argument("--shuffle-buffer", type=int, default=d.shuffle_buffer, help="streaming: pairs in the buffer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pretrain)


def cmd_finetune(args: argparse.Namespace) -> None:
    names = {f.name for f in dataclasses.fields(FinetuneArguments)}
    options = FinetuneArguments(**{k: v for k, v in vars(args).items() if k in names})
    with process_group():
        results = finetune(args.model, args.train, args.eval, args.out, options, overwrite=args.overwrite)
    if not is_main_process():
        return
    emit(args, results, lambda r: [f"best epoch {r['best']['epoch']} ({r['metric']} {number(r['best'][r['metric']])}):"
                                    f" {args.out}"] + [
        "  " + "  ".join(f"{k} {number(v)}" for k, v in epoch.items()) for epoch in r["epochs"]])


def finetune_parser(p: argparse.ArgumentParser) -> None:
    d = FinetuneArguments()  # the defaults, written once there
    p.add_argument("--task", default=d.task, choices=sorted(FINETUNE_TASKS))
    p.add_argument("--model", required=True, help="checkpoint directory or hub id to start from")
    p.add_argument("--train", required=True, help="training file: .csv, .tsv or .jsonl (SQuAD .json for question "
                                                 "answering)")
    p.add_argument("--eval", required=True, help="held-out file, evaluated after each epoch")
    p.add_argument("--out", required=True, help="output folder: the best epoch's model (or LoRA adapter)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--text-column", default=d.text_column, help="text column (token classification: the words)")
    p.add_argument("--text-pair-column", default=d.text_pair_column, help="second text column (sentence pairs)")
    p.add_argument("--label-column", default=d.label_column, help="label column (token classification: word labels)")
    p.add_argument("--problem-type", default=d.problem_type, choices=PROBLEM_TYPES)
    p.add_argument("--labels", type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                   help="label names in id order, comma-separated (default: the training file's, sorted)")
    p.add_argument("--num-labels", type=int, help="labels are the ids 0..N-1 (when --labels is not given)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per rank and micro-batch")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--learning-rate", "--lr", type=float, default=d.learning_rate)
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    p.add_argument("--max-length", type=int, default=d.max_length,
                   help="tokens per example (question answering: per window), at most the model's "
                        "max_position_embeddings (default: 384 for question answering, else 128; at most that limit)")
    p.add_argument("--doc-stride", type=int, default=d.doc_stride,
                   help="question answering: context tokens consecutive windows share (default: min(128, half of "
                        "--max-length))")
    p.add_argument("--lora", metavar="R,ALPHA[,TARGETS]",
                   help="train a LoRA adapter (PEFT format), e.g. 8,16,query,value")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--dtype", default=d.dtype, help="float32, or bfloat16 / float16 autocast on CUDA")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_finetune)
