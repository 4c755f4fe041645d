"""Which device a command runs on: the default one, and a device name checked against this machine."""
from __future__ import annotations

import torch

DEVICE_TYPES = ("cpu", "cuda")  # what bertfast runs on (the Triton kernels need CUDA; anything else: the CPU)


def default_device() -> str:
    """The device a command runs on when none is named: "cuda" when a GPU is present, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that exists on this machine, or a ValueError that says what to pass instead
    ("cpu", "cuda", "cuda:N"), so a missing GPU is never mistaken later for a broken file."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device name: use 'cpu' or 'cuda' (or 'cuda:N')") from e
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r} is not supported: bertfast runs on 'cpu' and 'cuda' (or 'cuda:N')")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine; use --device cpu (device='cpu' in Python)")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return resolved
