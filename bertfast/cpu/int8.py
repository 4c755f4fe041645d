"""CPU int8: ``bertfast.quantize(model, "int8")`` and ``from_pretrained(..., quantize="int8")``.

The encoder's linear layers (each layer's fused query/key/value, attention output, intermediate and output
projections) become ``Int8Linear``, torch's dynamically quantized linear (``torch.ops.quantized.linear_dynamic``):
int8 weights with one scale per output channel, quantized once here, and 8-bit activations whose scale is
measured on every call (dynamic), products accumulated in int32 and the result returned in float32. The int8 engine is
the one torch ships for the CPU (``INT8_ENGINES``: ``x86`` picks fbgemm or oneDNN by shape, ``fbgemm``,
``onednn``); ``BERTFAST_INT8_ENGINE`` forces one, otherwise ``bertfast.cpu.int8_engine`` picks it (measured once
per CPU model, cached). Embeddings, LayerNorm, softmax, the pooler and every head stay in float32, so the model's
inputs, outputs and padding-free execution are as in float32. Accuracy is measured, not assumed: see the
README's "CPU modes" (tests/cpu/test_int8.py holds the bars).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn as nn

from bertfast.cpu.info import INT8_ENGINES, int8_engine
from bertfast.models.registry import architecture_of

MODES = ("int8",)


def check_quantize(quantize: str | None, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a quantization mode, dtype and device that do not go together, before anything is loaded."""
    if quantize is None:
        return
    if quantize not in MODES:
        raise ValueError(f"quantize={quantize!r} is not a quantization mode: use one of {MODES} (or None)")
    if torch.device(device).type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on the CPU only: load with device='cpu' (--device cpu), or "
                         f"use dtype=torch.float16 / bfloat16 on the GPU")
    if dtype != torch.float32:
        raise ValueError(f"quantize={quantize!r} quantizes a float32 model (its embeddings, LayerNorm and heads stay "
                         f"float32): load with dtype=torch.float32 (--dtype float32), not {dtype}")


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    """torch's int8 engine set to ``name`` for the weights packed inside the block (each packed weight keeps the
    engine it was packed for), then put back."""
    if name not in torch.backends.quantized.supported_engines:
        raise ValueError(f"int8 engine {name!r} is not in this torch build ({torch.backends.quantized.supported_engines})")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


class Int8Linear(nn.Module):
    """An nn.Linear in int8 through torch's dynamic quantized linear (``torch.ops.quantized.linear_dynamic``):
    weights quantized once, symmetric per output channel; activations quantized on every call to uint8 over the
    range of the call's input, at full 8-bit range (``reduce_range=False``: on this project's AVX2 machine without
    VNNI, where the reduced range would avoid a rare int16 saturation, it measured clearly more accurate).
    Input (..., in_features) float32 -> (..., out_features) float32, the bias added in float32."""

    def __init__(self, linear: nn.Linear, engine: str):
        super().__init__()
        from torch.ao.quantization.observer import default_per_channel_weight_observer

        self.in_features, self.out_features, self.engine = linear.in_features, linear.out_features, engine
        weight = linear.weight.detach().float()
        observer = default_per_channel_weight_observer()  # symmetric qint8, axis 0: one scale per output channel
        observer(weight)
        scales, zero_points = observer.calculate_qparams()
        bias = None if linear.bias is None else linear.bias.detach().float()
        with _engine(engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notice that quantized tensors are deprecated (the packing stays)
            qweight = torch.quantize_per_channel(weight, scales.double(), zero_points, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed, False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}"


def quantize(model: nn.Module, mode: str = "int8", engine: str | None = None) -> nn.Module:
    """Quantize a loaded bertfast model in place and return it (in eval mode); see the module docstring.

    ``engine``: one of ``INT8_ENGINES`` (default: ``bertfast.cpu.int8_engine()``). The model must be a float32
    model on the CPU, not already quantized. A quantized model runs inference only: it cannot be trained or
    saved (save the float32 model and quantize at load, or ``export_onnx(..., quantize="int8")``).
    """
    encoder = getattr(model, "base_model", None)
    if encoder is None or not hasattr(model, "config"):
        raise TypeError(f"quantize takes a bertfast model (BertModel or a model with heads), got {type(model).__name__}")
    if getattr(model, "quantization", None) is not None:
        raise ValueError(f"the model is already quantized ({model.quantization}): quantize a float32 model once")
    check_quantize(mode, model.dtype, model.device)
    engine = int8_engine() if engine is None else engine
    if engine not in INT8_ENGINES:
        raise ValueError(f"int8 engine {engine!r} is not one of {INT8_ENGINES}")
    for slot in architecture_of(model.config).linear_layers(encoder):
        slot.replace(Int8Linear(slot.linear, engine))
    model.quantization = encoder.quantization = mode
    model.quantization_engine = engine
    return model.eval()
