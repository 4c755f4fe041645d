"""Model-agnostic Triton kernels for transformer encoders, each with a torch reference `<op>_ref`.

Triton is optional: everything imports without it and the references run; calling a Triton op then
raises a RuntimeError saying to install triton. The Triton ops need CUDA tensors, or
``TRITON_INTERPRET=1`` set before ``kernels`` is imported (the interpreter runs them on CPU tensors).

    layer_norm(x, weight, bias, eps=1e-12, residual=None)          LayerNorm(x + residual), fp32 stats
    bias_gelu(x, bias, approximate="none")                         gelu(x + bias), erf or tanh
    linear(x, weight, bias=None, gelu=None)                        x @ weight.T + bias, one GEMM with the bias
                                                                   and GELU ("none" = erf / "tanh") epilogue
    embedding_layer_norm(input_ids, *, word_weight,                LayerNorm(word[ids] + token_type[tt]
        position_weight, token_type_weight, ln_weight, ln_bias,        + position[pos]) in one pass
        eps=1e-12, token_type_ids=None, position_ids=None,
        padding_idx=None)

GELU everywhere is named by F.gelu's ``approximate``: "none" (exact erf) or "tanh".
    attention(q, k, v, key_padding_mask=None, scale=None)          flash attention, (B, H, S, D)
    varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale=None)  flash attention, packed (T, H, D)
"""
from kernels.attention import attention, attention_ref, varlen_attention, varlen_attention_ref
from kernels.embedding import embedding_layer_norm, embedding_layer_norm_ref
from kernels.gelu import bias_gelu, bias_gelu_ref
from kernels.layer_norm import layer_norm, layer_norm_ref
from kernels.linear import linear, linear_ref

__all__ = [
    "attention",
    "attention_ref",
    "bias_gelu",
    "bias_gelu_ref",
    "embedding_layer_norm",
    "embedding_layer_norm_ref",
    "layer_norm",
    "layer_norm_ref",
    "linear",
    "linear_ref",
    "varlen_attention",
    "varlen_attention_ref",
]
