"""The ``bertfast`` console script."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable

import torch

from bertfast.bench.options import add_arguments as add_bench_arguments  # no providers: cheap
from bertfast.config import PRESETS, BertConfig
from bertfast.export.onnx import check_out_dir, export_onnx
from bertfast.export.onnx_model import EXPORT_TASKS
from bertfast.export.triton_repo import INSTANCE_KINDS, write_triton_repository
from bertfast.heads.pretraining import BertForPreTraining
from bertfast.hub import resolve_file
from bertfast.modeling import BertModel
from bertfast.ops import default_device
from bertfast.pipelines import DEFAULT_MODEL, pipeline
from bertfast.pipelines.base import Pipeline
from bertfast.pipelines.text_classification import FUNCTIONS
from bertfast.cpu.int8 import MODES as QUANT_MODES
from bertfast.pipelines.token_classification import AGGREGATIONS
from bertfast.st_config import POOLING_MODES
from bertfast.serving.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS
from bertfast.serving.contract import served_tasks
from bertfast.serving.server import LOOPBACK, serve
from bertfast.training.distributed import is_main_process, process_group
from bertfast.training.finetune import TASKS as FINETUNE_TASKS, FinetuneArguments, finetune
from bertfast.training.finetune_data import PROBLEM_TYPES
from bertfast.training.trainer import WARMUP_FRACTION, PretrainingArguments, run_pretraining
from bertfast.version import __version__


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The options of every inference command; ``_pipeline`` builds the task's pipeline from them."""
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


def _pipeline(task: str, args: argparse.Namespace) -> Pipeline:
    """The ``task`` pipeline for the options of ``_model_options``."""
    return pipeline(task, model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                    max_length=args.max_length, adapter=args.adapter, allow_missing_weights=args.allow_missing_weights,
                    **({} if args.quantize is None else {"quantize": args.quantize}))


def _emit(args: argparse.Namespace, result: Any, lines: Callable[[Any], list[str]]) -> None:
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines(result)))


def _number(value: Any) -> str:
    """A metric for people: integers as integers, other numbers with 6 significant digits."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _table(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Two aligned columns, the first as wide as its longest entry."""
    width = max(len(key) for key, _ in rows)
    return [f"{indent}{key:<{width}}  {value}" for key, value in rows]


def cmd_fill_mask(args: argparse.Namespace) -> None:
    fill = _pipeline("fill-mask", args)
    result = fill(args.text, top_k=args.top_k)
    groups = result if result and isinstance(result[0], list) else [result]
    _emit(args, result, lambda _: [f"{p['score']:.4f}  {p['token_str']:<15} {p['sequence']}"
                                   for group in groups for p in group])


def cmd_nsp(args: argparse.Namespace) -> None:
    nsp = _pipeline("next-sentence", args)
    result = nsp(args.text_a, args.text_b)
    _emit(args, result, lambda r: [f"{r['label']}  P(B follows A) = {r['is_next_probability']:.4f}"])


def cmd_embed(args: argparse.Namespace) -> None:
    vectors = _pipeline("feature-extraction", args)(args.texts, pooling=args.pooling, normalize=args.normalize)
    result = [{"text": t, "embedding": v.tolist()} for t, v in zip(args.texts, vectors)]
    _emit(args, result, lambda rows: [f"{r['text'][:40]:<40} dim={len(r['embedding'])} "
                                      f"[{', '.join(f'{x:.4f}' for x in r['embedding'][:4])}, ...]" for r in rows])
    if len(args.texts) > 1 and not args.json:
        similarity = torch.nn.functional.cosine_similarity(vectors[:, None], vectors[None], dim=-1)
        print("cosine similarity:")
        for text, row in zip(args.texts, similarity.tolist()):
            print(f"  {text[:30]:<30} " + " ".join(f"{x:6.3f}" for x in row))


