"""CPU int8: ``bertfast.quantize(model, "int8")`` and ``from_pretrained(..., quantize="int8")``.

The encoder's linear layers (each layer's fused query/key/value, attention output, intermediate and output
projections) become ``Int8Linear``: int8 weights with one scale per output channel, quantized once here, and 8-bit
activations with one scale and zero point per token (row), measured on every call, products accumulated in int32
by torch's int8 GEMM (``torch.ops.quantized.linear_dynamic``) and the result returned in float32. Two measured
choices keep real models' answers (README "CPU modes"; the figures are on held-out real texts):

- **per token, not per call**: a whole batch's range set one scale before, so a short text beside long ones (or
  alone: "ok" is three tokens) lost most of its 256 levels. Each row is mapped onto [-1, 1] first (its midpoint and
  half-range kept), quantized, and the product mapped back: ``y = half * (W q) + mid * sum(W) + b``.
- **smoothing** (SmoothQuant): each input channel j is divided by ``s_j = a_j ** ALPHA / w_j ** (1 - ALPHA)`` (a_j:
  its largest magnitude on the calibration texts, w_j: the weight column's) and the weight column multiplied by it,
  which moves BERT's few outlier channels' range into the weights. ``calibrate`` measures a_j once, running the
  float32 model on ``bertfast/data/calibration.txt`` (real texts of mixed lengths, one- and two-word ones among
  them) through the model's tokenizer; without a tokenizer, on random token ids (said once; measured min cosine
  0.9928 instead of 0.9962 on all-MiniLM-L6-v2).
- **headroom** where the CPU lacks VNNI: its int8 GEMM adds pairs of u8 x s8 products in int16, which saturates
  once both are near full range (a real 2-layer SPLADE model lost 1 fill-mask answer in 6 that way). Without
  VNNI, weights take 7 bits (|q| <= 63, ``WEIGHT_LEVELS``) or activations 7 bits (``reduce_range``): the one closer
  to float32 on the calibration texts is kept, per model. With VNNI (or AMX) both take 8 bits.

The int8 engine is one torch ships for the CPU (``INT8_ENGINES``: ``x86`` picks fbgemm or oneDNN by its own rule,
``fbgemm``, ``onednn``): per layer shape, the faster of fbgemm and oneDNN measured on this machine and cached
(``engine_for``: oneDNN measured 5-18% faster on bert-base's larger shapes on the AVX512-VNNI EPYC);
``BERTFAST_INT8_ENGINE`` forces one. Embeddings, LayerNorm, softmax, the pooler and every head stay in float32,
so the model's inputs, outputs and padding-free execution are as in float32. Accuracy is measured, not assumed: see the
README's "CPU modes" (tests/cpu/test_int8.py holds the bars).
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast.cpu.gemm import ROWS, cached_choices, measured_choice
from bertfast.cpu.info import INT8_ENGINES, cpu_info, int8_engine
from bertfast.models.registry import architecture_of

MODES = ("int8",)
ALPHA = 0.5  # SmoothQuant's migration strength (measured: 0.3 and 0.7 no better on MiniLM, SPLADE)
CALIBRATION_TEXTS = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "data",
                                 "calibration.txt")
CALIBRATION_MAX_TOKENS = 256
WEIGHT_LEVELS = {8: 127, 7: 63}  # |q| of a weight at 8 and 7 bits (symmetric)
HEADROOM = ("weights", "activations")  # the 7-bit choice without VNNI (see the module docstring)


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


def quantized_weight(weight: torch.Tensor, smooth: torch.Tensor | None = None,
                     weight_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scales): a weight (out, in) times ``smooth`` per input channel, quantized symmetrically per output
    channel to ``weight_bits`` (q: float32 integers in [-levels, levels], scales (out,))."""
    weight = weight.detach().float()
    if smooth is not None:
        weight = weight * smooth
    levels = WEIGHT_LEVELS[weight_bits]
    scales = (weight.abs().amax(1) / levels).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.round(weight / scales[:, None]).clamp(-levels, levels), scales


