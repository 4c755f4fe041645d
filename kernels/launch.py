"""The shared launch-settings helper and dtype lists of the kernels; public: bertfast/ and the tests use it too.
Here: the optional Triton import, block sizes and warp counts, the floating (``DTYPES``) and index
(``ID_DTYPES``) dtypes the kernels take, row views and input checks.

Every kernel file takes its block sizes and warp counts from here (``row_launch_settings``,
``attention_launch_settings``, ``reduction_programs``, ``gemm_autotune``) so that there is one place to
tune them. Memory-bound kernels take them from heuristics. The GEMM (kernels/linear.py), whose best tile
depends on the GPU and the shape, is autotuned with ``triton.autotune`` on CUDA only: benchmarking
several configs needs a GPU driver, and the Triton interpreter (how CI runs the kernels on CPU) has
none, so there it gets one config, which the autotuner launches without benchmarking.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

if importlib.util.find_spec("triton") is not None:
    import triton
    import triton.language as tl
else:  # Triton is optional: the torch references import and run without it
    triton = None
    tl = None

MAX_ROW_COLS = 16384  # widest row a row-fused kernel (layer_norm) keeps in registers
_ROW_TILE_ELEMENTS = 1024  # elements per program for row kernels: narrow rows get several rows per program
_ELEMENTWISE_MAX_COLS = 1024  # column tile of elementwise kernels (their rows may be split across programs)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the floating dtypes every kernel takes
ID_DTYPES = (torch.int64, torch.int32)  # the index dtypes of embedding lookups (F.embedding accepts these)


def triton_installed() -> bool:
    """True when the `triton` package was importable when bertfast_kernels loaded (it is optional)."""
    return triton is not None


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit(fn)``; without Triton, ``fn`` unchanged so the module imports (launchers refuse to run)."""
    return fn if triton is None else triton.jit(fn)


