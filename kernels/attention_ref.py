"""Torch references of ``bertfast_kernels.attention`` (padded and varlen, with key padding and a sliding window) and
the window's checks that the kernels and the references share.

The padding and window semantics are the kernel module's (see its docstring): a padded key gets zero weight where
its row has a real key, masked scores get the dtype's finite minimum once (a row with no allowed key averages its
values, never NaN), and ``window=(left, right)`` keeps keys ``i - left <= j <= i + right``. The windowed varlen
reference runs in memory linear in the tokens (blocks of ``REF_CHUNK`` queries against their key slices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_window(op: str, window: tuple[int, int] | None) -> None:
    """Raise unless ``window`` is None or a (left, right) pair of non-negative ints."""
    if window is None:
        return
    if (not isinstance(window, (tuple, list)) or len(window) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in window)):
        raise ValueError(f"bertfast_kernels.{op}: window must be None or (left, right) ints >= 0, got {window!r}")


def effective_window(
    window: tuple[int, int] | None, seqlen_q: int, seqlen_k: int
) -> tuple[int, int] | None:
    """The band clipped to the sequences, or None where it covers every (query, key) pair.

    Query i attends key j when ``i - left <= j <= i + right``; with i < seqlen_q and j < seqlen_k, a left
    of seqlen_q - 1 or more bounds nothing, nor does a right of seqlen_k - 1 or more. Clipping keeps the
    kernel's int32 block arithmetic and the reference's key slices within the sequences.
    """
    if window is None:
        return None
    left, right = min(window[0], max(seqlen_q - 1, 0)), min(window[1], max(seqlen_k - 1, 0))
    if left >= seqlen_q - 1 and right >= seqlen_k - 1:
        return None
    return left, right


def _tracing() -> bool:
    """True while torch.onnx / torch.export / TorchScript trace the reference."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def _band(seqlen_q: int, seqlen_k: int, window: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(S_q, S_k) bool: True where query i may attend key j, ``i - left <= j <= i + right``."""
    offset = torch.arange(seqlen_k, device=device)[None, :] - torch.arange(seqlen_q, device=device)[:, None]
    return (offset >= -window[0]) & (offset <= window[1])  # (S_q, S_k)