class Int8Linear(nn.Module):
    """An nn.Linear in int8 (see the module docstring): input (..., in_features) float32 -> (..., out_features)
    float32. ``smooth``: the input channels' divisors (in_features,), or None; ``weight_bits`` 8 or 7;
    ``reduce_range``: 7-bit activations."""

    def __init__(self, linear: nn.Module, engine: str, smooth: torch.Tensor | None = None, weight_bits: int = 8,
                 reduce_range: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.engine = linear.in_features, linear.out_features, engine
        self.weight_bits, self.reduce_range = weight_bits, reduce_range
        q, scales = quantized_weight(linear.weight, smooth, weight_bits)
        self.register_buffer("inv_smooth", None if smooth is None else 1.0 / smooth, persistent=False)
        # y = half * (W q) + [mid, 1] @ [sum(W); b]: the row's midpoint times the dequantized weight's row sums, + bias
        bias = torch.zeros(self.out_features) if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("offsets", torch.stack([(q * scales[:, None]).sum(1), bias]), persistent=False)
        with _engine(engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notice that quantized tensors are deprecated (the packing stays)
            qweight = torch._make_per_channel_quantized_tensor(q.to(torch.int8), scales.double(),
                                                                torch.zeros_like(scales, dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(qweight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        smoothed = self.inv_smooth is not None
        if smoothed:
            rows = rows * self.inv_smooth
        high, low = rows.amax(1, keepdim=True), rows.amin(1, keepdim=True)  # (aminmax over dim 1 is 15x slower)
        mid = (high + low) * 0.5
        half = ((high - low) * 0.5).clamp_min_(torch.finfo(torch.float32).tiny)
        # each row onto [-1, 1] (in place where rows is already a copy): the GEMM's per-call scale is each row's own
        unit = (rows.sub_(mid) if smoothed else rows - mid).div_(half)
        y = torch.ops.quantized.linear_dynamic(unit, self._packed, self.reduce_range)
        sums, bias = self.offsets
        y = torch.addcmul(bias, y, half, out=y).addcmul_(mid, sums)  # two passes (addmm_ with k=2 measured 4x slower)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, "
                f"weight_bits={self.weight_bits}, activation_bits={7 if self.reduce_range else 8}, "
                f"smoothed={self.inv_smooth is not None}")


class _Recorder(nn.Module):
    """Stands in for a linear layer while calibrating: records each input channel's largest magnitude."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        self.linear, self.absmax = linear, torch.zeros(linear.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.maximum(self.absmax, x.detach().abs().reshape(-1, x.shape[-1]).amax(0), out=self.absmax)
        return self.linear(x)


def calibration_batches(tokenizer: Any, max_length: int, texts: Sequence[str] | None = None,
                        batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
    """``texts`` (default: the lines of CALIBRATION_TEXTS) tokenized by ``tokenizer`` into padded batches."""
    if texts is None:
        with open(CALIBRATION_TEXTS, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    if not texts:
        raise ValueError("calibration texts: none given (pass a list of strings, or None for bertfast's own)")
    return [dict(tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")) for i in range(0, len(texts), batch_size)]


def random_calibration_batches(config: Any, max_length: int, rows: int = 8) -> list[dict[str, torch.Tensor]]:
    """Calibration inputs without a tokenizer: ``rows`` random-id sequences (seeded) at each of a few lengths up to
    ``max_length``, one batch per length."""
    from bertfast.inputs import random_batch

    generator = torch.Generator().manual_seed(0)
    lengths = sorted({min(n, max_length) for n in (3, 8, 16, 32, 64, 128)})
    return [random_batch(config, [n] * rows, generator=generator) for n in lengths]


def _run(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The encoder's last hidden state of each batch's real tokens (T, H)."""
    encoder = model.base_model
    with torch.inference_mode():
        return [encoder(**batch).last_hidden_state[batch["attention_mask"].bool()] for batch in batches]


def calibration_length(config: Any) -> int:
    """The longest calibration input of a model: CALIBRATION_MAX_TOKENS, or less where the model takes less."""
    return min(CALIBRATION_MAX_TOKENS, config.max_sequence_length)


def calibrate(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor],
                                                                                 list[torch.Tensor]]:
    """(each linear layer's input channel magnitudes, name -> (in_features,); the encoder's float32 output of each
    batch's real tokens) from one float32 run of ``batches``."""
    slots = list(architecture_of(model.config).linear_layers(model.base_model))
    recorders = {}
    for slot in slots:
        recorders[slot.name] = _Recorder(slot.linear)
        slot.replace(recorders[slot.name])
    try:
        outputs = _run(model, batches)
    finally:
        for slot in slots:
            slot.replace(recorders[slot.name].linear)
    return {name: recorder.absmax for name, recorder in recorders.items()}, outputs


def smoothing(linear: nn.Module, absmax: torch.Tensor) -> torch.Tensor:
    """SmoothQuant's per-channel divisors of a linear layer's input (1 where a channel never moved)."""
    weight_max = linear.weight.detach().float().abs().amax(0).clamp_min(1e-5)
    smooth = absmax.clamp_min(1e-5) ** ALPHA / weight_max ** (1 - ALPHA)
    return torch.where(absmax > 0, smooth, torch.ones_like(smooth))


def _min_cosine(reference: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    return min(F.cosine_similarity(r, g, dim=-1).min().item() for r, g in zip(reference, got))


MEASURED_ENGINES = ("fbgemm", "onednn")  # the engines timed per shape ("x86" picks between these two by its own rule)


def engine_for(out_features: int, in_features: int) -> str:
    """The int8 engine of a (out_features, in_features) layer: ``BERTFAST_INT8_ENGINE`` when set, else the faster
    of MEASURED_ENGINES for this shape on this machine (measured once at 128 and 1024 rows, cached beside the
    float32 GEMM choices: bertfast.cpu.gemm)."""
    candidates = tuple(e for e in MEASURED_ENGINES if e in torch.backends.quantized.supported_engines)
    if os.environ.get("BERTFAST_INT8_ENGINE", "").strip() or len(candidates) < 2:
        return int8_engine()
    return _measured_engine(out_features, in_features, candidates)


@functools.lru_cache(maxsize=None)
def _measured_engine(out_features: int, in_features: int, candidates: tuple[str, ...]) -> str:
    return measured_choice(f"int8 {out_features}x{in_features}", candidates,
                           lambda: _measure_engines(out_features, in_features, candidates))


def engine_path() -> str:
    """The int8 engines bertfast uses here, in words (the bench header's)."""
    if os.environ.get("BERTFAST_INT8_ENGINE", "").strip():
        return f"{int8_engine()} (forced by BERTFAST_INT8_ENGINE)"
    choices = cached_choices("int8 ")
    return ("measured per weight shape: " + ", ".join(f"{shape} {engine}" for shape, engine in sorted(choices.items()))
            if choices else "measured per weight shape at the first int8 load")


@torch.inference_mode()
def _measure_engines(out_features: int, in_features: int, engines: tuple[str, ...]) -> dict[str, float]:
    """Seconds per call of an Int8Linear on each engine for this shape, summed over ROWS (after one untimed call)."""
    import time

    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(in_features, out_features)
    nn.init.normal_(linear.weight, std=0.02, generator=generator)
    times = dict.fromkeys(engines, 0.0)
    for rows in ROWS:
        x = torch.randn(rows, in_features, generator=generator)
        for engine in engines:
            layer = Int8Linear(linear, engine)
            layer(x)
            start = time.perf_counter()
            for _ in range(5):
                layer(x)
            times[engine] += (time.perf_counter() - start) / 5
    return times


def quantize(model: nn.Module, mode: str = "int8", engine: str | None = None, tokenizer: Any = None,
             texts: Sequence[str] | None = None, headroom: str | None = None) -> nn.Module:
    """Quantize a loaded bertfast model in place and return it (in eval mode); see the module docstring.

    ``engine``: one of ``INT8_ENGINES`` for every layer (default: ``engine_for`` each layer's shape). ``tokenizer`` (a tokenizer or
    its folder) and ``texts`` (default: bertfast's calibration texts) calibrate the smoothing; without a tokenizer,
    random token ids do. ``headroom``: "weights" / "activations" take 7 bits (default: none where the CPU has
    VNNI, else the one measured closer to float32 on the calibration texts). The model must be a float32 model on
    the CPU, not already quantized. A quantized model runs inference only: it cannot be trained or saved (save the
    float32 model and quantize at load, or ``export_onnx(..., quantize="int8")``).
    """
    encoder = getattr(model, "base_model", None)
    if encoder is None or not hasattr(model, "config"):
        raise TypeError(f"quantize takes a bertfast model (BertModel or a model with heads), got {type(model).__name__}")
    if getattr(model, "quantization", None) is not None:
        raise ValueError(f"the model is already quantized ({model.quantization}): quantize a float32 model once")
    check_quantize(mode, model.dtype, model.device)
    if engine is not None and engine not in INT8_ENGINES:
        raise ValueError(f"int8 engine {engine!r} is not one of {INT8_ENGINES}")
    if headroom is not None and headroom not in HEADROOM:
        raise ValueError(f"headroom={headroom!r}: use one of {HEADROOM}, or None to measure it")
    if isinstance(tokenizer, (str, os.PathLike)):
        from bertfast.auto_tokenizer import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    model.eval()
    max_length = calibration_length(model.config)
    if tokenizer is None:
        warnings.warn("int8 without a tokenizer: calibrated on random token ids, not on texts (pass tokenizer= to "
                      "bertfast.quantize, or load with from_pretrained(folder, quantize='int8') from a folder with "
                      "tokenizer files); measured a little less accurate on real models", stacklevel=2)
        batches = random_calibration_batches(model.config, max_length)
    else:
        batches = calibration_batches(tokenizer, max_length, texts)
    absmax, reference = calibrate(model, batches)
    slots = list(architecture_of(model.config).linear_layers(encoder))
    smooths = [smoothing(slot.linear, absmax[slot.name]) for slot in slots]

    engines = [engine or engine_for(slot.linear.out_features, slot.linear.in_features) for slot in slots]

    def build(choice: str | None) -> list[Int8Linear]:
        return [Int8Linear(slot.linear, layer_engine, smooth, weight_bits=7 if choice == "weights" else 8,
                           reduce_range=choice == "activations")
                for slot, smooth, layer_engine in zip(slots, smooths, engines)]

    def apply(layers: list[Int8Linear]) -> None:
        for slot, layer in zip(slots, layers):
            slot.replace(layer)

    if headroom is None and not cpu_info().vnni:  # measured per model: the 7-bit choice closer to float32
        originals = [slot.linear for slot in slots]
        built, scores = {}, {}
        for choice in HEADROOM:
            apply(built.setdefault(choice, build(choice)))
            scores[choice] = _min_cosine(reference, _run(model, batches))
            apply(originals)
        headroom = max(HEADROOM, key=lambda c: scores[c])
        apply(built[headroom])
    else:
        apply(build(headroom))
    model.quantization = encoder.quantization = mode
    model.quantization_engine = engines[0] if len(set(engines)) == 1 else "measured per shape"
    model.quantization_headroom = headroom
    return model
