"""bertfast/bench/parity.py: the tolerance rule a provider passes before it is timed."""
from __future__ import annotations

import pytest
import torch

from bertfast.bench import parity


def test_parity_rule():
    ref = parity.Reference(torch.tensor([[1.0, -8.0], [0.5, 2.0]]), None)
    mask = torch.tensor([[1, 0, 1]])
    out = torch.zeros(1, 3, 2)
    out[0, 0], out[0, 2] = ref.real[0], ref.real[1]
    out[0, 1] = 123.0  # a padding position: never compared
    assert parity.check(out, mask, ref, torch.float32).ok
    out[0, 2, 1] += 7e-4  # allowed: 1e-4 x max(1, 8)
    assert parity.check(out, mask, ref, torch.float32).ok
    out[0, 2, 1] += 2e-4
    verdict = parity.check(out, mask, ref, torch.float32)
    assert not verdict.ok and verdict.allowed == pytest.approx(8e-4) and "> allowed" in str(verdict)
    out[0, 2, 1] = float("nan")
    verdict = parity.check(out, mask, ref, torch.float32)
    assert not verdict.ok and verdict.max_abs_error == float("inf") and "non-finite" in str(verdict)

    half_ref = parity.Reference(ref.real, half_error=0.02)
    assert parity.allowed_error(half_ref, torch.float16) == pytest.approx(2 * 0.02 + 1e-3)
    assert parity.allowed_error(half_ref, torch.bfloat16) == pytest.approx(2 * 0.02 + 1e-2)
    with pytest.raises(ValueError, match="no tolerance"):
        parity.allowed_error(ref, torch.float16)