def cmd_classify(args: argparse.Namespace) -> None:
    classify = _pipeline("text-classification", args)
    pairs = None if args.text_pair is None else [args.text_pair] * len(args.texts)
    top_k = {} if args.top_k is None else {"top_k": args.top_k}  # not given: the best label, as transformers
    results = classify(args.texts, text_pair=pairs, function_to_apply=args.function_to_apply, **top_k)
    _emit(args, results, lambda rows: [
        f"{text[:40]:<40} " + "  ".join(f"{p['label']} {p['score']:.4f}" for p in (r if args.top_k else [r]))
        for text, r in zip(args.texts, rows)])


def cmd_ner(args: argparse.Namespace) -> None:
    ner = _pipeline("token-classification", args)
    entities = ner(args.text, aggregation_strategy=args.aggregation_strategy, ignore_labels=args.ignore_labels,
                   stride=args.stride)
    _emit(args, entities, lambda rows: [f"{e.get('entity_group', e.get('entity')):<10} {e['score']:.4f}  "
                                        f"[{e['start']}:{e['end']}]  {args.text[e['start']:e['end']]}" for e in rows])


def cmd_rerank(args: argparse.Namespace) -> None:
    rerank = _pipeline("rerank", args)
    ranked = rerank(args.query, args.documents, top_k=args.top_k, return_documents=args.return_documents,
                    function_to_apply=args.function_to_apply)
    _emit(args, ranked, lambda rows: [f"{r['score']:.4f}  [{r['index']}] {args.documents[r['index']][:60]}"
                                      for r in rows])


def cmd_qa(args: argparse.Namespace) -> None:
    qa = _pipeline("question-answering", args)
    result = qa(args.question, args.context, top_k=args.top_k, max_answer_len=args.max_answer_len,
                doc_stride=args.doc_stride, handle_impossible_answer=args.handle_impossible_answer)
    answers = [result] if isinstance(result, dict) else result
    _emit(args, result, lambda _: [f"{a['score']:.4f}  [{a['start']}:{a['end']}]  {a['answer'] or '(no answer)'}"
                                   for a in answers] or ["(no answer: the context has no tokens)"])


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
    return BertConfig.from_json_file(path), "checkpoint"


def cmd_info(args: argparse.Namespace) -> None:
    config, source = _info_config(args.model, args.offline)
    with torch.device("meta"):
        encoder, pretraining = BertModel(config), BertForPreTraining(config)
    result = {"model": args.model, "config_source": source, "config": config.to_dict(),
              "parameters": {"BertModel": encoder.num_parameters(),
                             "BertModel without embeddings": encoder.num_parameters(exclude_embeddings=True),
                             "BertForPreTraining": pretraining.num_parameters()}}
    _emit(args, result, lambda r: [f"{r['model']}  (config from {r['config_source']})"] + _table(
        [(k, str(v)) for k, v in r["config"].items()] + [(f"parameters, {k}", f"{v:,}")
                                                           for k, v in r["parameters"].items()]))


def cmd_pretrain(args: argparse.Namespace) -> None:
    options = PretrainingArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainingArguments)})
    with process_group():
        history = run_pretraining(args.corpus, args.out, options, model=args.model, config=args.config,
                                  vocab=args.vocab, resume=args.resume, overwrite=args.overwrite,
                                  allow_data_changes=args.allow_data_changes)
    if not is_main_process():
        return
    result = {"out": args.out, "steps_run": len(history), "last_step": history[-1]}
    _emit(args, result, lambda r: [f"checkpoint: {r['out']}  ({r['steps_run']} steps run)"]
          + _table([(k, _number(v)) for k, v in r["last_step"].items()]))


def _pretrain_parser(p: argparse.ArgumentParser) -> None:
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
    _emit(args, results, lambda r: [f"best epoch {r['best']['epoch']} ({r['metric']} {_number(r['best'][r['metric']])}):"
                                    f" {args.out}"] + [
        "  " + "  ".join(f"{k} {_number(v)}" for k, v in epoch.items()) for epoch in r["epochs"]])


