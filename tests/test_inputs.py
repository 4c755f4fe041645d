"""Bad input to the model: each case is a clear exception that says what was wrong and how to fix it."""
from __future__ import annotations

import pytest
import torch

import bertfast
from tests.helpers import TINY, padded_batch


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint)


def batch(**overrides):
    out = padded_batch(TINY["vocab_size"], [6, 4])
    out.update(overrides)
    return out


CASES = {
    "sequence_too_long": (dict(input_ids=torch.ones(1, TINY["max_position_embeddings"] + 1, dtype=torch.long),
                               attention_mask=None, token_type_ids=None),
                          ValueError, r"sequence length 65 exceeds max_position_embeddings \(64\).*truncation=True"),
    "token_id_too_large": (dict(input_ids=torch.full((2, 6), TINY["vocab_size"])), ValueError,
                           r"input_ids has values in \[99, 99\] but must be in \[0, 99\)"),
    "negative_token_id": (dict(input_ids=torch.full((2, 6), -1)), ValueError, r"input_ids .* must be in \[0, 99\)"),
    "token_type_out_of_range": (dict(token_type_ids=torch.full((2, 6), 2)), ValueError,
                                r"token_type_ids has values in \[2, 2\] but must be in \[0, 2\)"),
    "mask_shape_mismatch": (dict(attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError,
                            r"attention_mask has shape \(2, 5\) but input_ids has shape \(2, 6\)"),
    "token_type_shape_mismatch": (dict(token_type_ids=torch.zeros(3, 6, dtype=torch.long)), ValueError,
                                  r"token_type_ids has shape \(3, 6\)"),
    "float_input_ids": (dict(input_ids=torch.ones(2, 6)), TypeError, "input_ids must be an int64 or int32 tensor"),
    "int16_input_ids": (dict(input_ids=torch.ones(2, 6, dtype=torch.int16)), TypeError, "got dtype torch.int16"),
    "list_input_ids": (dict(input_ids=[[1, 2, 3]], attention_mask=None, token_type_ids=None), TypeError,
                       "return_tensors='pt'"),
    "empty_batch": (dict(input_ids=torch.ones(0, 6, dtype=torch.long), attention_mask=None, token_type_ids=None),
                    ValueError, r"empty input: input_ids has shape \(0, 6\)"),
    "empty_sequence": (dict(input_ids=torch.ones(2, 0, dtype=torch.long), attention_mask=None, token_type_ids=None),
                       ValueError, "empty input"),
    "one_dimensional_ids": (dict(input_ids=torch.ones(6, dtype=torch.long), attention_mask=None,
                                 token_type_ids=None), ValueError, r"must be 2-D .*input_ids\[None\]"),
    "additive_style_mask": (dict(attention_mask=torch.full((2, 6), -10000.0)), TypeError,
                            r"attention_mask has dtype torch.float32; pass an int or bool mask"),
    # A float mask raises whatever its values (README: "a float mask ... raises"): 0.5 and NaN were taken as tokens.
    "float_mask_half": (dict(attention_mask=torch.full((2, 6), 0.5)), TypeError, r"e\.g\. attention_mask\.long\(\)"),
    "float_mask_nan": (dict(attention_mask=torch.full((2, 6), float("nan"))), TypeError, "pass an int or bool mask"),
    "float_mask_of_ones": (dict(attention_mask=torch.ones(2, 6)), TypeError, "has dtype torch.float32"),
    "int_mask_of_twos": (dict(attention_mask=torch.full((2, 6), 2)), ValueError,
                         r"attention_mask has values in \[2, 2\] but must be in 0 \(padding\) or 1"),
    "labels_out_of_vocab": (dict(labels=torch.full((2, 6), 500), next_sentence_label=torch.tensor([0, 1])),
                            ValueError, r"labels must hold class ids in \[0, 99\) or -100"),
    "nsp_label_not_binary": (dict(labels=torch.full((2, 6), -100), next_sentence_label=torch.tensor([0, 2])),
                             ValueError, r"next_sentence_label must hold class ids in \[0, 2\)"),
    "labels_shape": (dict(labels=torch.full((2, 5), -100), next_sentence_label=torch.tensor([0, 1])), ValueError,
                     r"labels has shape \(2, 5\), expected \(2, 6\)"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_clear_error(model, case):
    overrides, error, message = CASES[case]
    with pytest.raises(error, match=message):
        model(**batch(**overrides))


def test_valid_variants_are_accepted(model):
    """Bool and int8/int32 masks, int32 ids: the same result as the canonical int64 inputs."""
    base = batch()
    reference = model(**base).prediction_logits
    for variant in (dict(attention_mask=base["attention_mask"].bool()),
                    dict(attention_mask=base["attention_mask"].to(torch.int8)),
                    dict(attention_mask=base["attention_mask"].int()),
                    dict(input_ids=base["input_ids"].int(), token_type_ids=base["token_type_ids"].int())):
        torch.testing.assert_close(model(**{**base, **variant}).prediction_logits, reference)
