"""bertfast/heads/pretraining.py: the MLM and NSP losses, shared by the models and the trainer, against
transformers' losses and with their label checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bertfast
from bertfast.heads.pretraining import masked_lm_loss, next_sentence_loss
from bertfast.inputs import IGNORE_INDEX
from tests.helpers import TINY, padded_batch


def test_pretraining_loss_only_with_both_labels_as_transformers(tiny_checkpoint):
    model = bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)
    batch = padded_batch(TINY["vocab_size"], [6, 6])
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    labels[:, 1:3] = batch["input_ids"][:, 1:3]
    assert model(**batch, labels=labels).loss is None
    assert model(**batch, next_sentence_label=torch.tensor([0, 1])).loss is None
    both = model(**batch, labels=labels, next_sentence_label=torch.tensor([0, 1]))
    expected = (F.cross_entropy(both.prediction_logits.reshape(-1, TINY["vocab_size"]), labels.reshape(-1))
                + F.cross_entropy(both.seq_relationship_logits, torch.tensor([0, 1])))
    torch.testing.assert_close(both.loss, expected, atol=1e-6, rtol=0)


def test_losses_ignore_unlabelled_positions_and_check_labels():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 4] = 3, 10
    expected = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 4]]), torch.tensor([3, 10]))
    torch.testing.assert_close(masked_lm_loss(logits, labels), expected)
    with pytest.raises(ValueError, match=r"labels must hold class ids in \[0, 11\) or -100"):
        masked_lm_loss(logits, labels.masked_fill(labels == 3, 11))
    with pytest.raises(ValueError, match=r"labels has shape \(2, 4\), expected \(2, 5\)"):
        masked_lm_loss(logits, labels[:, :4])
    with pytest.raises(TypeError, match="next_sentence_label must be an integer tensor"):
        next_sentence_loss(torch.randn(2, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"next_sentence_label must hold class ids in \[0, 2\)"):
        next_sentence_loss(torch.randn(2, 2), torch.tensor([0, 2]))
