"""Command-line options of ``bertfast bench`` / ``python -m benchmarks``.

Only argparse here (no torch, no providers), so ``bertfast``'s parser can add these options cheaply and
import the runner only when the command actually runs. Options left at None get their defaults (which
depend on ``--quick`` and the device) in ``bertfast.bench.runner.settings_from_args``.
"""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Measure BERT inference of every provider (bertfast backends, transformers eager / SDPA / torch.compile,
onnxruntime plain and optimised) in one process, on the same inputs. Each provider's output is first
compared with transformers fp32; a provider outside tolerance is reported as wrong and not timed.
Writes a table to the terminal and <out>/<machine>-<date>.{json,md,png}."""

EPILOG = """\
defaults: --batch 1 8 32 --seq 32 128 512, mixed lengths at every batch size > 1; float32 on CPU,
float16 and bfloat16 on CUDA. Every case starts with one untimed call (the parity check), then --warmup
more. --quick: --batch 1 8 --seq 128, --warmup 0, at most 5 timed calls or 2 s per case (at least 3 calls),
--interleave, and no torch.compile (it takes minutes); explicit options still win.
examples:
  bertfast bench --quick
  bertfast bench --batch 8 --seq 128 --providers bertfast-torch,transformers-eager
  bertfast bench --model /path/to/bert-base-uncased --device cuda --dtype float16"""


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def name_list(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (the option may also be repeated)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser`` (its description and epilog included)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", default="bert-base-uncased",
                        help="checkpoint directory, hub id found in the HF cache, or preset name; without local "
                             "weights a preset's config gets random weights (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", nargs="+", metavar="DTYPE",
                        help="float32 / float16 / bfloat16 (or fp32, fp16, bf16); several allowed")
    parser.add_argument("--batch", nargs="+", type=positive_int, metavar="N", help="batch sizes")
    parser.add_argument("--seq", nargs="+", type=positive_int, metavar="N",
                        help="sequence lengths (all tokens real), at most the model's max_position_embeddings")
    parser.add_argument("--mixed", action=argparse.BooleanOptionalAction, default=True,
                        help="also a mixed-length workload at each batch size > 1 (default: on)")
    parser.add_argument("--providers", type=name_list, action="extend", metavar="NAME[,NAME]",
                        help="providers to run (default: all; see --list-providers)")
    parser.add_argument("--list-providers", action="store_true", help="list providers and why any would be skipped")
    parser.add_argument("--warmup", type=non_negative_int, metavar="N",
                        help="untimed calls per case after the parity check (default 3)")
    parser.add_argument("--repeats", type=positive_int, metavar="N", help="most timed calls per case (default 30)")
    parser.add_argument("--max-time", type=positive_float, metavar="S",
                        help="stop timing a case after S seconds once 3 calls are timed (default 10)")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction,
                        help="keep every provider loaded and time them in turns, one call each per round: fair "
                             "ratios on a machine shared with other work, but no peak memory (default: on with "
                             "--quick, off otherwise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and random weights (default: 0)")
    parser.add_argument("--out", default="benchmarks/results", metavar="DIR",
                        help="directory for the JSON, markdown and PNG results (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a small grid that runs in minutes on a laptop CPU")
