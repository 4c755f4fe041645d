"""The pretraining loss as the trainer computes it: sums over a (micro-)batch that ranks and accumulation steps add
up, the mean loss of ``model(**batch).loss`` from them, the metrics of a step and the evaluation of fixed batches."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bertfast.heads.pretraining import BertForPreTraining
from bertfast.inputs import IGNORE_INDEX


@dataclass
class PretrainingLoss:
    loss: torch.Tensor  # MLM + NSP, scalar
    mlm_loss: torch.Tensor  # mean cross-entropy over the labelled positions
    nsp_loss: torch.Tensor  # mean cross-entropy of the IsNext / NotNext classifier
    mlm_correct: torch.Tensor  # number of labelled positions whose top prediction is the label
    nsp_correct: torch.Tensor  # number of pairs whose NSP prediction is right


def pretraining_sums(model: BertForPreTraining, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(4,) float32: the summed MLM cross-entropy over the labelled positions, the summed NSP cross-entropy over the
    pairs, and the numbers of right MLM and NSP predictions. Sums, so that micro-batches and ranks add up to the
    global batch's; the vocabulary logits are computed at the labelled positions only (about 15% of the tokens):
    the full (B, S, vocab) logits would dominate a small model's step.

    batch: input_ids, token_type_ids, attention_mask, labels (B, S) and next_sentence_label (B,).
    """
    out = model.base_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX  # (B, S)
    mlm_logits = model.mlm_logits(out.last_hidden_state[selected]).float()  # (N, vocab)
    nsp_logits = model.cls.seq_relationship(out.pooler_output).float()  # (B, 2)
    targets, nsp_labels = labels[selected], batch["next_sentence_label"]
    return torch.stack([F.cross_entropy(mlm_logits, targets, reduction="sum"),
                        F.cross_entropy(nsp_logits, nsp_labels, reduction="sum"),
                        (mlm_logits.argmax(-1) == targets).sum().float(),
                        (nsp_logits.argmax(-1) == nsp_labels).sum().float()])


class PretrainingSums(torch.nn.Module):
    """``pretraining_sums`` as a module, so that DistributedDataParallel can wrap it: DDP synchronises the gradients
    of the backward pass of its own forward."""

    def __init__(self, model: BertForPreTraining) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return pretraining_sums(self.model, batch)


def pretraining_loss(model: BertForPreTraining, batch: dict[str, torch.Tensor]) -> PretrainingLoss:
    """The loss of ``model(**batch).loss`` (MLM + NSP, the same loss functions): ``pretraining_sums`` divided by the
    numbers of labelled positions and pairs."""
    sums = pretraining_sums(model, batch)
    mlm_loss = sums[0] / (batch["labels"] != IGNORE_INDEX).sum()
    nsp_loss = sums[1] / len(batch["next_sentence_label"])
    return PretrainingLoss(mlm_loss + nsp_loss, mlm_loss, nsp_loss, sums[2], sums[3])


def batch_counts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(3,) float32: labelled positions, pairs and real tokens of a collated batch, on its device."""
    labels = batch["labels"]
    return torch.stack([(labels != IGNORE_INDEX).sum(), torch.tensor(len(labels), device=labels.device),
                        batch["attention_mask"].sum()]).float()


def _metrics(out: PretrainingLoss, counts: torch.Tensor, grad_norm: torch.Tensor | None = None) -> dict[str, float]:
    """Plain floats with one host synchronisation (``tokens`` an int); ``counts`` as ``batch_counts`` gives them;
    ``grad_norm`` joins them when given."""
    values = [out.loss.detach(), out.mlm_loss.detach(), out.nsp_loss.detach(), out.mlm_correct / counts[0],
              out.nsp_correct / counts[1], counts[2]]
    names = ["loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "tokens"]
    if grad_norm is not None:
        values.append(grad_norm.float())
        names.append("grad_norm")
    metrics = dict(zip(names, torch.stack(values).tolist()))
    metrics["tokens"] = int(metrics["tokens"])
    return metrics


@torch.no_grad()
def evaluate(model: BertForPreTraining, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean loss and accuracies of ``model`` in eval mode (no dropout) over fixed batches."""
    if not batches:
        raise ValueError("evaluate needs at least one batch")
    was_training = model.training
    model.eval()
    results = []
    for batch in batches:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        results.append(_metrics(pretraining_loss(model, batch), batch_counts(batch)))
    model.train(was_training)
    return {key: sum(r[key] for r in results) / len(results) for key in results[0]}
