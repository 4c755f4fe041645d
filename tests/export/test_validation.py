"""The checks of an export against PyTorch: every diff listed, NaN fails, fp16 top-k allows near-ties only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bertfast.export.validation import ExportValidationError, check_top_k, compare


def test_a_diff_over_tolerance_fails_listing_every_measured_diff():
    inputs = [{"input_ids": torch.zeros(2, 3, dtype=torch.long)}, {"input_ids": torch.zeros(1, 4, dtype=torch.long)}]
    references = [(torch.zeros(2, 3, 8),), (torch.zeros(1, 4, 8),)]
    results = [[np.full((2, 3, 8), 2e-6, np.float32)], [np.full((1, 4, 8), 3e-5, np.float32)]]
    with pytest.raises(ExportValidationError, match=r"(?s)\(2, 3\).*2\.00e-06.*\(1, 4\).*3\.00e-05.*FAIL"):
        compare("fp32", ("last_hidden_state",), inputs, references, results)
    assert compare("fp32", ("logits",), inputs, references, results) == {"logits": pytest.approx(3e-5)}
    results[0][0][0, 0, 0] = np.nan
    with pytest.raises(ExportValidationError, match="nan"):
        compare("fp32", ("logits",), inputs, references, results)


def test_fp16_top_k_check_allows_near_ties_only():
    inputs = [{"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}]
    reference = torch.zeros(1, 3, 10)
    reference[0, :, :6] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.99])  # ranks 5 and 6 are a near-tie
    swapped = reference.clone()
    swapped[0, 0, 4], swapped[0, 0, 5] = 1.99, 2.0
    check = check_top_k([0], inputs, [(reference,)], [[swapped.numpy()]])
    assert check == {"positions": 2, "identical": 1, "max_swap_gap": pytest.approx(0.01)}
    swapped[0, 1, 0], swapped[0, 1, 1] = 5.0, 6.0  # ranks 1 and 2 are a full logit apart
    with pytest.raises(ExportValidationError, match=r"beyond near-ties at 1 positions of shape \(1, 3\), e\.g\. "
                                                    r"PyTorch \[0, 1, 2, 3, 4\] vs fp16 \[1, 0, 2, 3, 4\]"):
        check_top_k([0], inputs, [(reference,)], [[swapped.numpy()]])
    assert check_top_k([], inputs, [(reference,)], [[swapped.numpy()]]) is None
