"""What the ``bertfast`` subcommands share: the inference options, the task's pipeline, printing results."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from bertfast.device import default_device
from bertfast.pipelines import DEFAULT_MODEL, pipeline
from bertfast.pipelines.base import Pipeline
from bertfast.cpu.int8 import MODES as QUANT_MODES


def model_options(parser: argparse.ArgumentParser) -> None:
    """The options of every inference command; ``task_pipeline`` builds the task's pipeline from them."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub id (default: %(default)s)")
    parser.add_argument("--adapter", metavar="DIR", help="a PEFT LoRA adapter (directory or hub id), merged at load")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 (CPU: fast where it has avx512_bf16 or "
                                                           "AMX, warns otherwise) or float16 (GPU only)")
    parser.add_argument("--quantize", choices=QUANT_MODES, help="int8: the encoder's linear layers in int8 (CPU, "
                                                                 "float32 model; see the README's CPU modes)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per model call (default: %(default)s)")
    parser.add_argument("--max-length", type=int, help="truncation length in tokens (default: the model's)")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="initialise weights the checkpoint lacks (e.g. a base model's task head) randomly "
                             "instead of failing: the outputs that use them are meaningless until fine-tuned")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def task_pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline of the subcommand's task (``args.task``, set from the task table) for ``model_options``."""
    return pipeline(args.task, model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                    max_length=args.max_length, adapter=args.adapter, allow_missing_weights=args.allow_missing_weights,
                    **({} if args.quantize is None else {"quantize": args.quantize}))


def emit(args: argparse.Namespace, result: Any, lines: Callable[[Any], list[str]]) -> None:
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines(result)))


def number(value: Any) -> str:
    """A metric for people: integers as integers, other numbers with 6 significant digits."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def table(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Two aligned columns, the first as wide as its longest entry."""
    width = max(len(key) for key, _ in rows)
    return [f"{indent}{key:<{width}}  {value}" for key, value in rows]
