"""Command-line options of ``bertfast bench`` / ``python -m benchmarks``.

No providers here (argparse, the defaults, and timing's MIN_REPEATS), so ``bertfast``'s parser can add these
options cheaply and import the runner only when the command actually runs. The defaults are written once, in
``FULL`` / ``QUICK`` / ``DTYPES``: the help quotes them and ``bertfast.bench.runner.settings_from_args``
applies them to the options left at None (they depend on ``--quick`` and the device).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from bertfast.bench.timing import MIN_REPEATS, QUICK_MIN_REPEATS
from bertfast.tasks import DEFAULT_EXPORT_TASK, TASKS as TASK_TABLE, task_names


@dataclass(frozen=True)
class Defaults:
    """What the options left unset become: one set for a full run (``FULL``), one for ``--quick``."""

    batches: tuple[int, ...]  # --batch
    seqs: tuple[int, ...]  # --seq
    warmup: int  # --warmup: untimed calls per case after the parity check
    repeats: int  # --repeats: most timed calls per case
    max_time_s: float  # --max-time: stop timing a case after this once MIN_REPEATS calls are timed
    interleave: bool  # --interleave
    slow_providers: bool  # without --providers, also run the providers that compile for minutes (torch.compile)


FULL = Defaults(batches=(1, 8, 32), seqs=(32, 128, 512), warmup=3, repeats=30, max_time_s=10.0, interleave=False,
                slow_providers=True)
QUICK = Defaults(batches=(4,), seqs=(128,), warmup=0, repeats=5, max_time_s=2.0, interleave=False,
                 slow_providers=False)
# --quick's providers without --providers: the headline comparison, bertfast vs transformers and onnxruntime in fp32
# and int8 (each is prepared, timed and released in turn: the run stays in minutes and under 2 GB on 2 cores)
QUICK_PROVIDERS = ("bertfast-torch", "bertfast-int8", "transformers-eager", "onnxruntime-optimized",
                   "onnxruntime-int8")
DEFAULT_OUT = "bertfast-results"  # relative to the working directory: never the checkout or the installed package
DTYPES = {"cpu": ("float32",), "cuda": ("float16", "bfloat16")}  # --dtype, by device
# --task: the encoder alone, or a task model and its head (bertfast.bench.tasks says what each measures)
# --task: the corpus benchmark (bertfast.bench.corpus) instead of the provider grid, for the task the table marks
CORPUS_TASK = next(spec.name for spec in TASK_TABLE if spec.corpus_bench)
GRID_TASKS = tuple(task_names("bench"))  # the task table's entries with bench fields: measured on the provider grid
TASKS = (*GRID_TASKS, CORPUS_TASK)  # every --task value
DEFAULT_TASK = DEFAULT_EXPORT_TASK


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _grid(d: Defaults) -> str:
    return f"--batch {' '.join(map(str, d.batches))} --seq {' '.join(map(str, d.seqs))}"


def _both(field: str) -> str:
    """A default in help text: the full run's, and --quick's where it differs."""
    full, quick = getattr(FULL, field), getattr(QUICK, field)
    return f"{full:g}" + ("" if quick == full else f"; {quick:g} with --quick")

DESCRIPTION = """\
Measure BERT inference of every provider (bertfast backends, transformers eager / SDPA / torch.compile,
onnxruntime plain and optimised) in one process, on the same inputs. Each provider's output is first
compared with transformers fp32; a provider outside tolerance is reported as wrong and not timed.
Writes a table to the terminal and <out>/<machine>-<date>.{json,md,png}."""

EPILOG = f"""\
defaults: {_grid(FULL)}, mixed lengths at every batch size > 1; {' and '.join(DTYPES['cpu'])} on CPU,
{' and '.join(DTYPES['cuda'])} on CUDA. Every case starts with one untimed call (the parity check), then
--warmup more (at least {MIN_REPEATS} timed calls). --quick: {_grid(QUICK)}, --warmup {QUICK.warmup},
{QUICK.repeats} timed calls per case (at least {QUICK_MIN_REPEATS}, past {QUICK.max_time_s:g} s if need be),
--no-interleave, and only {', '.join(QUICK_PROVIDERS)}; explicit options still win. --full (the default) runs
every provider on the whole grid.
examples:
  bertfast bench --quick
  bertfast bench --batch 8 --seq 128 --providers bertfast-torch,transformers-eager
  bertfast bench --quick --task question-answering
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
    parser.add_argument("--task", choices=TASKS, default=DEFAULT_TASK,
                        help="what is measured: the encoder (BertModel's last_hidden_state) or a task model's head "
                             "outputs; a checkpoint without that head gets a random one (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", nargs="+", metavar="DTYPE",
                        help="float32 / float16 / bfloat16 (or fp32, fp16, bf16); several allowed")
    parser.add_argument("--batch", nargs="+", type=positive_int, metavar="N", help="batch sizes")
    parser.add_argument("--seq", nargs="+", type=positive_int, metavar="N",
                        help="sequence lengths (all tokens real), at most the model's max_position_embeddings")
    parser.add_argument("--mixed", action=argparse.BooleanOptionalAction, default=True,
                        help="also a mixed-length workload at each batch size > 1 (default: %(default)s)")
    parser.add_argument("--providers", type=name_list, action="extend", metavar="NAME[,NAME]",
                        help="providers to run (default: all; see --list-providers)")
    parser.add_argument("--list-providers", action="store_true", help="list providers and why any would be skipped")
    parser.add_argument("--warmup", type=non_negative_int, metavar="N",
                        help=f"untimed calls per case after the parity check (default {_both('warmup')})")
    parser.add_argument("--repeats", type=positive_int, metavar="N",
                        help=f"most timed calls per case (default {_both('repeats')})")
    parser.add_argument("--max-time", type=positive_float, metavar="S",
                        help=f"stop timing a case after S seconds once {MIN_REPEATS} calls are timed "
                             f"(default {_both('max_time_s')})")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction,
                        help="keep every provider loaded and time them in turns, one call each per round: fair "
                             "ratios on a machine shared with other work, but no peak memory and every model "
                             f"resident at once (default: {_on(FULL.interleave)}, --quick too)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and random weights (default: %(default)s)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help="directory for the JSON, markdown and PNG results (default: ./%(default)s)")
    parser.add_argument("--corpus", metavar="FILE",
                        help=f"--task {CORPUS_TASK}: the texts to embed, one per line (default: the license corpus "
                             "in benchmarks/data/)")
    parser.add_argument("--max-texts", type=positive_int, metavar="N",
                        help=f"--task {CORPUS_TASK}: embed at most N texts, spread over the corpus (default: all)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="the headline comparison on a small grid: minutes on a 2-core laptop CPU")
    size.add_argument("--full", action="store_true", help="every provider on the whole grid (the default)")
