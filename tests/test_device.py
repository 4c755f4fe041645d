"""Device resolution: a device name checked against this machine, with the fix in the error."""
from __future__ import annotations

import pytest
import torch

from bertfast.device import default_device, resolve_device


def test_default_device_follows_cuda():
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_resolves():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device, message", [
    ("gpu0", r"device 'gpu0' is not a device name: use 'cpu' or 'cuda'"),
    ("meta", r"device 'meta' is not supported: bertfast runs on 'cpu' and 'cuda'"),
])
def test_bad_names_are_refused_with_the_fix(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_a_gpu_says_to_use_the_cpu():
    with pytest.raises(ValueError, match="CUDA is not available on this machine; use --device cpu"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_missing_gpu_index_names_the_ones_there():
    with pytest.raises(ValueError, match="does not exist: this machine has"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
