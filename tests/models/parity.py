"""What the parity tests of an architecture family share (tests/models/test_distilbert.py, test_electra.py): folders
of random transformers checkpoints over a family's tokenizer (tests/tokenizer_folders.py), the batches (right- and
left-padded, packed) and the comparisons of bertfast's outputs and pipelines with transformers'."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import transformers

import bertfast
from bertfast.cpu.int8 import Int8Linear
from bertfast.padding import PackedBatch
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL
from tests.tokenizer_folders import save_family

TEXTS = ["Le chat est sur la table, et la voiture est rouge.", "Where are the cities?", "東京 and 北京 😀",
         "The quick brown fox jumps over the lazy dog while a café in Zürich serves crème brûlée to naïve tourists."]
LABELS = {"ForSequenceClassification": 3, "ForTokenClassification": 3, "ForQuestionAnswering": 2}  # head -> outputs


class Family:
    """One family's checkpoint folders, built once per test module: ``folder(head)`` is a transformers
    ``<prefix><head>`` of random weights (every parameter, biases and LayerNorms included, moved off its init),
    its head's weights scaled by 20 (``decisive``: name prefixes) so that labels and top tokens are no near-ties."""

    def __init__(self, tmp_path_factory: Any, family: str, prefix: str, sizes: dict[str, Any],
                 decisive: tuple[str, ...]):
        self.tmp_path_factory, self.family, self.prefix = tmp_path_factory, family, prefix
        self.sizes, self.decisive = sizes, decisive
        self.folders: dict[tuple[str, tuple], str] = {}

    def folder(self, head: str, **config: Any) -> str:
        key = (head, repr(sorted(config.items())))
        if key not in self.folders:
            self.folders[key] = self._build(head, config)
        return self.folders[key]

    def _build(self, head: str, config: dict[str, Any]) -> str:
        folder = self.tmp_path_factory.mktemp(f"{self.family}-{head}")
        tokenizer = transformers.AutoTokenizer.from_pretrained(save_family(self.family, folder))
        labels = {"num_labels": LABELS[head]} if head in LABELS else {}
        hf_config = getattr(transformers, self.prefix + "Config")(
            **{**self.sizes, "vocab_size": len(tokenizer), **labels, **config}, attn_implementation="eager")
        torch.manual_seed(len(self.family) + len(head))
        model = getattr(transformers, self.prefix + head)(hf_config).eval()
        with torch.no_grad():  # biases and LayerNorms off their init too, so that a lost one shows
            for name, parameter in model.named_parameters():
                parameter.add_(torch.randn_like(parameter), alpha=0.05)
                if name.startswith(self.decisive):
                    parameter.mul_(20)
        model.save_pretrained(folder)
        return os.fspath(folder)

    def theirs(self, head: str, path: str) -> Any:
        return getattr(transformers, self.prefix + head).from_pretrained(path).eval()


def encoded(folder: str, padding_side: str = "right", texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side=padding_side)
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def packed_rows(batch: dict[str, torch.Tensor]) -> PackedBatch:
    """The real tokens of a right-padded batch, packed."""
    mask = batch["attention_mask"].bool()
    return PackedBatch.from_token_lists([row[m].tolist() for row, m in zip(batch["input_ids"], mask)])


