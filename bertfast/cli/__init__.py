"""The ``bertfast`` console script (``bertfast.cli:main``): the parser, ``info``, ``export-onnx``, ``serve``,
``bench``, and ``main``; the task subcommands are generated from the task table (``bertfast.cli.tasks``), the
training ones are in ``bertfast.cli.training``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from bertfast.bench.options import add_arguments as add_bench_arguments  # no providers: cheap
from bertfast.cli.common import emit, table
from bertfast.cli.tasks import add_task_commands
from bertfast.cli.training import finetune_parser, pretrain_parser
from bertfast.config import PRESETS, BertConfig
from bertfast.models.registry import read_config
from bertfast.export.onnx import check_out_dir, export_onnx
from bertfast.serving.repository import INSTANCE_KINDS, write_triton_repository
from bertfast.heads.pretraining import BertForPreTraining
from bertfast.hub import resolve_file
from bertfast.models.bert import BertModel
from bertfast.device import default_device
from bertfast.pipelines import DEFAULT_MODEL
from bertfast.serving.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS
from bertfast.serving.contract import served_tasks
from bertfast.serving.server import LOOPBACK, serve
from bertfast.tasks import DEFAULT_EXPORT_TASK, task_names
from bertfast.version import __version__


def _info_config(name: str, offline: bool) -> tuple[BertConfig, str]:
    """The config of a checkpoint (local, cached or on the hub) or of a preset: a preset name is looked up in the
    HF cache only, never on the hub."""
    preset = name in PRESETS and not os.path.isdir(name)
    try:
        path = resolve_file(name, "config.json", local_files_only=offline or preset)
    except FileNotFoundError:
        if not preset:
            raise
        return BertConfig.from_preset(name), "preset (no checkpoint found locally)"
    return read_config(path), "checkpoint"


def cmd_info(args: argparse.Namespace) -> None:
    config, source = _info_config(args.model, args.offline)
    with torch.device("meta"):
        encoder, pretraining = BertModel(config), BertForPreTraining(config)
    result = {"model": args.model, "config_source": source, "config": config.to_dict(),
              "parameters": {"BertModel": encoder.num_parameters(),
                             "BertModel without embeddings": encoder.num_parameters(exclude_embeddings=True),
                             "BertForPreTraining": pretraining.num_parameters()}}
    emit(args, result, lambda r: [f"{r['model']}  (config from {r['config_source']})"] + table(
        [(k, str(v)) for k, v in r["config"].items()] + [(f"parameters, {k}", f"{v:,}")
                                                           for k, v in r["parameters"].items()]))


def cmd_export_onnx(args: argparse.Namespace) -> None:
    name = args.triton_name or os.path.basename(os.path.abspath(args.out_dir))
    if args.triton_repo:  # refuse an occupied Triton model directory before the (slow) export
        check_out_dir(os.path.join(args.triton_repo, name), args.overwrite)
    report = export_onnx(args.model, args.out_dir, task=args.task, opset=args.opset, optimize=args.optimize,
                         fp16=args.fp16, overwrite=args.overwrite, quantize=args.quantize)
    triton_dir = None
    if args.triton_repo:
        triton_dir = write_triton_repository(args.out_dir, args.triton_repo, name=name,
                                             max_batch_size=args.triton_max_batch_size, kind=args.triton_kind,
                                             overwrite=args.overwrite)
    result = {**dataclasses.asdict(report), "triton_model_dir": triton_dir}
    emit(args, result, lambda r: [report.summary()] + ([f"Triton model: {triton_dir}"] if triton_dir else []))


def cmd_serve(args: argparse.Namespace) -> None:
    options = dict(name=args.name, dtype=args.dtype, device=args.device, quantize=args.quantize,
                   max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                   max_batch_tokens=args.max_batch_tokens, threads=args.threads)
    if args.write_repository:
        model_dir = write_triton_repository(args.model, args.write_repository, backend="python", task=args.task,
                                            instance_count=args.instances, overwrite=args.overwrite, **options)
        print(f"Triton model: {model_dir}")
        return
    code = serve(args.model, args.task, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                 metrics_port=args.metrics_port, instances=args.instances, exit_timeout_s=args.exit_timeout_secs,
                 log_file=args.log_file, **options)
    if code:
        raise SystemExit(code)


def cmd_bench(args: argparse.Namespace) -> None:
    from bertfast.bench.runner import run_from_args  # imported only when benchmarking: it loads transformers & co.

    run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertfast", description="Fast BERT inference with transformers' numbers.")
    parser.add_argument("--version", action="version", version=f"bertfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_task_commands(sub)

    p = sub.add_parser("info", help="config and parameter counts of a checkpoint or preset")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--offline", action="store_true", help="look only at local files and the HF cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    pretrain_parser(sub.add_parser("pretrain", help="pretrain (MLM + NSP) on a text corpus, write a checkpoint"))
    finetune_parser(sub.add_parser("finetune", help="fine-tune a task head (all weights or a LoRA adapter) on a "
                                                     "labelled file, keeping the best epoch"))
    p = sub.add_parser("export-onnx", help="export to ONNX, validated against PyTorch with onnxruntime")
    p.add_argument("model", help="checkpoint directory or hub id")
    p.add_argument("out_dir", help="new (or empty) directory for model.onnx, config.json and the tokenizer files")
    p.add_argument("--task", choices=sorted(task_names("export")), default=DEFAULT_EXPORT_TASK)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 20)")
    p.add_argument("--optimize", action="store_true", help="fuse operators with onnxruntime's transformers optimizer")
    p.add_argument("--fp16", action="store_true", help="float16 weights and activations, int64/float32 inputs/outputs")
    p.add_argument("--quantize", choices=("int8",), help="int8: onnxruntime's dynamic int8 quantization (CPU serving)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export")
    p.add_argument("--triton-repo", metavar="DIR",
                   help="also write a Triton model repository: DIR/<name>/config.pbtxt and DIR/<name>/1/model.onnx")
    p.add_argument("--triton-name", help="model name in the Triton repository (default: OUT_DIR's name)")
    p.add_argument("--triton-max-batch-size", type=int, default=32)
    p.add_argument("--triton-kind", choices=sorted(INSTANCE_KINDS), default="gpu", help="instance group kind")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("serve", help="serve a task on Triton Inference Server: KServe v2 HTTP/gRPC, dynamic batching "
                                     "into padding-free model calls, Prometheus metrics")
    p.add_argument("model", help="checkpoint directory or hub id")
    p.add_argument("--task", required=True, choices=served_tasks())
    p.add_argument("--name", help="model name on the server (default: the task)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default: %(default)s)")
    p.add_argument("--quantize", metavar="MODE", help="load the model quantized (e.g. int8), where this build has it")
    p.add_argument("--host", default=LOOPBACK, help="address HTTP, gRPC and metrics listen on (default: "
                                                        "%(default)s, this machine only; 0.0.0.0: every address, "
                                                        "e.g. in a container)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                   help="rows per request and per gathered batch (default: %(default)s)")
    p.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batcher's wait to gather requests")
    p.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS,
                   help="real tokens per model call; a gathered batch over it is split (default: %(default)s)")
    p.add_argument("--instances", type=int, default=1, help="model instances running at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per instance on the CPU (0: the cores "
                                                           "divided by the instances)")
    p.add_argument("--exit-timeout-secs", type=int, default=30,
                   help="after SIGTERM, how long in-flight requests and open connections may take")
    p.add_argument("--log-file", metavar="FILE", help="append tritonserver's log to FILE (default: a temporary "
                                                       "file, removed after a clean exit)")
    p.add_argument("--write-repository", metavar="DIR",
                   help="write a Triton model repository (Python backend) for a stock Triton container and exit")
    p.add_argument("--overwrite", action="store_true", help="with --write-repository: replace DIR/<name>")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="benchmark bertfast against transformers, torch.compile and onnxruntime")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command: 0 on success, 1 with a one-line message for bad input, missing or broken files (our
    ValueError / OSError subclasses: CheckpointError, ExportValidationError, FileNotFoundError...), 2 for a bad
    command line (argparse exits), 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PermissionError as e:  # Python's "[Errno 13] Permission denied: 'x'", said plainly with the path
        where = e.filename if e.filename is not None else e
        print(f"bertfast {args.command}: error: permission denied: {where} (check its permissions and owner: "
              f"ls -l)", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # bad input or missing files: a message, not a traceback
        print(f"bertfast {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bertfast {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
