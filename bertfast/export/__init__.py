"""Serving formats: ONNX export (``export.onnx``), the onnxruntime runner (``export.onnx_model``) and Triton
Inference Server model repositories (``export.triton_repo``)."""
from bertfast.export.onnx import ExportReport, ExportValidationError, export_onnx
from bertfast.export.onnx_model import OnnxModel
from bertfast.export.triton_repo import write_triton_repository

__all__ = ["ExportReport", "ExportValidationError", "OnnxModel", "export_onnx", "write_triton_repository"]