def check_launchable(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise a clear RuntimeError unless Triton can run ``op`` on these tensors."""
    if triton is None:
        raise RuntimeError(
            f"{op} needs Triton, which is not installed: `pip install triton`, "
            f"or call {op}_ref (the torch reference)"
        )
    present = [t for t in tensors if t is not None]
    devices = {t.device for t in present}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    if not interpreting() and not all(t.is_cuda for t in present):
        raise RuntimeError(
            f"{op} runs on CUDA tensors; set TRITON_INTERPRET=1 before importing bertfast_kernels (or bertfast) to run it on CPU"
        )


@dataclass(frozen=True)
class LaunchSettings:
    """Tile shape and launch options of one kernel launch."""

    block_rows: int  # rows (or queries) per program tile
    block_cols: int  # columns (or keys) per program tile
    num_warps: int
    num_stages: int = 1


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


def _num_warps(tile_elements: int, elements_per_warp: int) -> int:
    """Warps for a tile: one warp per ``elements_per_warp`` elements, a power of two in [1, 16]."""
    warps = max(1, min(16, tile_elements // elements_per_warp))
    return 1 << (warps.bit_length() - 1)


def row_launch_settings(n_cols: int, whole_row: bool) -> LaunchSettings:
    """Launch settings for kernels over the rows of an (M, n_cols) matrix.

    ``whole_row=True`` (reductions along the row, like layer_norm) keeps the whole row in one tile and
    raises beyond ``MAX_ROW_COLS``; otherwise (elementwise ops) rows are split into column tiles.
    Narrow rows are grouped several per program so each program touches about 1024 elements.
    """
    if n_cols < 1:
        raise ValueError(f"rows must have at least one element, got width {n_cols}")
    if whole_row and n_cols > MAX_ROW_COLS:
        raise ValueError(f"row width {n_cols} exceeds the {MAX_ROW_COLS} elements a row-fused kernel holds")
    block_cols = next_power_of_2(n_cols)
    if not whole_row:
        block_cols = min(block_cols, _ELEMENTWISE_MAX_COLS)
    block_rows = max(1, _ROW_TILE_ELEMENTS // block_cols)
    return LaunchSettings(block_rows, block_cols, _num_warps(block_rows * block_cols, 256))


def attention_launch_settings(block_d: int, max_seqlen: int, element_size: int) -> LaunchSettings:
    """Query/key tiles for flash attention with a padded head dim ``block_d`` (a power of two >= 16).

    128 queries (64 for fp32 inputs, whose tiles are twice the size) x 64 keys per step: the usual
    flash-attention tiles for D <= 128, shrunk to the sequence length for short sequences (at least
    16, the smallest ``tl.dot`` tile). One warp per 2048 elements of the query tile, at least four.
    """
    seq_block = max(16, next_power_of_2(max(1, max_seqlen)))
    block_m = min(128 if element_size <= 2 else 64, seq_block)
    block_n = min(64, seq_block)
    return LaunchSettings(block_m, block_n, max(4, _num_warps(block_m * block_d, 2048)), num_stages=2)


def reduction_programs(n_tiles: int, device: torch.device) -> int:
    """Programs for a kernel that loops over ``n_tiles`` row tiles and writes one partial sum each.

    Four per SM on GPU, eight in the interpreter, never more than there are tiles.
    """
    if device.type == "cuda":
        per_device = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        per_device = 8
    return max(1, min(n_tiles, per_device))


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (M, N) view with unit column stride, copying only when no such view exists."""
    rows = x.reshape(x.shape[:-1].numel(), x.shape[-1])  # (M, N); defined for N = 0 too
    return rows if rows.stride(-1) == 1 or rows.shape[-1] == 1 else rows.contiguous()


def check_vector(name: str, t: torch.Tensor | None, n: int) -> None:
    """Raise unless ``t`` is None or a (n,) vector."""
    if t is not None and tuple(t.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")


# GEMM tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) autotuned on CUDA, largest first. Large
# tiles with 8 warps (two Hopper warpgroups) and 3-4 stages of the async copy pipeline for thousands of
# rows; small tiles so that a few hundred rows still give enough programs to fill the SMs.
_GEMM_TILES = (
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (128, 128, 32, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (32, 64, 64, 4, 5),
)
_GEMM_GROUP_M = 8  # row tiles that sweep the column tiles together (L2 reuse of the weight columns)
# The interpreter's one config: tiles small enough that the test shapes span several tiles in every
# dimension and a partial group of row tiles.
_GEMM_INTERPRETER_TILE = (32, 32, 32, 4, 1)
_GEMM_INTERPRETER_GROUP_M = 2


def gemm_m_bucket(m: int) -> int:
    """Autotuning bucket of a GEMM's row count: the next power of two, clamped to [16, 8192].

    Padding-free batches have a new token count on nearly every call; tuning once per bucket instead
    of once per count keeps benchmarking off the serving path after warm-up.
    """
    return min(8192, max(16, next_power_of_2(max(1, m))))


def _gemm_configs() -> list[Any]:
    """The GEMM autotuning candidates on CUDA; one small config in the interpreter."""
    if interpreting():
        tiles, group_m = (_GEMM_INTERPRETER_TILE,), _GEMM_INTERPRETER_GROUP_M
    else:
        tiles, group_m = _GEMM_TILES, _GEMM_GROUP_M
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in tiles
    ]


def _prune_gemm_configs(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
    """Skip row tiles more than twice the bucket's rows (mostly padding); the smallest tile always stays."""
    rows = named_args["M_BUCKET"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(2 * rows, 32)]
    return kept or configs[-1:]


def gemm_autotune(fn: Any) -> Any:
    """``triton.autotune`` for a jit GEMM kernel taking M_BUCKET (``gemm_m_bucket(M)``), N and K, keyed on them.

    Apply it to the jit kernel (``gemm_autotune(kernel)``) and keep the plain kernel too: GPU compile
    checks lower it with explicit tiles. Without Triton, ``fn`` unchanged (launchers refuse to run).
    """
    if triton is None:
        return fn
    prune = {"early_config_prune": _prune_gemm_configs}
    return triton.autotune(configs=_gemm_configs(), key=["M_BUCKET", "N", "K"], prune_configs_by=prune)(fn)
