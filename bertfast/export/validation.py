"""The checks of an ONNX export against the eager torch model (``bertfast.export.onnx.export_onnx``).

Validation, always: onnxruntime (CPU) runs the file on the (batch, sequence) shapes of
``onnx.VALIDATION_SHAPES`` (multiple-choice: with ``onnx.VALIDATION_CHOICES`` choices each), all different from the
traced example and with padding, and every output is compared with the eager torch model in float32. Max abs
diff tolerances (hidden states / logits), and what a random bert-base-shaped checkpoint and all-MiniLM-L6-v2
measure (onnxruntime 1.31, CPU):

- plain fp32 export: 1e-5 / 1e-4; measured hidden 4.5e-6 (bert-base) and 7.5e-6 (MiniLM), logits 3.8e-6;
- ``optimize=True``: 2e-5 / 1e-4 (the fused kernels accumulate in float32 too, but in another order); measured
  hidden 4.5e-6 and 7.3e-6, logits 3.6e-6 on an AVX-512 CPU, and 1.24e-5 (MiniLM at 512 tokens) on an AVX2-only
  AMD EPYC, where onnxruntime's fused kernels take other code paths;
- ``quantize="int8"``: onnxruntime's dynamic int8 (bertfast.export.int8), held to a cosine of at least 0.99
  against PyTorch float32 per output and shape (the max abs diff is reported);
- ``fp16=True``: 5e-2 / 1e-1; measured hidden 8.6e-3 and 6.2e-3, logits 4.3e-3 (real checkpoints have larger
  activations than random ones, hence the margin). Plus, for MLM logits, identical top-5 tokens at every real
  token position up to swapped near-ties: a token float16 ranks differently must have an fp32 logit within
  1e-1 of the one it displaces (random weights have many near-ties: 24 of 639 positions swap tokens 2e-3
  apart on bert-base). The report counts the positions whose top-5 is exactly PyTorch's.
"""
from __future__ import annotations

from typing import Any

import torch

HIDDEN_OUTPUTS = ("last_hidden_state", "pooler_output")
TOLERANCES = {"fp32": (1e-5, 1e-4), "optimized": (2e-5, 1e-4), "fp16": (5e-2, 1e-1)}  # (hidden, logits)
TOP_K = 5


class ExportValidationError(ValueError):
    """onnxruntime's outputs for the exported file are not PyTorch's (or it cannot run the file)."""


def tolerance(stage: str, output: str) -> float:
    """Max abs diff allowed for an output at a stage ("fp32", "optimized", "fp16")."""
    hidden, logits = TOLERANCES[stage]
    return hidden if output in HIDDEN_OUTPUTS else logits


def run_graph(proto: Any, stage: str, names: tuple[str, ...], inputs: list[dict[str, torch.Tensor]]) -> list[list[Any]]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return [session.run(list(names), {k: v.numpy() for k, v in x.items()}) for x in inputs]
    except Exception as e:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, NotImplemented)
        raise ExportValidationError(f"onnxruntime cannot run the {stage} export: {e}") from e


def compare(stage: str, names: tuple[str, ...], inputs: list[dict[str, torch.Tensor]],
             references: list[tuple[torch.Tensor, ...]], results: list[list[Any]]) -> dict[str, float]:
    """Max abs diff per output over all shapes; raises ExportValidationError (listing every diff) if one is
    over its tolerance or not finite."""
    worst = dict.fromkeys(names, 0.0)
    lines, failed = [], False
    for x, reference, result in zip(inputs, references, results):
        for name, expected, got in zip(names, reference, result):
            diff = (torch.from_numpy(got) - expected).abs().max().item()
            ok = diff <= tolerance(stage, name)  # False for NaN
            failed |= not ok
            worst[name] = max(worst[name], diff)
            lines.append(f"  {str(tuple(x['input_ids'].shape)):<10} {name:<24} max|diff| {diff:.2e} "
                         f"(tolerance {tolerance(stage, name):.0e}){'' if ok else '  <-- FAIL'}")
    if failed:
        raise ExportValidationError(f"the {stage} ONNX export does not match PyTorch:\n" + "\n".join(lines))
    return worst


def check_top_k(checked: list[int], inputs: list[dict[str, torch.Tensor]], references: list[tuple[torch.Tensor, ...]],
                 results: list[list[Any]]) -> dict[str, float] | None:
    """fp16 MLM logits (the outputs at indices ``checked``, each (B, S, vocab)): at every real token, the top-5
    tokens must be PyTorch's, in order, up to swaps of near-ties: the token float16 puts at rank i must have
    an fp32 logit within the fp16 logits tolerance of the fp32 rank-i logit. None without MLM logits."""
    if not checked:
        return None
    allowed = TOLERANCES["fp16"][1]
    positions = identical = 0
    max_gap = 0.0
    for x, reference, result in zip(inputs, references, results):
        real = x["attention_mask"].bool()
        for i in checked:
            expected = reference[i][real].topk(TOP_K)  # values and indices (positions, k)
            got = torch.from_numpy(result[i])[real].topk(TOP_K).indices
            gaps = (reference[i][real].gather(1, got) - expected.values).abs().amax(dim=1)  # (positions,)
            positions += len(gaps)
            identical += int((got == expected.indices).all(dim=1).sum())
            max_gap = max(max_gap, gaps.max().item())
            bad = (gaps > allowed).nonzero().flatten().tolist()
            if bad:
                raise ExportValidationError(
                    f"the fp16 export changes the top-{TOP_K} tokens beyond near-ties at {len(bad)} positions of shape "
                    f"{tuple(x['input_ids'].shape)}, e.g. PyTorch {expected.indices[bad[0]].tolist()} vs fp16 "
                    f"{got[bad[0]].tolist()} (fp32 logit gap {gaps[bad[0]].item():.2e} > {allowed:.0e})")
    return {"positions": positions, "identical": identical, "max_swap_gap": max_gap}