def _additive_mask(
    key_padding_mask: torch.Tensor | None,
    window: tuple[int, int] | None,
    seqlen_q: int,
    seqlen_k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """The additive bias of the padding mask and the band: 0 where a query may attend a key, dtype's min elsewhere.

    key_padding_mask: (B, S_k) bool, True = real token. Returns (B, 1, 1, S_k) for padding alone,
    (1 or B, 1, S_q, S_k) with a window, or None for neither. Both masks are combined as booleans
    before the one fill, so a masked score gets the finite minimum once (never -inf): a row with no
    allowed key averages every value uniformly instead of producing NaN, as transformers' masks do.
    """
    if key_padding_mask is None and window is None:
        return None
    allowed = torch.ones(1, 1, 1, seqlen_k, dtype=torch.bool, device=device)  # (1, 1, 1, S_k)
    if key_padding_mask is not None:
        allowed = key_padding_mask[:, None, None, :]  # (B, 1, 1, S_k)
    if window is not None:
        allowed = allowed & _band(seqlen_q, seqlen_k, window, device)  # (1 or B, 1, S_q, S_k)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    window: tuple[int, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Torch reference attention.

    q: (B, H, S_q, D), k/v: (B, H, S_k, D); key_padding_mask: (B, S_k) bool, True = real token;
    window: (left, right) or None, query i attending key j only if ``i - left <= j <= i + right``
    (padded row indices; ModernBERT's local layers use (64, 64)). Returns the output (B, H, S_q, D),
    and with ``need_weights=True`` also the probabilities (B, H, S_q, S_k) computed eagerly (scores,
    additive mask, softmax, dropout) exactly as transformers' eager attention does with its padding
    and sliding-window masks. The band is a dense (S_q, S_k) mask here: the padded fallback path.
    """
    check_window("attention_ref", window)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    seqlen_q, seqlen_k = q.shape[-2], k.shape[-2]
    if not _tracing():  # a traced graph keeps the band whatever the example's length (its shapes are symbolic)
        window = effective_window(window, seqlen_q, seqlen_k)
    mask = _additive_mask(key_padding_mask, window, seqlen_q, seqlen_k, q.dtype, q.device)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, S_q, S_k)
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v), probs


REF_CHUNK = 128  # query rows per block of the windowed varlen reference


def _windowed_varlen_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_ids: torch.Tensor, scale: float | None,
    window: tuple[int, int],
) -> torch.Tensor:
    """Banded attention over packed sequences in memory linear in T: q/k/v (T, H, D), seq_ids (T,) -> (T, H, D).

    The T rows are cut into n blocks of C = min(REF_CHUNK, T) queries; block c's keys are the slice
    [c C - left, (c + 1) C + right) of the packed keys (zero-padded at both ends), unfolded into one
    (n, H, C + left + right, D) view. A (n, C, C + left + right) bool mask keeps the band and the
    query's own sequence (within a sequence, the band on packed rows is the band on sequence indices).
    Padding rows share the id -1 with the padding keys, so each of them has at least itself to attend
    (no NaN in the dropped rows, in the forward or the backward). One SDPA call over all blocks.
    """
    left, right = window
    total, heads, head_dim = q.shape
    chunk = min(REF_CHUNK, total)
    blocks = -(-total // chunk)
    span = chunk + left + right
    tail = blocks * chunk - total  # padding query rows of the last block
    pad_keys = (0, 0, 0, 0, left, tail + right)  # F.pad spec for (T, H, D) along T

    def key_blocks(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, pad_keys).unfold(0, span, chunk).permute(0, 1, 3, 2)  # (n, H, span, D)

    queries = F.pad(q, (0, 0, 0, 0, 0, tail)).view(blocks, chunk, heads, head_dim).transpose(1, 2)  # (n, H, C, D)
    query_ids = F.pad(seq_ids, (0, tail), value=-1).view(blocks, chunk)  # (n, C)
    key_ids = F.pad(seq_ids, (left, tail + right), value=-1).unfold(0, span, chunk)  # (n, span)
    band = _band(chunk, span, (0, left + right), q.device)  # (C, span): key row c C - left + j, query row c C + i
    mask = band & (query_ids[:, :, None] == key_ids[:, None, :])  # (n, C, span)
    out = F.scaled_dot_product_attention(queries, key_blocks(k), key_blocks(v), attn_mask=mask[:, None], scale=scale)
    return out.transpose(1, 2).reshape(blocks * chunk, heads, head_dim)[:total]  # (T, H, D)


def varlen_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: float | None = None,
    window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Torch reference for ``varlen_attention``; q, k, v: (T, H, D); cu_seqlens: (B + 1,) cumulative lengths.

    Without a window: ``attention_ref`` on each packed sequence in turn. With window (left, right),
    query i of a sequence attends its key j only if ``i - left <= j <= i + right``, computed in
    blocks of ``REF_CHUNK`` queries against their key slices (``_windowed_varlen_ref``): memory linear
    in T, no (L, L) scores; a window that covers every sequence is no window. Returns (T, H, D).
    """
    check_window("varlen_attention_ref", window)
    bounds = cu_seqlens.tolist()
    lengths = [end - begin for begin, end in zip(bounds[:-1], bounds[1:])]
    longest = max(lengths, default=0)
    window = effective_window(window, longest, longest)
    if window is not None:
        seq_ids = torch.repeat_interleave(
            torch.arange(len(lengths), device=q.device), torch.tensor(lengths, device=q.device), output_size=q.shape[0]
        )  # (T,) the sequence of each packed row
        return _windowed_varlen_ref(q, k, v, seq_ids, scale, window)
    outputs = [q[:0]]  # (0, H, D): keeps torch.cat defined when there are no tokens
    for begin, end in zip(bounds[:-1], bounds[1:]):
        if end > begin:
            seq = [t[begin:end].transpose(0, 1)[None] for t in (q, k, v)]  # (1, H, L, D) each
            outputs.append(attention_ref(*seq, scale=scale)[0].transpose(0, 1))  # (L, H, D)
    return torch.cat(outputs)  # (T, H, D)
