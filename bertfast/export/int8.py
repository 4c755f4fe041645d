"""``export_onnx(..., quantize="int8")``: the exported graph's encoder linear layers in int8 as bertfast's torch
int8 computes them (bertfast.cpu.int8), in standard ONNX operators, and the accuracy check it must pass against
the float32 PyTorch model.

Each encoder ``MatMul(x, W)`` becomes: x divided by its smoothing (calibrated on bertfast's calibration texts with
the checkpoint's tokenizer, or on random token ids without one), each row mapped onto [-1, 1] (ReduceMax / ReduceMin),
``DynamicQuantizeLinear`` (its one scale is then each row's own), ``MatMulInteger`` with the int8 weights (one
scale per output channel), and the row mapped back: ``half * (W q) + mid * sum(W)``; the bias Add after it is kept.
The weights take 7 bits (|q| <= 63): the file runs on any CPU, and onnxruntime's u8 x s8 kernels saturate at 8
bits where the CPU lacks VNNI. Heads, embeddings, LayerNorm and attention stay float32, as in torch.
(onnxruntime's own ``quantize_dynamic`` measured min cosine 0.9575 on all-MiniLM-L6-v2 over real texts: one
activation scale per call.)

Quantization changes numbers by design, so the int8 stage is held to a cosine rule instead of a max abs diff:
for every validation input and output, the cosine similarity between the int8 output and PyTorch's float32
output must be at least ``MIN_COSINE``, per text where the inputs are real texts (each row's real tokens), else
per shape flattened; the max abs diff is reported beside it.
"""
from __future__ import annotations

from typing import Any

import torch

MIN_COSINE = 0.99  # int8 vs PyTorch float32, per output and validation text (or random-id shape)
WEIGHT_BITS = 7


def _constant_matmuls(proto: Any) -> list[Any]:
    """The graph's MatMul nodes whose second input is a 2-D initializer, in graph order."""
    shapes = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    return [node for node in proto.graph.node
            if node.op_type == "MatMul" and len(shapes.get(node.input[1], ())) == 2]