def _finetune_parser(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--lora", metavar="R,ALPHA[,TARGETS]", help="train a LoRA adapter (PEFT format), e.g. 8,16,query,value")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--dtype", default=d.dtype, help="float32, or bfloat16 / float16 autocast on CUDA")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_finetune)


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
    _emit(args, result, lambda r: [report.summary()] + ([f"Triton model: {triton_dir}"] if triton_dir else []))


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

    p = sub.add_parser("embed", help="sentence embeddings, as the Python feature-extraction pipeline gives them")
    p.add_argument("texts", nargs="+")
    p.add_argument("--pooling", choices=POOLING_MODES,
                   help="default: the sentence-transformers folder's pooling, else mean")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="L2-normalise (default: as the folder's Normalize module says, else not)")
    _model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("classify", help="labels of texts (or text pairs) from a sequence-classification model")
    p.add_argument("texts", nargs="+")
    p.add_argument("--text-pair", help="a second text, paired with each text")
    p.add_argument("--top-k", type=int, help="the K best labels of each text (default: the best one)")
    p.add_argument("--function-to-apply", choices=FUNCTIONS,
                   help="softmax, sigmoid or none (default: from the config's problem_type and labels)")
    _model_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("ner", help="entities of a text from a token-classification model, with character offsets")
    p.add_argument("text")
    p.add_argument("--aggregation-strategy", choices=AGGREGATIONS, default="none",
                   help="none: one entry per token; simple / first / average / max: entity groups")
    p.add_argument("--ignore-labels", nargs="*", default=None, metavar="LABEL", help="labels to drop (default: O)")
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows of a long text "
                                              "(default: a quarter of a window)")
    _model_options(p)
    p.set_defaults(func=cmd_ner)

    p = sub.add_parser("rerank", help="documents sorted by a cross-encoder's score against a query")
    p.add_argument("query")
    p.add_argument("documents", nargs="+")
    p.add_argument("--top-k", type=int, help="only the K best documents (default: all)")
    p.add_argument("--return-documents", action="store_true", help="include each document's text")
    p.add_argument("--function-to-apply", choices=("sigmoid", "none"),
                   help="sigmoid or none (raw logits); default: the checkpoint's saved activation, else sigmoid")
    _model_options(p)
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("qa", help="extractive question answering: the span of CONTEXT that answers QUESTION")
    p.add_argument("question")
    p.add_argument("context", help="the text to find the answer in (longer ones are read in overlapping windows)")
    p.add_argument("--top-k", type=int, default=1, help="answers to print, best first (default: %(default)s)")
    p.add_argument("--max-answer-len", type=int, default=15, help="most tokens in an answer (default: %(default)s)")
    p.add_argument("--doc-stride", type=int, help="context tokens consecutive windows share (default: min(window "
                                                   "// 2, 128))")
    p.add_argument("--handle-impossible-answer", action="store_true",
                   help="let 'no answer' (an empty answer at 0:0) compete with the spans")
    _model_options(p)
    p.set_defaults(func=cmd_qa)

    p = sub.add_parser("info", help="config and parameter counts of a checkpoint or preset")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--offline", action="store_true", help="look only at local files and the HF cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    _pretrain_parser(sub.add_parser("pretrain", help="pretrain (MLM + NSP) on a text corpus, write a checkpoint"))
    _finetune_parser(sub.add_parser("finetune", help="fine-tune a task head (all weights or a LoRA adapter) on a "
                                                     "labelled file, keeping the best epoch"))
    p = sub.add_parser("export-onnx", help="export to ONNX, validated against PyTorch with onnxruntime")
    p.add_argument("model", help="checkpoint directory or hub id")
    p.add_argument("out_dir", help="new (or empty) directory for model.onnx, config.json and the tokenizer files")
    p.add_argument("--task", choices=sorted(EXPORT_TASKS), default="feature-extraction")
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


if __name__ == "__main__":
    sys.exit(main())
