"""The ``bertfast`` console script."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import torch

from bertfast.config import PRESETS, BertConfig
from bertfast.pipelines import DEFAULT_MODEL, pipeline
from bertfast.weights import resolve_file


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub id (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _emit(args: argparse.Namespace, result: Any, lines: Callable[[Any], list[str]]) -> None:
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines(result)))


def cmd_fill_mask(args: argparse.Namespace) -> None:
    fill = pipeline("fill-mask", model=args.model, device=args.device, dtype=args.dtype)
    result = fill(args.text, top_k=args.top_k)
    groups = result if result and isinstance(result[0], list) else [result]
    _emit(args, result, lambda _: [f"{p['score']:.4f}  {p['token_str']:<15} {p['sequence']}"
                                   for group in groups for p in group])


def cmd_nsp(args: argparse.Namespace) -> None:
    nsp = pipeline("next-sentence", model=args.model, device=args.device, dtype=args.dtype)
    result = nsp(args.text_a, args.text_b)
    _emit(args, result, lambda r: [f"{r['label']}  P(B follows A) = {r['is_next_probability']:.4f}"])


def cmd_embed(args: argparse.Namespace) -> None:
    embed = pipeline("feature-extraction", model=args.model, device=args.device, dtype=args.dtype)
    vectors = embed(args.texts, pooling=args.pooling, normalize=not args.no_normalize)
    result = [{"text": t, "embedding": v.tolist()} for t, v in zip(args.texts, vectors)]
    _emit(args, result, lambda rows: [f"{r['text'][:40]:<40} dim={len(r['embedding'])} "
                                      f"[{', '.join(f'{x:.4f}' for x in r['embedding'][:4])}, ...]" for r in rows])
    if len(args.texts) > 1 and not args.json:
        similarity = vectors @ vectors.T if not args.no_normalize else torch.nn.functional.cosine_similarity(
            vectors[:, None], vectors[None], dim=-1)
        print("cosine similarity:")
        for text, row in zip(args.texts, similarity.tolist()):
            print(f"  {text[:30]:<30} " + " ".join(f"{x:6.3f}" for x in row))


def cmd_info(args: argparse.Namespace) -> None:
    from bertfast.heads import BertForPreTraining
    from bertfast.modeling import BertModel

    try:
        config = BertConfig.from_json_file(resolve_file(args.model, "config.json", local_files_only=args.offline))
        source = "checkpoint"
    except FileNotFoundError:
        if args.model not in PRESETS:
            raise
        config, source = BertConfig.from_preset(args.model), "preset (no checkpoint found locally)"
    with torch.device("meta"):
        encoder, pretraining = BertModel(config), BertForPreTraining(config)
    result = {"model": args.model, "config_source": source, "config": config.to_dict(),
              "parameters": {"BertModel": encoder.num_parameters(),
                             "BertModel without embeddings": encoder.num_parameters(exclude_embeddings=True),
                             "BertForPreTraining": pretraining.num_parameters()}}
    _emit(args, result, lambda r: [f"{r['model']}  (config from {r['config_source']})"]
          + [f"  {k:<30} {v}" for k, v in r["config"].items()]
          + [f"  parameters, {k:<18} {v:,}" for k, v in r["parameters"].items()])


def cmd_bench(args: argparse.Namespace) -> None:
    from benchmarks.runner import run_from_args  # imported only when benchmarking: it loads transformers & co.

    run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertfast", description="Fast BERT inference with transformers' numbers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fill-mask", help="predict the [MASK] token(s) of a text")
    p.add_argument("text")
    p.add_argument("--top-k", type=int, default=5)
    _model_options(p)
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("nsp", help="probability that TEXT_B follows TEXT_A (next-sentence prediction)")
    p.add_argument("text_a")
    p.add_argument("text_b")
    _model_options(p)
    p.set_defaults(func=cmd_nsp)

    p = sub.add_parser("embed", help="sentence embeddings (mean pooling, L2-normalised)")
    p.add_argument("texts", nargs="+")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    p.add_argument("--no-normalize", action="store_true")
    _model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("info", help="config and parameter counts of a checkpoint or preset")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--offline", action="store_true", help="look only at local files and the HF cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    from benchmarks.options import add_arguments as add_bench_arguments  # argparse only

    p = sub.add_parser("bench", help="benchmark bertfast against transformers, torch.compile and onnxruntime")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # bad input or missing files: a message, not a traceback
        print(f"bertfast {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
