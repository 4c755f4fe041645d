"""``export_onnx(..., quantize="int8")``: onnxruntime's own dynamic int8 quantization of the exported graph
(``onnxruntime.quantization.quantize_dynamic``: int8 weights per output channel, activations quantized at run
time), and the accuracy check it must pass against the float32 PyTorch model.

Quantization changes numbers by design, so the int8 stage is held to a cosine rule instead of a max abs diff:
for every validation shape and output, the cosine similarity between the int8 output and PyTorch's float32
output, each flattened, must be at least ``MIN_COSINE``; the max abs diff is reported beside it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

MIN_COSINE = 0.99  # int8 vs PyTorch float32, per output and validation shape


def quantize_onnx(proto: Any) -> Any:
    """The graph with its MatMuls (and onnxruntime's fused Attention, when optimized) in dynamic int8."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save_model(proto, source)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load_model(target)


def compare_int8(names: tuple[str, ...], inputs: list[dict[str, torch.Tensor]],
                 references: list[tuple[torch.Tensor, ...]], results: list[list[Any]],
                 error: type[Exception]) -> tuple[dict[str, float], dict[str, float]]:
    """(max abs diff, min cosine) per output over all shapes; raises ``error`` listing every shape's figures if a
    cosine is under MIN_COSINE or not finite."""
    worst = dict.fromkeys(names, 0.0)
    cosines = dict.fromkeys(names, 1.0)
    lines, failed = [], False
    for x, reference, result in zip(inputs, references, results):
        for name, expected, got in zip(names, reference, result):
            got = torch.from_numpy(got).double().flatten()
            expected = expected.double().flatten()
            diff = (got - expected).abs().max().item()
            cosine = torch.nn.functional.cosine_similarity(got, expected, dim=0).item()
            ok = cosine >= MIN_COSINE  # False for NaN
            failed |= not ok
            worst[name], cosines[name] = max(worst[name], diff), min(cosines[name], cosine)
            lines.append(f"  {str(tuple(x['input_ids'].shape)):<10} {name:<24} cosine {cosine:.5f} (at least "
                         f"{MIN_COSINE}) max|diff| {diff:.2e}{'' if ok else '  <-- FAIL'}")
    if failed:
        raise error("the int8 ONNX export is too far from PyTorch float32:\n" + "\n".join(lines))
    return worst, cosines