def compare(ours: Any, theirs: Any, fields: tuple[str, ...], mask: torch.Tensor) -> None:
    """Each field: per-token outputs (B, S, ...) on the real tokens of ``mask``, others whole."""
    for name in fields:
        a, b = getattr(ours, name), getattr(theirs, name)
        atol = HIDDEN_ATOL if name == "last_hidden_state" else LOGITS_ATOL
        if a.shape[:2] == mask.shape:
            a, b = a[mask], b[mask]
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def assert_padded_left_padded_and_packed(ours: Any, theirs: Any, path: str, fields: tuple[str, ...],
                                         extra: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict
                                         ) -> None:
    """``ours`` gives ``theirs``' outputs on right- and left-padded batches of TEXTS, and packed (against the
    right-padded batch's real tokens); ``extra(batch)``: the inputs ours takes beside transformers'."""
    for side in ("right", "left"):
        batch = encoded(path, side)
        with torch.inference_mode():
            compare(ours(**extra(batch)), theirs(**batch), fields, batch["attention_mask"].bool())
    batch = encoded(path)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        got, expected = ours(packed_rows(batch)), theirs(**batch)
    for name in fields:
        value = getattr(expected, name)
        torch.testing.assert_close(getattr(got, name), value[mask] if value.shape[:2] == mask.shape else value,
                                   atol=LOGITS_ATOL, rtol=0)


def assert_fill_mask_matches(path: str) -> None:
    ours = bertfast.pipeline("fill-mask", model=path)
    theirs = transformers.pipeline("fill-mask", model=path, device="cpu")
    mask = ours.tokenizer.mask_token
    texts = [f"Le chat est sur la {mask}.", f"{mask} and 北京", f"the quick brown {mask} jumps over the lazy dog"]
    for got, expected in zip(ours(texts, top_k=4), theirs(texts, top_k=4), strict=True):
        assert [(p["token"], p["token_str"], p["sequence"]) for p in got] == \
            [(p["token"], p["token_str"], p["sequence"]) for p in expected]
        torch.testing.assert_close(torch.tensor([p["score"] for p in got]),
                                   torch.tensor([p["score"] for p in expected]), atol=1e-5, rtol=0)


def assert_text_classification_matches(path: str) -> None:
    """Labels and scores of TEXTS[:3]: the fourth is longer than the tokenizer's 48 tokens, where bertfast's
    pipeline truncates and transformers' does not."""
    got = bertfast.pipeline("text-classification", model=path)(TEXTS[:3], top_k=None)
    expected = transformers.pipeline("text-classification", model=path, device="cpu")(TEXTS[:3], top_k=None)
    assert [[r["label"] for r in row] for row in got] == [[r["label"] for r in row] for row in expected]
    torch.testing.assert_close(torch.tensor([[r["score"] for r in row] for row in got]),
                               torch.tensor([[r["score"] for r in row] for row in expected]), atol=1e-5, rtol=0)


def assert_token_classification_matches(path: str, long_strategies: tuple[str, ...] = ("simple",)) -> None:
    """Entities of TEXTS[:3] under three aggregation strategies, and of TEXTS[3] (longer than the tokenizer's 48
    tokens: overlapping windows, stride 8) under ``long_strategies``; scores within LOGITS_ATOL."""
    ours = bertfast.pipeline("token-classification", model=path)
    theirs = transformers.pipeline("token-classification", model=path, device="cpu", stride=8)
    cases = [(text, strategy) for text in TEXTS[:3] for strategy in ("none", "simple", "first")]
    cases += [(TEXTS[3], strategy) for strategy in long_strategies]
    for text, strategy in cases:
        a, b = ours(text, aggregation_strategy=strategy, stride=8), theirs(text, aggregation_strategy=strategy)
        assert [{k: v for k, v in e.items() if k != "score"} for e in a] == \
            [{k: v for k, v in e.items() if k != "score"} for e in b]
        torch.testing.assert_close(torch.tensor([e["score"] for e in a]), torch.tensor([float(e["score"]) for e in b]),
                                   atol=LOGITS_ATOL, rtol=0)


def assert_lora_matches_peft(base_dir: str, adapter: str | os.PathLike, hf_class: str) -> None:
    """A LoRA adapter written by ``bertfast finetune --lora`` over ``base_dir``: bertfast's load with
    ``adapter=`` gives PEFT's logits (transformers' ``hf_class`` with PeftModel) on TEXTS[:3]."""
    import peft

    base = getattr(transformers, hf_class).from_pretrained(base_dir, num_labels=2)
    expected = peft.PeftModel.from_pretrained(base, os.fspath(adapter)).eval()
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(base_dir, adapter=adapter, num_labels=2)
    batch = dict(transformers.AutoTokenizer.from_pretrained(base_dir)(TEXTS[:3], padding=True, return_tensors="pt"))
    with torch.inference_mode():
        compare(ours(**batch), expected(**batch), ("logits",), batch["attention_mask"].bool())


