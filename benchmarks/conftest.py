"""Without CUDA the "triton" provider runs through the interpreter, which Triton picks at ``@triton.jit``
time: set ``TRITON_INTERPRET=1`` before the benchmark module imports ``bertfast_kernels``."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
