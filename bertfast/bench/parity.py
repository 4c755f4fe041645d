"""The parity check run before any provider is timed: its output against transformers fp32.

Compared: ``last_hidden_state`` at real-token positions only (bertfast's padding-free path leaves zeros
at padding positions by design; padded providers leave unused values there); with ``--task``, the head's output
(bertfast.bench.tasks), at real positions when it has a sequence axis, whole otherwise. A provider passes when:
- float32: max |out - ref| <= 1e-4 * max(1, max |ref|);
- float16 / bfloat16: max |out - ref| <= 2 x (transformers' own error in that dtype vs its fp32) + atol.
A provider with a precision of its own (``Provider.precision``, measured in the float32 run) has that precision's
rule instead: "bfloat16" the bf16 rule above; "int8" a cosine rule, every compared row (a real token's hidden
state, or a row of a head's output) at least ``INT8_MIN_COSINE`` from transformers fp32's. The min cosine and the
max abs error are reported for every provider.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bertfast.bench.tasks import BenchTask, bench_task

FEATURE_EXTRACTION = bench_task()  # the default: BertModel's last_hidden_state
FP32_RTOL = 1e-4
HALF_ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
INT8_MIN_COSINE = 0.99
PRECISIONS = {"bfloat16": torch.bfloat16, "int8": None}  # a provider's own precision -> its dtype (int8: none)


@dataclass
class Reference:
    """transformers' fp32 output of a workload at real positions, and its own error in the benchmark dtype."""

    real: torch.Tensor  # (T, H) float32 on CPU: last_hidden_state[attention_mask == 1]
    half_error: float | None  # max |transformers in dtype - transformers fp32| at real positions; None for fp32
    per_token: bool = True  # False: an output without a sequence axis (a --task head's), compared whole
    bf16_error: float | None = None  # transformers' own bf16 error, for bfloat16-precision providers in a fp32 run


@dataclass
class Verdict:
    ok: bool
    max_abs_error: float
    allowed: float | None  # the max abs error allowed; None under the int8 (cosine) rule
    min_cosine: float = float("nan")  # the smallest cosine of a compared row with transformers fp32's
    rule: str = "float32"  # the rule applied: "float32", "float16", "bfloat16" or "int8 (cosine)"

    def __str__(self) -> str:
        if self.max_abs_error == float("inf"):
            return f"non-finite values (NaN or inf) at real positions ({self.rule} rule)"
        relation = "<=" if self.ok else ">"
        if self.allowed is None:
            relation = ">=" if self.ok else "<"
            return (f"min cosine {self.min_cosine:.5f} {relation} {INT8_MIN_COSINE} ({self.rule} rule; max abs error "
                    f"{self.max_abs_error:.3g})")
        return f"max abs error {self.max_abs_error:.3g} {relation} allowed {self.allowed:.3g} ({self.rule} rule)"


def real_positions(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> (T, H) float32 on CPU, the rows of real tokens."""
    hidden = torch.as_tensor(last_hidden_state)
    return hidden[attention_mask.to(hidden.device) == 1].float().cpu()


def compared(output: torch.Tensor, attention_mask: torch.Tensor, per_token: bool = True) -> torch.Tensor:
    """What is compared of an output, float32 on CPU: its real-token rows, or all of it without a sequence axis."""
    return real_positions(output, attention_mask) if per_token else torch.as_tensor(output).float().cpu()


def max_abs_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max |out - ref|; NaN or inf anywhere gives inf, which no tolerance admits."""
    if out.shape != ref.shape:
        raise ValueError(f"output has {tuple(out.shape)} real-token rows, the reference {tuple(ref.shape)}")
    diff = (out.double() - ref.double()).abs()
    return float("inf") if not torch.isfinite(diff).all() else diff.max().item()


def allowed_error(reference: Reference, dtype: torch.dtype) -> float:
    if dtype == torch.float32:
        return FP32_RTOL * max(1.0, reference.real.abs().max().item())
    if dtype not in HALF_ATOL or reference.half_error is None:
        raise ValueError(f"no tolerance for {dtype} without transformers' own error in that dtype")
    return 2 * reference.half_error + HALF_ATOL[dtype]


def min_cosine(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The smallest cosine similarity between matching rows (last axis) of two outputs."""
    rows = out.double().reshape(-1, out.shape[-1]), ref.double().reshape(-1, ref.shape[-1])
    return torch.nn.functional.cosine_similarity(*rows, dim=-1).min().item()


def check(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, reference: Reference,
          dtype: torch.dtype, precision: str | None = None) -> Verdict:
    """Is a provider's (B, S, H) output within tolerance of the reference at real positions (or whole, for an
    output without a sequence axis)? ``precision``: the provider's own ("bfloat16", "int8"), whose rule applies."""
    out = compared(last_hidden_state, attention_mask, reference.per_token)
    error = max_abs_error(out, reference.real)
    cosine = min_cosine(out, reference.real) if out.numel() else float("nan")
    if precision is None:
        allowed = allowed_error(reference, dtype)
        return Verdict(error <= allowed, error, allowed, cosine, dtype_rule(dtype))
    if precision not in PRECISIONS:
        raise ValueError(f"no rule for precision {precision!r}; known: {sorted(PRECISIONS)}")
    if precision == "int8":
        return Verdict(cosine >= INT8_MIN_COSINE and error < float("inf"), error, None, cosine, "int8 (cosine)")
    allowed = allowed_error(Reference(reference.real, reference.bf16_error), torch.bfloat16)
    return Verdict(error <= allowed, error, allowed, cosine, "bfloat16")


def dtype_rule(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_transformers(model_dir: str, dtype: torch.dtype, device: torch.device, attention: str = "eager",
                      task: BenchTask = FEATURE_EXTRACTION):
    """transformers' model of ``task`` (BertModel by default) from a local checkpoint directory, quietly (no
    progress bar, no warnings about the checkpoint's head weights, which BertModel does not use)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model_class = getattr(transformers, "AutoModel" + task.model_class.role.removeprefix("Model"))  # by model_type
    model = model_class.from_pretrained(model_dir, attn_implementation=attention, local_files_only=True)
    return model.to(device=device, dtype=dtype).eval()  # (the dtype argument of from_pretrained varies by version)


@torch.inference_mode()
def fp32_outputs(model_dir: str, batches: list[dict[str, torch.Tensor]], device: torch.device,
                 task: BenchTask = FEATURE_EXTRACTION) -> list[torch.Tensor]:
    """transformers eager fp32 on ``device``, one (T, H) real-position output per batch (the task's compared
    output): every dtype's reference."""
    fp32 = load_transformers(model_dir, torch.float32, device, task=task)
    return [compared(task.select(fp32(**b)), b["attention_mask"], task.per_token) for b in batches]


@torch.inference_mode()
def references(model_dir: str, batches: list[dict[str, torch.Tensor]], fp32: list[torch.Tensor], dtype: torch.dtype,
               device: torch.device, task: BenchTask = FEATURE_EXTRACTION) -> list[Reference]:
    """One Reference per batch from its ``fp32_outputs``; for half dtypes, transformers is run in ``dtype`` too."""
    if dtype == torch.float32:
        return [Reference(real, None, task.per_token) for real in fp32]
    half = load_transformers(model_dir, dtype, device, task=task)
    return [Reference(real, max_abs_error(compared(task.select(half(**b)), b["attention_mask"], task.per_token),
                                          real), task.per_token)
            for real, b in zip(fp32, batches)]
