"""Model-agnostic Triton kernels for transformer encoders, each with a torch reference `<op>_ref`.

Triton is optional: the references always import; the fused ops need `triton` installed and either a
CUDA tensor or ``TRITON_INTERPRET=1`` (the interpreter runs them on CPU tensors).
"""
from kernels.attention import attention_ref
from kernels.gelu import bias_gelu_ref
from kernels.layer_norm import layer_norm_ref

__all__ = ["attention_ref", "bias_gelu_ref", "layer_norm_ref"]