def quantize_onnx(proto: Any, model: Any, batches: list[dict[str, torch.Tensor]]) -> Any:
    """``proto`` (the float32 export of ``model``) with the encoder's MatMuls in int8 (see the module docstring);
    ``batches``: tokenized calibration texts, or [] (then random token ids calibrate)."""
    import onnx
    from onnx import helper, numpy_helper

    from bertfast.cpu.int8 import (calibrate, calibration_length, quantized_weight, random_calibration_batches,
                                   smoothing)
    from bertfast.models.registry import architecture_of

    slots = list(architecture_of(model.config).linear_layers(model.base_model))
    absmax, _ = calibrate(model, batches or random_calibration_batches(model.config, calibration_length(model.config)))
    inits = {init.name: init for init in proto.graph.initializer}
    matmuls = _constant_matmuls(proto)
    if len(matmuls) < len(slots):
        raise ValueError(f"int8 export: the graph has {len(matmuls)} MatMuls with a constant weight for the encoder's "
                         f"{len(slots)} linear layers: export without quantize, or report the architecture")
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    new_inits, replaced = [], {}
    for i, (slot, node) in enumerate(zip(slots, matmuls)):
        weight = slot.linear.weight.detach().float()
        graph_weight = torch.from_numpy(numpy_helper.to_array(inits[node.input[1]]).copy()).float()
        if graph_weight.shape != weight.T.shape or not torch.allclose(graph_weight, weight.T):
            raise ValueError(f"int8 export: the graph's MatMul {node.name!r} is not {slot.name} (its weight differs): "
                             f"export without quantize, or report the architecture")
        smooth = smoothing(slot.linear, absmax[slot.name])
        q, scales = quantized_weight(weight, smooth, WEIGHT_BITS)
        p = f"int8_{i}_"
        tensors = {"w": q.T.to(torch.int8), "wscale": scales, "wsum": (q * scales[:, None]).sum(1),
                   "inv_smooth": 1.0 / smooth, "half_k": torch.tensor(0.5),
                   "tiny": torch.tensor(torch.finfo(torch.float32).tiny)}
        if opset >= 18:
            tensors["axes"] = torch.tensor([-1])
        for name, value in tensors.items():
            new_inits.append(numpy_helper.from_array(value.numpy(), p + name))
        x, y = p + "xs", node.output[0]
        nodes = [helper.make_node("Mul", [node.input[0], p + "inv_smooth"], [x])]
        for op in ("ReduceMax", "ReduceMin"):
            reduce_inputs = [x, p + "axes"] if opset >= 18 else [x]
            attrs = {"keepdims": 1} if opset >= 18 else {"keepdims": 1, "axes": [-1]}
            nodes.append(helper.make_node(op, reduce_inputs, [p + op], **attrs))
        nodes += [
            helper.make_node("Add", [p + "ReduceMax", p + "ReduceMin"], [p + "sum"]),
            helper.make_node("Mul", [p + "sum", p + "half_k"], [p + "mid"]),
            helper.make_node("Sub", [p + "ReduceMax", p + "ReduceMin"], [p + "range"]),
            helper.make_node("Mul", [p + "range", p + "half_k"], [p + "half0"]),
            helper.make_node("Max", [p + "half0", p + "tiny"], [p + "half"]),
            helper.make_node("Sub", [x, p + "mid"], [p + "centred"]),
            helper.make_node("Div", [p + "centred", p + "half"], [p + "unit"]),
            helper.make_node("DynamicQuantizeLinear", [p + "unit"], [p + "q", p + "qscale", p + "qzero"]),
            helper.make_node("MatMulInteger", [p + "q", p + "w", p + "qzero"], [p + "acc"]),
            helper.make_node("Cast", [p + "acc"], [p + "accf"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [p + "qscale", p + "wscale"], [p + "scale"]),
            helper.make_node("Mul", [p + "accf", p + "scale"], [p + "wq"]),
            helper.make_node("Mul", [p + "wq", p + "half"], [p + "scaled"]),
            helper.make_node("Mul", [p + "mid", p + "wsum"], [p + "offset"]),
            helper.make_node("Add", [p + "scaled", p + "offset"], [y]),
        ]
        replaced[id(node)] = nodes
    graph_nodes = []
    for node in proto.graph.node:
        graph_nodes.extend(replaced.get(id(node), [node]))
    used = {name for node in graph_nodes for name in node.input}
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(graph_nodes)
    kept = [init for init in out.graph.initializer if init.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + new_inits)
    return out


def _rows(x: dict[str, torch.Tensor], expected: torch.Tensor, got: torch.Tensor):
    """(expected, got) per text of a real-text batch: its real tokens' outputs for a per-token output (B, S, ...),
    its row otherwise."""
    mask = x["attention_mask"].bool()
    for b in range(expected.shape[0]):
        if expected.dim() >= 3 and expected.shape[1] == mask.shape[1]:
            yield expected[b][mask[b]].flatten(), got[b][mask[b]].flatten()
        else:
            yield expected[b].flatten(), got[b].flatten()


def compare_int8(names: tuple[str, ...], inputs: list[dict[str, torch.Tensor]],
                 references: list[tuple[torch.Tensor, ...]], results: list[list[Any]],
                 error: type[Exception], real: list[bool] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(max abs diff, min cosine) per output over all inputs; ``real[i]``: inputs[i] are real texts, judged per
    text (else flattened per shape). Raises ``error`` listing every input's figures if a cosine is under MIN_COSINE
    or not finite."""
    worst = dict.fromkeys(names, 0.0)
    cosines = dict.fromkeys(names, 1.0)
    lines, failed = [], False
    real = real or [False] * len(inputs)
    for x, reference, result, texts in zip(inputs, references, results, real):
        for name, expected, got in zip(names, reference, result):
            got, expected = torch.from_numpy(got).double(), expected.double()
            pairs = list(_rows(x, expected, got)) if texts else [(expected.flatten(), got.flatten())]
            diff = (got - expected).abs().max().item()
            cosine = min(torch.nn.functional.cosine_similarity(e, g, dim=0).item() for e, g in pairs)
            ok = cosine >= MIN_COSINE  # False for NaN
            failed |= not ok
            worst[name], cosines[name] = max(worst[name], diff), min(cosines[name], cosine)
            where = f"{len(pairs)} texts" if texts else str(tuple(x["input_ids"].shape))
            lines.append(f"  {where:<10} {name:<24} {'min ' if texts else ''}cosine {cosine:.5f} (at least "
                         f"{MIN_COSINE}) max|diff| {diff:.2e}{'' if ok else '  <-- FAIL'}")
    if failed:
        raise error("the int8 ONNX export is too far from PyTorch float32:\n" + "\n".join(lines))
    return worst, cosines
