"""The key rules of BERT-shaped checkpoints, shared by the architectures built on BERT's blocks: the pure remap
of a checkpoint's keys onto a model's (``KeyRules``: the encoder's prefix, the heads beside it, the MLM decoder's
names, legacy LayerNorm names, buffers), and the join of a layer's query/key/value into one fused ``qkv`` at load
(``join_fused``) and its split back into the checkpoint's names on save (``split_fused``), for any names of those
three (BERT's query/key/value, DistilBERT's q_lin/k_lin/v_lin). Nothing here touches a module."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from bertfast.checkpoint import CheckpointError
from bertfast.models.registry import FUSED_ORIGIN

QKV = ("query", "key", "value")  # the checkpoint's row blocks of the fused attention.self.qkv, in order
# Keys that are buffers, not weights, in some transformers versions: never loaded, never reported.
BUFFER_SUFFIXES = (".position_ids", ".token_type_ids")
# Legacy LayerNorm parameter names (the original TensorFlow-converted checkpoints) and ours.
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


def join_fused(state: dict[str, torch.Tensor], origin: dict[str, str] | None = None, prefix: str = "",
               parts: tuple[str, ...] = QKV) -> None:
    """In place: every complete set of a checkpoint's query/key/value weights (or biases) under ``prefix`` -- the
    modules named ``parts``, BERT's query/key/value by default -- becomes the fused ``qkv`` key beside them, their
    rows concatenated in order; ``origin`` (when given) names the three for error messages. Three parts of
    different shapes are a damaged checkpoint, refused naming them."""
    first = parts[0]
    for key in [k for k in state if k.startswith(prefix) and k.split(".")[-2:] in ([first, "weight"], [first, "bias"])]:
        kind = key.rsplit(".", 1)[1]
        stem = key[: -len(f"{first}.{kind}")]  # the module path with its trailing dot ("" at the top)
        names = [f"{stem}{part}.{kind}" for part in parts]
        if not all(name in state for name in names):
            continue  # an incomplete set stays as it is: the key check names what is missing
        shapes = [tuple(state[name].shape) for name in names]
        if len(set(shapes)) != 1:
            where = [origin[name] if origin else name for name in names]
            raise CheckpointError(f"the checkpoint's {', '.join(where)} have different shapes {shapes}; a BERT "
                                  f"layer's query, key and value are the same size: is the file damaged?")
        fused = f"{stem}qkv.{kind}"
        state[fused] = torch.cat([state.pop(name) for name in names], dim=0)
        if origin is not None:
            origin[fused] = FUSED_ORIGIN.join(origin.pop(name) for name in names)


def split_fused(state: dict[str, torch.Tensor], prefix: str = "", parts: tuple[str, ...] = QKV) -> None:
    """In place, the inverse of ``join_fused`` for the keys under ``prefix``: each fused ``qkv`` back into
    transformers' ``parts`` (query/key/value; copies, so that each saves as a tensor of its own)."""
    for kind in ("weight", "bias"):
        if f"{prefix}qkv.{kind}" not in state:  # an int8 qkv (bertfast.cpu.int8) has packed params instead
            continue
        fused = state.pop(f"{prefix}qkv.{kind}")
        for name, part in zip(parts, fused.chunk(len(parts), dim=0)):
            state[f"{prefix}{name}.{kind}"] = part.clone()

@dataclass(frozen=True)
class KeyRules:
    """The key rules of a BERT-shaped checkpoint family: which prefix nests the encoder in the head models, which
    prefixes are heads beside it, and the MLM decoder's names. ``remap_state_dict`` applies them (pure)."""

    prefix: str  # "bert": the head models' encoder attribute, the checkpoint's key prefix
    head_prefixes: tuple[str, ...]  # never nested under the prefix
    decoder_weight: str  # the MLM decoder's weight (dropped when tied to the word embeddings)
    decoder_bias: str  # the decoder's bias, as some checkpoints name it ...
    mlm_bias: str  # ... and as the model holds it (which wins when both are present)
    fused_parts: tuple[str, ...] = QKV  # the checkpoint's names of the row blocks of each fused qkv
    word_embeddings: str = "embeddings.word_embeddings.weight"  # the token table a tied decoder shares (encoder key)

    def checkpoint_key(self, key: str, nested: bool = False) -> str:
        """One checkpoint key under our names: legacy LayerNorm names renamed, the prefix added (``nested``) or
        stripped (heads are never nested)."""
        for legacy, ours in LEGACY_SUFFIXES.items():
            if key.endswith(legacy):
                key = key[: -len(legacy)] + ours
        bare = key.removeprefix(self.prefix + ".")
        return bare if bare.startswith(self.head_prefixes) or not nested else f"{self.prefix}.{bare}"

    def remap_state_dict(self, state: dict[str, torch.Tensor], *, nested: bool,
                         tie_word_embeddings: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Map a checkpoint's keys onto those of a model that nests the encoder under the prefix (``nested``) or
        is the encoder itself.

        - the prefix (``bert.``) is added to encoder keys (embeddings, encoder, pooler) or stripped from them; head
          keys (``head_prefixes``) stay as they are. A pooler is carried like any encoder weight when the checkpoint
          has one.
        - legacy ``LayerNorm.gamma`` / ``LayerNorm.beta`` become ``weight`` / ``bias``.
        - buffers (``*.position_ids``, ``*.token_type_ids``) are dropped.
        - the decoder bias (``cls.predictions.decoder.bias``) becomes the MLM bias (``cls.predictions.bias``),
          which wins when both are present.
        - with ``tie_word_embeddings`` the decoder weight is dropped: the word embeddings are used, with a
          warning when the checkpoint's decoder differs from them.
        - each layer's ``query`` / ``key`` / ``value`` (``fused_parts``) are joined into the fused ``qkv``
          (``join_fused``).

        Returns the renamed state (the same tensors, no copies, but for the fused ``qkv``; ``state`` is not
        modified) and ``origin``, each new key's name in the checkpoint, for error messages.
        """
        out: dict[str, torch.Tensor] = {}
        origin: dict[str, str] = {}
        for original, tensor in state.items():
            key = self.checkpoint_key(original, nested)
            if key.endswith(BUFFER_SUFFIXES):
                continue
            out[key] = tensor
            origin[key] = original
        if self.decoder_bias in out:
            bias, source = out.pop(self.decoder_bias), origin.pop(self.decoder_bias)
            if self.mlm_bias not in out:
                out[self.mlm_bias], origin[self.mlm_bias] = bias, source
        if tie_word_embeddings and self.decoder_weight in out:
            tied = out.pop(self.decoder_weight)
            del origin[self.decoder_weight]
            embedding = out.get((f"{self.prefix}." if nested else "") + self.word_embeddings)
            if embedding is not None and (tied.shape != embedding.shape or not torch.equal(tied, embedding)):
                warnings.warn(f"the checkpoint's {self.decoder_weight} differs from the word embeddings but "
                              f"config.tie_word_embeddings is true: the word embeddings are used (as transformers "
                              f"does)")
        join_fused(out, origin, parts=self.fused_parts)
        return out, origin