def int8_cosine(path: str) -> float:
    """The smallest cosine similarity, over the real tokens of TEXTS, of the int8 encoder's hidden states to the
    float32 one's."""
    fp32, int8 = (bertfast.AutoModel.from_pretrained(path, quantize=q) for q in (None, "int8"))
    replaced = [name for name, module in int8.named_modules() if isinstance(module, Int8Linear)]
    assert len(replaced) == 4 * int8.config.num_hidden_layers, replaced  # qkv, attention out, FFN up and down
    batch = encoded(path)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(int8(**batch).last_hidden_state[mask],
                                                       fp32(**batch).last_hidden_state[mask], dim=-1)
    return float(cosine.min())


def labels_for(head: str, batch: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Random labels of a head's loss for a padded batch (B, S): padding positions IGNORE_INDEX where per token."""
    mask = batch["attention_mask"].bool()
    batch_size, seq_len = mask.shape
    generator = torch.Generator().manual_seed(7)
    if head == "ForMaskedLM":
        labels = torch.randint(0, vocab_size, mask.shape, generator=generator)
        chosen = (torch.rand(mask.shape, generator=generator) < 0.3) & mask
        return {"labels": labels.masked_fill(~chosen, -100)}
    if head == "ForTokenClassification":
        return {"labels": torch.randint(0, LABELS[head], mask.shape, generator=generator).masked_fill(~mask, -100)}
    if head == "ForSequenceClassification":
        return {"labels": torch.randint(0, LABELS[head], (batch_size,), generator=generator)}
    if head == "ForQuestionAnswering":
        return {"start_positions": torch.randint(0, seq_len, (batch_size,), generator=generator),
                "end_positions": torch.randint(0, seq_len, (batch_size,), generator=generator)}
    if head == "ForMultipleChoice":  # the batch read as (B / 2, 2 choices, S): the right choice of each
        return {"labels": torch.randint(0, 2, (batch_size // 2,), generator=generator)}
    if head == "ForPreTraining":  # ELECTRA's discriminator: 1 = replaced
        return {"labels": torch.randint(0, 2, mask.shape, generator=generator)}
    raise ValueError(f"no labels for {head}")


def assert_loss_matches(family: Family, head: str) -> None:
    """``head``'s loss on the family's checkpoint, labels given, equal to transformers' (multiple choice: the batch
    as 2 examples x 2 choices)."""
    path = family.folder(head)
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(path)
    theirs = family.theirs(head, path)
    batch = encoded(path)
    labels = labels_for(head, batch, ours.config.vocab_size)
    if head == "ForMultipleChoice":
        batch = {k: v.view(2, 2, -1) for k, v in batch.items()}
    with torch.inference_mode():
        got, expected = ours(**batch, **labels).loss, theirs(**batch, **labels).loss
    assert got is not None and torch.isfinite(got)
    torch.testing.assert_close(got, expected, atol=LOGITS_ATOL, rtol=0)


def assert_multiple_choice_matches(family: Family, class_name: str) -> None:
    """The family's multiple-choice model (``class_name``) on 2 examples x 2 choices, right- and left-padded."""
    path = family.folder("ForMultipleChoice")
    ours = bertfast.AutoModelForMultipleChoice.from_pretrained(path)
    assert type(ours).__name__ == class_name
    theirs = family.theirs("ForMultipleChoice", path)
    for side in ("right", "left"):
        batch = {k: v.view(2, 2, -1) for k, v in encoded(path, side).items()}
        with torch.inference_mode():
            torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=LOGITS_ATOL, rtol=0)
