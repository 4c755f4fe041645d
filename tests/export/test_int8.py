"""export_onnx(..., quantize="int8"): onnxruntime's dynamic int8 graph, checked against PyTorch float32 by cosine."""
from __future__ import annotations

import onnx
import pytest
import torch

import bertfast
from bertfast.export.int8 import MIN_COSINE
from tests.helpers import TINY, exported, padded_batch


def test_int8_export_is_quantized_and_checked(tmp_path_factory, tiny_checkpoint):
    out, report = exported(tmp_path_factory, tiny_checkpoint, "fill-mask", quantize="int8")
    assert set(report.max_abs_diff) == {"fp32", "int8"}
    assert report.int8_cosine and all(c >= MIN_COSINE for c in report.int8_cosine.values())
    assert "cosine" in report.summary()
    ops = {node.op_type for node in onnx.load(report.path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops, ops
    batch = padded_batch(TINY["vocab_size"], [6, 3])
    expected = bertfast.BertForMaskedLM.from_pretrained(tiny_checkpoint)(**batch).logits
    got = bertfast.OnnxModel(out)(**batch).logits
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.detach().flatten(), dim=0) >= MIN_COSINE


@pytest.mark.parametrize("options, message", [(dict(quantize="int4"), "int8' only"),
                                              (dict(quantize="int8", fp16=True), "do not go together")])
def test_bad_quantize_options(tmp_path, tiny_checkpoint, options, message):
    with pytest.raises(ValueError, match=message):
        bertfast.export_onnx(tiny_checkpoint, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
