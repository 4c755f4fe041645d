"""Evaluation of a fine-tuned model on held-out features: the metrics of each task, and which one picks the best epoch.

- single-label classification: accuracy, F1 (binary: of label id 1; more classes: macro-averaged);
- multi-label: micro F1 over (example, label) decisions at probability 0.5, and exact-match accuracy;
- regression: mean squared error (the lower the better) and Pearson's r;
- token classification: word accuracy (first word pieces) and micro F1 over the words whose gold or predicted tag is
  not "O" (a tag-level F1, not seqeval's entity spans);
- question answering: SQuAD's exact match and token F1 (``bertfast.training.qa_data``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from bertfast.inputs import IGNORE_INDEX
from bertfast.tasks import get_task, load

# the metric that picks the best epoch of text classification, by problem type (other tasks: their table entry's)
PROBLEM_BEST = {"single_label_classification": "accuracy", "multi_label_classification": "f1", "regression": "mse"}
LOWER_IS_BETTER = ("mse",)
EVAL_BATCH = 64  # features per forward pass


def f1_score(true_positive: float, predicted: float, actual: float) -> float:
    """2 TP / (predicted + actual); 0 when both are empty."""
    return 2 * true_positive / (predicted + actual) if predicted + actual else 0.0


def classification_scores(predictions: torch.Tensor, labels: torch.Tensor, num_labels: int) -> dict[str, float]:
    """accuracy and F1 of class ids (N,) against labels (N,)."""
    accuracy = (predictions == labels).float().mean().item()
    classes = [1] if num_labels == 2 else range(num_labels)
    f1s = [f1_score(((predictions == c) & (labels == c)).sum().item(), (predictions == c).sum().item(),
                    (labels == c).sum().item()) for c in classes]
    return {"accuracy": accuracy, "f1": sum(f1s) / len(f1s)}


def multi_label_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    predicted = logits.sigmoid() > 0.5  # (N, C)
    actual = labels > 0.5
    return {"f1": f1_score((predicted & actual).sum().item(), predicted.sum().item(), actual.sum().item()),
            "accuracy": (predicted == actual).all(1).float().mean().item()}


def regression_scores(values: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    values, labels = values.double().flatten(), labels.double().flatten()
    pearson = torch.corrcoef(torch.stack([values, labels]))[0, 1].item() if len(values) > 1 else float("nan")
    return {"mse": torch.mean((values - labels) ** 2).item(), "pearson": pearson}


def token_scores(predictions: torch.Tensor, labels: torch.Tensor, outside: int | None) -> dict[str, float]:
    """Words (positions not IGNORE_INDEX): accuracy, and micro F1 over the tags other than ``outside`` ("O")."""
    keep = labels != IGNORE_INDEX
    predictions, labels = predictions[keep], labels[keep]
    tagged_p = predictions != outside if outside is not None else torch.ones_like(predictions, dtype=torch.bool)
    tagged_l = labels != outside if outside is not None else torch.ones_like(labels, dtype=torch.bool)
    true_positive = ((predictions == labels) & tagged_l).sum().item()
    return {"accuracy": (predictions == labels).float().mean().item(),
            "f1": f1_score(true_positive, tagged_p.sum().item(), tagged_l.sum().item())}


def best_metric(task: str, problem_type: str) -> str:
    """The metric that picks the best epoch: the task's, else its problem type's."""
    return get_task(task).finetune.best_metric or PROBLEM_BEST[problem_type]


def is_better(metric: str, score: float, best: float | None) -> bool:
    """Whether ``score`` beats the best so far (None: nothing yet); mse is better lower."""
    return best is None or (score < best if metric in LOWER_IS_BETTER else score > best)


def text_classification_scores(outputs: list, labels: list[torch.Tensor], data, features: Sequence[dict],
                               rows: Sequence[dict], problem_type: str) -> dict[str, float]:
    """The problem type's metrics of the batches' logits (N, C) against their labels."""
    logits, gold = torch.cat([o.logits.float().cpu() for o in outputs]), torch.cat(labels)
    if problem_type == "regression":
        return regression_scores(logits, gold)
    if problem_type == "multi_label_classification":
        return multi_label_scores(logits, gold)
    return classification_scores(logits.argmax(-1), gold, logits.shape[1])


def token_classification_scores(outputs: list, labels: list[torch.Tensor], data, features: Sequence[dict],
                                rows: Sequence[dict], problem_type: str) -> dict[str, float]:
    """Word accuracy and tag F1 of the batches' logits (B, S, C), padded to one length."""
    logits = [o.logits.float().cpu() for o in outputs]
    width = max(o.shape[1] for o in logits)
    logits = torch.cat([torch.nn.functional.pad(o, (0, 0, 0, width - o.shape[1])) for o in logits])
    gold = torch.cat([torch.nn.functional.pad(g, (0, width - g.shape[1]), value=IGNORE_INDEX) for g in labels])
    return token_scores(logits.argmax(-1), gold, data.label2id.get("O"))


def question_answering_scores(outputs: list, labels: list[torch.Tensor], data, features: Sequence[dict],
                              rows: Sequence[dict], problem_type: str) -> dict[str, float]:
    """SQuAD's exact match and F1 of the best spans (``bertfast.training.qa_data``)."""
    return data.scores(features, rows, [(o.start_logits.float().cpu(), o.end_logits.float().cpu()) for o in outputs])


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, features: Sequence[dict], rows: Sequence[dict], args,
             device: torch.device) -> dict[str, float]:
    """The task's metrics of ``model`` (eval mode, no dropout) on held-out ``features`` and the ``rows`` they came from
    (the task table's ``finetune.scores``); ``eval_loss`` is the mean of the batches' losses."""
    was_training = model.training
    model.eval()
    outputs, losses, labels = [], [], []
    for start in range(0, len(features), EVAL_BATCH):
        batch = {k: v.to(device) for k, v in data.collate(features[start:start + EVAL_BATCH]).items()}
        out = model(**batch)
        losses.append(out.loss.item())
        outputs.append(out)
        if "labels" in batch:
            labels.append(batch["labels"].cpu())
    model.train(was_training)
    scores = load(get_task(args.task).finetune.scores)(outputs, labels, data, features, rows, args.problem_type)
    return {"eval_loss": sum(losses) / len(losses), **scores}
