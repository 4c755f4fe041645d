"""Serving formats: ONNX export (``export.onnx``) and the onnxruntime runner (``export.onnx_model``). Triton
Inference Server model repositories are written by the serving package (``bertfast.serving.repository``)."""
from bertfast.export.onnx import ExportReport, ExportValidationError, export_onnx
from bertfast.export.onnx_model import OnnxModel

__all__ = ["ExportReport", "ExportValidationError", "OnnxModel", "export_onnx"]
