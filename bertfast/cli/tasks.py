"""The task subcommands (fill-mask, nsp, embed, classify, ner, rerank, qa), generated from the task table: each
entry's ``cli`` names its subcommand, its help and the ``setup`` here that adds its arguments and handler; the task
name and its aliases (transformers' names) are the subcommand's aliases."""
from __future__ import annotations

import argparse

import torch

from bertfast.cli.common import emit, model_options, task_pipeline
from bertfast.pipelines.text_classification import FUNCTIONS
from bertfast.pipelines.token_classification import AGGREGATIONS
from bertfast.st_config import POOLING_MODES
from bertfast.tasks import TASKS, load


def add_task_commands(sub: argparse._SubParsersAction) -> None:
    """One subcommand per table entry with ``cli``, aliased by the task's names."""
    for spec in TASKS:
        if spec.cli is not None:
            parser = sub.add_parser(spec.cli.command, aliases=list(spec.cli_aliases), help=spec.cli.help)
            load(spec.cli.setup)(parser)
            model_options(parser)
            parser.set_defaults(task=spec.name)


def cmd_fill_mask(args: argparse.Namespace) -> None:
    result = task_pipeline(args)(args.text, top_k=args.top_k)
    groups = result if result and isinstance(result[0], list) else [result]
    emit(args, result, lambda _: [f"{p['score']:.4f}  {p['token_str']:<15} {p['sequence']}"
                                  for group in groups for p in group])


def fill_mask(p: argparse.ArgumentParser) -> None:
    p.add_argument("text")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_fill_mask)


def cmd_nsp(args: argparse.Namespace) -> None:
    result = task_pipeline(args)(args.text_a, args.text_b)
    emit(args, result, lambda r: [f"{r['label']}  P(B follows A) = {r['is_next_probability']:.4f}"])


def nsp(p: argparse.ArgumentParser) -> None:
    p.add_argument("text_a")
    p.add_argument("text_b")
    p.set_defaults(func=cmd_nsp)


def cmd_embed(args: argparse.Namespace) -> None:
    vectors = task_pipeline(args)(args.texts, pooling=args.pooling, normalize=args.normalize)  # (N, H)
    result = [{"text": t, "embedding": v.tolist()} for t, v in zip(args.texts, vectors)]
    emit(args, result, lambda rows: [f"{r['text'][:40]:<40} dim={len(r['embedding'])} "
                                     f"[{', '.join(f'{x:.4f}' for x in r['embedding'][:4])}, ...]" for r in rows])
    if len(args.texts) > 1 and not args.json:
        similarity = torch.nn.functional.cosine_similarity(vectors[:, None], vectors[None], dim=-1)  # (N, N)
        print("cosine similarity:")
        for text, row in zip(args.texts, similarity.tolist()):
            print(f"  {text[:30]:<30} " + " ".join(f"{x:6.3f}" for x in row))


def embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+")
    p.add_argument("--pooling", choices=POOLING_MODES,
                   help="default: the sentence-transformers folder's pooling, else mean")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="L2-normalise (default: as the folder's Normalize module says, else not)")
    p.set_defaults(func=cmd_embed)


def cmd_classify(args: argparse.Namespace) -> None:
    pairs = None if args.text_pair is None else [args.text_pair] * len(args.texts)
    top_k = {} if args.top_k is None else {"top_k": args.top_k}  # not given: the best label, as transformers
    results = task_pipeline(args)(args.texts, text_pair=pairs, function_to_apply=args.function_to_apply, **top_k)
    emit(args, results, lambda rows: [
        f"{text[:40]:<40} " + "  ".join(f"{p['label']} {p['score']:.4f}" for p in (r if args.top_k else [r]))
        for text, r in zip(args.texts, rows)])


def classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+")
    p.add_argument("--text-pair", help="a second text, paired with each text")
    p.add_argument("--top-k", type=int, help="the K best labels of each text (default: the best one)")
    p.add_argument("--function-to-apply", choices=FUNCTIONS,
                   help="softmax, sigmoid or none (default: from the config's problem_type and labels)")
    p.set_defaults(func=cmd_classify)


def cmd_ner(args: argparse.Namespace) -> None:
    entities = task_pipeline(args)(args.text, aggregation_strategy=args.aggregation_strategy,
                                   ignore_labels=args.ignore_labels, stride=args.stride)
    emit(args, entities, lambda rows: [f"{e.get('entity_group', e.get('entity')):<10} {e['score']:.4f}  "
                                       f"[{e['start']}:{e['end']}]  {args.text[e['start']:e['end']]}" for e in rows])


def ner(p: argparse.ArgumentParser) -> None:
    p.add_argument("text")
    p.add_argument("--aggregation-strategy", choices=AGGREGATIONS, default="none",
                   help="none: one entry per token; simple / first / average / max: entity groups")
    p.add_argument("--ignore-labels", nargs="*", default=None, metavar="LABEL", help="labels to drop (default: O)")
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows of a long text "
                                              "(default: a quarter of a window)")
    p.set_defaults(func=cmd_ner)


def cmd_rerank(args: argparse.Namespace) -> None:
    ranked = task_pipeline(args)(args.query, args.documents, top_k=args.top_k,
                                 return_documents=args.return_documents, function_to_apply=args.function_to_apply)
    emit(args, ranked, lambda rows: [f"{r['score']:.4f}  [{r['index']}] {args.documents[r['index']][:60]}"
                                     for r in rows])


def rerank(p: argparse.ArgumentParser) -> None:
    p.add_argument("query")
    p.add_argument("documents", nargs="+")
    p.add_argument("--top-k", type=int, help="only the K best documents (default: all)")
    p.add_argument("--return-documents", action="store_true", help="include each document's text")
    p.add_argument("--function-to-apply", choices=("sigmoid", "none"),
                   help="sigmoid or none (raw logits); default: the checkpoint's saved activation, else sigmoid")
    p.set_defaults(func=cmd_rerank)


def cmd_qa(args: argparse.Namespace) -> None:
    result = task_pipeline(args)(args.question, args.context, top_k=args.top_k, max_answer_len=args.max_answer_len,
                                 doc_stride=args.doc_stride, handle_impossible_answer=args.handle_impossible_answer)
    answers = [result] if isinstance(result, dict) else result
    emit(args, result, lambda _: [f"{a['score']:.4f}  [{a['start']}:{a['end']}]  {a['answer'] or '(no answer)'}"
                                  for a in answers] or ["(no answer: the context has no tokens)"])


def qa(p: argparse.ArgumentParser) -> None:
    p.add_argument("question")
    p.add_argument("context", help="the text to find the answer in (longer ones are read in overlapping windows)")
    p.add_argument("--top-k", type=int, default=1, help="answers to print, best first (default: %(default)s)")
    p.add_argument("--max-answer-len", type=int, default=15, help="most tokens in an answer (default: %(default)s)")
    p.add_argument("--doc-stride", type=int, help="context tokens consecutive windows share (default: min(window "
                                                   "// 2, 128))")
    p.add_argument("--handle-impossible-answer", action="store_true",
                   help="let 'no answer' (an empty answer at 0:0) compete with the spans")
    p.set_defaults(func=cmd_qa)
