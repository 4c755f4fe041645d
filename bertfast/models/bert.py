"""BERT, the first entry of the architecture slot: its encoder, written from scratch with transformers' module and
attribute names, its pure ``remap_state_dict`` (its ``KeyRules``, bertfast.models.keys), its head prefixes and its
linear layers (``ARCHITECTURE``).

Module names follow transformers so that ``state_dict()`` keys line up with HuggingFace checkpoints.
The one structural difference: each layer's query/key/value projections are stored fused as
``attention.self.qkv`` (one (3H, H) matmul per layer). ``remap_state_dict`` joins a checkpoint's three into it
at load (``join_fused``); a state-dict hook splits it back on save (``split_fused``), so that saved files are
transformers' own. The config's fields and their checks are ``bertfast.config.BertConfig``.

Other architectures compose these blocks: ``BertSelfAttention`` takes the names of the checkpoint's row blocks
(DistilBERT's q_lin / k_lin / v_lin), ``BertEmbeddings`` a width (ELECTRA's embedding_size), ``BertEncoder`` a
layer class, and ``BertModel`` its embeddings class, layer class, the attribute of its layer stack and the step
from the embeddings to the first layer (``_embed``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator

import torch
import torch.nn as nn

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.inputs import check_inputs, check_packed, inputs_trusted
from bertfast.models.keys import QKV, KeyRules, join_fused, split_fused
from bertfast.models.registry import Architecture, LinearSlot, register
from bertfast.outputs import BaseModelOutputWithPooling
from bertfast.padding import PackedBatch, Packing, pad, packing_of, unpad
from bertfast.pretrained import BertPreTrainedModel

FUSED_LINEARS = {"attention.self.qkv": QKV}
# Heads beside the encoder (pretraining under cls., the task heads): never nested under bert.
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")
DECODER_WEIGHT = "cls.predictions.decoder.weight"
DECODER_BIAS = "cls.predictions.decoder.bias"
MLM_BIAS = "cls.predictions.bias"


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig, width: int | None = None):
        """``width``: the tables' width E, hidden_size by default (ELECTRA's embedding_size)."""
        super().__init__()
        width = config.hidden_size if width is None else width
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def token_type_table(self) -> torch.Tensor:
        """The segment table (type_vocab_size, E) the fused op adds from."""
        return self.token_type_embeddings.weight

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, S) -> (B, S, E): the three lookups, their sum and the LayerNorm in one fused op."""
        embeddings = ops.embeddings(input_ids, word_weight=self.word_embeddings.weight,
                                    position_weight=self.position_embeddings.weight,
                                    token_type_weight=self.token_type_table(),
                                    ln_weight=self.LayerNorm.weight, ln_bias=self.LayerNorm.bias,
                                    eps=self.LayerNorm.eps, token_type_ids=token_type_ids, position_ids=position_ids,
                                    padding_idx=self.word_embeddings.padding_idx)
        return self.dropout(embeddings)



def _split_qkv(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: the fused ``qkv`` parameter is saved as transformers' query/key/value."""
    split_fused(state_dict, prefix, module.parts)


def _fuse_qkv(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook, for a state dict in transformers' names given to ``load_state_dict`` directly
    (``from_pretrained``'s remap has joined them already)."""
    join_fused(state_dict, prefix=prefix, parts=module.parts)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig, parts: tuple[str, ...] = QKV):
        """``parts``: the checkpoint's names of the fused qkv's row blocks (saved under them)."""
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_dim
        self.parts = parts
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # rows: query, key, value
        self.dropout_p = config.attention_probs_dropout_prob
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_fuse_qkv)

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded: hidden (B, S, H) with key_padding_mask (B, S) bool (True = real; None = no padding).
        Packed: hidden (T, H), the real tokens of B sequences, with cu_seqlens (B + 1,) int32 and max_seqlen.
        -> context of hidden's shape and, with output_attentions (padded only), probabilities (B, heads, S, S)."""
        width = hidden.shape[-1]
        qkv = self.qkv(hidden)  # (..., 3H); an nn.Linear or its CPU replacement (bertfast.cpu)
        if cu_seqlens is not None:
            if output_attentions or max_seqlen is None:
                raise ValueError("packed attention takes max_seqlen with cu_seqlens and returns no probabilities")
            qkv = qkv.view(-1, 3, self.num_attention_heads, self.attention_head_size)  # (T, 3, h, D)
            context = ops.varlen_attention(qkv, cu_seqlens, max_seqlen)  # (T, h, D)
            return context.reshape(-1, width), None  # (T, H)
        batch, seq_len = hidden.shape[:2]
        qkv = qkv.view(batch, seq_len, 3, self.num_attention_heads, self.attention_head_size)  # (B, S, 3, h, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, S, D), views without copies
        dropout_p = self.dropout_p if self.training else 0.0
        context, probs = ops.attention(q, k, v, key_padding_mask, dropout_p=dropout_p, need_weights=output_attentions)
        return context.transpose(1, 2).reshape(batch, seq_len, width), probs  # (B, S, H)


class BertResidualOutput(nn.Module):
    """LayerNorm(dropout(dense(x)) + residual): both ``attention.output`` and ``output`` of a layer."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return ops.linear_residual_layer_norm(hidden, self.dense, residual, self.LayerNorm.weight,
                                              self.LayerNorm.bias, self.LayerNorm.eps, self.dropout.p, self.training)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layouts as BertSelfAttention: padded (B, S, H) + key_padding_mask, or packed (T, H) + cu_seqlens."""
        context, probs = self.self(hidden, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
        return self.output(context, hidden), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.approximate = config.gelu_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return ops.linear_gelu(hidden, self.dense, self.approximate)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layouts as BertSelfAttention: padded (B, S, H) + key_padding_mask, or packed (T, H) + cu_seqlens."""
        attended, probs = self.attention(hidden, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
        return self.output(self.intermediate(attended), attended), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig, layer_class: type[nn.Module] = BertLayer):
        """``layer_class``: the layer (BertLayer's forward signature and outputs)."""
        super().__init__()
        self.layer = nn.ModuleList(layer_class(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_hidden_states: bool = False,
                output_attentions: bool = False) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """Layouts as BertSelfAttention: padded (B, S, H) + key_padding_mask, or packed (T, H) + cu_seqlens."""
        all_hidden = [hidden] if output_hidden_states else None
        all_probs = [] if output_attentions else None
        for layer in self.layer:
            hidden, probs = layer(hidden, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_probs is not None:
                all_probs.append(probs)
        return (hidden, None if all_hidden is None else tuple(all_hidden),
                None if all_probs is None else tuple(all_probs))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from the [CLS] position


class BertModel(BertPreTrainedModel):
    """The encoder. Hidden states at padding positions (attention_mask 0) are returned as zeros, on every
    path (transformers leaves unused values there; real positions are the same). ``padding_free``
    (default True): a batch with padding runs every layer on its real tokens only (packed, with varlen
    attention) and is padded back at the end; False computes the padded batch everywhere."""
    role = "Model"

    padding_free: bool = True
    base_model_prefix = ""
    # the blocks another architecture swaps in: its embeddings, its layer, the attribute of its layer stack
    embeddings_class: ClassVar[type[nn.Module]] = BertEmbeddings
    layer_class: ClassVar[type[nn.Module]] = BertLayer
    stack_attribute: ClassVar[str] = "encoder"
    has_pooler: ClassVar[bool] = True  # False: the architecture has none (its heads read the first token)

    def __init__(self, config: BertConfig, add_pooling_layer: bool | None = None):
        """``add_pooling_layer``: None = the architecture's default (a pooler where it has one)."""
        if add_pooling_layer and not self.has_pooler:
            raise ValueError(f"{type(self).__name__}: {config.model_type} has no pooler (its heads read the first "
                             f"token): pass add_pooling_layer=False")
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        setattr(self, self.stack_attribute, BertEncoder(config, self.layer_class))
        self.pooler = BertPooler(config) if self.has_pooler and add_pooling_layer is not False else None
        self.init_weights()

    @property
    def stack(self) -> BertEncoder:
        """The layer stack (``encoder`` as transformers names BERT's; DistilBERT's is ``transformer``)."""
        return getattr(self, self.stack_attribute)

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               position_ids: torch.Tensor | None) -> torch.Tensor:
        """ids (B, S) -> the first layer's input (B, S, H): the embeddings (ELECTRA projects them after)."""
        return self.embeddings(input_ids, token_type_ids, position_ids)

    @classmethod
    def _build(cls, config: BertConfig, state: dict[str, torch.Tensor]) -> "BertModel":
        """The pooler exists when the checkpoint has one (all-MiniLM-L6-v2 does; some exports do not)."""
        return cls(config, add_pooling_layer=any(k.endswith("pooler.dense.weight") for k in state))

    def _packs(self, key_padding_mask: torch.Tensor | None, output_attentions: bool, padding_states: bool) -> bool:
        """Whether a padded batch runs padding-free: not without padding, with attention maps asked for, with the
        padding positions' states kept, with attention dropout in training, or with input validation skipped."""
        return not (key_padding_mask is None or not self.padding_free or output_attentions or padding_states
                    or inputs_trusted() or (self.training and self.config.attention_probs_dropout_prob > 0))

    def forward(self, input_ids: torch.Tensor | PackedBatch | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                return_packed: bool = False, padding_states: bool = False,
                packed: PackedBatch | None = None) -> BaseModelOutputWithPooling:
        """input_ids (B, S) -> last_hidden_state (B, S, H), pooler_output (B, H); or a ``PackedBatch`` (as the
        first argument or ``packed=``), the native input -> last_hidden_state (T, H) with its ``cu_seqlens`` and
        ``max_seqlen``, pooler_output (B, H) from each sequence's first token, hidden_states packed.

        A padded batch is an adapter in front of the packed path (``PackedBatch.from_padded``, then padded back).
        ``output_attentions=True`` runs the reference (eager) attention on the padded batch, which materialises
        the probabilities; the fused kernels never do. ``return_packed=True`` hands a padded batch's result back
        packed: last_hidden_state and each of hidden_states (T, H), the T real tokens in row-major order of the
        batch, with ``cu_seqlens`` (B + 1,) int32 and ``max_seqlen``; the pooler output and attention maps are as
        without it. ``padding_states=True`` runs the padded path and keeps the hidden states at padding positions
        as transformers computes them (instead of zeros), for a loss whose softmax covers the padding (question
        answering's, as transformers defines it).
        """
        if isinstance(input_ids, PackedBatch):
            if packed is not None:
                raise ValueError("pass the PackedBatch once: as the first argument or as packed=, not both")
            input_ids, packed = None, input_ids
        if packed is not None:
            if input_ids is not None or attention_mask is not None or token_type_ids is not None or \
                    position_ids is not None or output_attentions or padding_states:
                raise ValueError("a PackedBatch carries the whole input and has no padding: pass it alone, without "
                                 "input_ids/attention_mask/token_type_ids/position_ids, output_attentions or "
                                 "padding_states (those need a padded (B, S) batch)")
            check_packed(self.config, self.device, packed)
            return self._forward_packed(packed, output_hidden_states)
        if input_ids is None:
            raise ValueError("BertModel needs input_ids (B, S) or a PackedBatch")
        position_ids = self._own_positions(position_ids)
        if not self.config.token_types:  # an architecture without segments ignores them (DistilBERT)
            token_type_ids = None
        if padding_states and return_packed:
            raise ValueError("padding_states=True keeps the padding positions; return_packed=True drops them: pick one")
        key_padding_mask = check_inputs(self.config, self.device, input_ids, attention_mask, token_type_ids,
                                        position_ids)
        if self._packs(key_padding_mask, output_attentions, padding_states):
            batch, packing = PackedBatch.from_padded(input_ids, key_padding_mask, token_type_ids, position_ids)
            if packing.starts_real:  # left padding: the pooler reads a padding position, so the padded path runs
                out = self._forward_packed(batch, output_hidden_states)
                return out if return_packed else _padded_output(out, packing)
        hidden = self._embed(input_ids, token_type_ids, position_ids)  # (B, S, H)
        last, all_hidden, all_probs = self._run_stack(hidden, key_padding_mask, None, None, position_ids,
                                                      output_hidden_states, output_attentions)
        pooled = None if self.pooler is None else self.pooler(last)  # position 0, padding or not, as transformers
        if return_packed:
            mask = key_padding_mask if key_padding_mask is not None else last.new_ones(last.shape[:2], dtype=torch.bool)
            packing = packing_of(mask)
            return BaseModelOutputWithPooling(unpad(last, packing), pooled, _each(all_hidden, unpad, packing),
                                              all_probs, packing.cu_seqlens, packing.max_seqlen)
        mask = None if padding_states else key_padding_mask
        return BaseModelOutputWithPooling(_zero_padding(last, mask), pooled,
                                          None if all_hidden is None else tuple(_zero_padding(h, mask)
                                                                                for h in all_hidden), all_probs)

    def _run_stack(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None,
                   cu_seqlens: torch.Tensor | None, max_seqlen: int | None, position_ids: torch.Tensor | None,
                   output_hidden_states: bool, output_attentions: bool
                   ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """The layer stack on the first layer's input, padded (B, S, H) + key_padding_mask or packed (T, H) +
        cu_seqlens, -> (last hidden state, every hidden state or None, attention maps or None). BERT's layers take
        no positions (the embeddings added them); an architecture whose layers do (ModernBERT's rotary) overrides
        this."""
        return self.stack(hidden, key_padding_mask, cu_seqlens, max_seqlen, output_hidden_states, output_attentions)

    def _own_positions(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        """A padded batch's position_ids as the caller gives them (transformers': rows of the position table) ->
        bertfast's (each sequence's positions from 0, as a PackedBatch holds them); the same for BERT."""
        return position_ids

    def _forward_packed(self, packed: PackedBatch, output_hidden_states: bool) -> BaseModelOutputWithPooling:
        """The padding-free path: packed (T,) ids -> last_hidden_state (T, H), pooler_output (B, H)."""
        hidden = self._embed(packed.input_ids[None], packed.token_type_ids[None],
                             packed.position_ids[None])[0]  # (T, H): the lookups run on a (1, T) view
        last, all_hidden, _ = self._run_stack(hidden, None, packed.cu_seqlens, packed.max_seqlen, packed.position_ids,
                                              output_hidden_states, False)
        pooled = None
        if self.pooler is not None:  # each sequence's first token, as a (B, 1, H) batch for the pooler
            pooled = self.pooler(last.index_select(0, packed.cu_seqlens[:-1].long())[:, None])
        return BaseModelOutputWithPooling(last, pooled, all_hidden, None, packed.cu_seqlens, packed.max_seqlen)


def _each(states: tuple[torch.Tensor, ...] | None, fn: Any, packing: Packing) -> tuple[torch.Tensor, ...] | None:
    return None if states is None else tuple(fn(h, packing) for h in states)


def _padded_output(out: BaseModelOutputWithPooling, packing: Packing) -> BaseModelOutputWithPooling:
    """A packed result (T, H) padded back to the (B, S, H) batch it came from, zeros at padding."""
    return BaseModelOutputWithPooling(pad(out.last_hidden_state, packing), out.pooler_output,
                                      _each(out.hidden_states, pad, packing), None)


def _zero_padding(hidden: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Hidden states (B, S, H) with zeros at padding (key_padding_mask False); None = no padding."""
    return hidden if key_padding_mask is None else hidden.masked_fill(~key_padding_mask[..., None], 0)



KEY_RULES = KeyRules("bert", HEAD_PREFIXES, DECODER_WEIGHT, DECODER_BIAS, MLM_BIAS)
remap_state_dict = KEY_RULES.remap_state_dict


def linear_layers(encoder: nn.Module) -> Iterator[LinearSlot]:
    """A BertModel's linear layers in forward order, per layer: the fused qkv, attention.output.dense,
    intermediate.dense, output.dense (the pooler is not among them: it runs once per sequence)."""
    for i, layer in enumerate(encoder.encoder.layer):
        where = f"encoder.layer.{i}."
        yield LinearSlot(layer.attention.self, "qkv", where + "attention.self.qkv")
        for name, part in (("attention.output", layer.attention.output), ("intermediate", layer.intermediate),
                           ("output", layer.output)):
            yield LinearSlot(part, "dense", f"{where}{name}.dense")


ARCHITECTURE = register(Architecture(
    model_type="bert", config_class=BertConfig, encoder_class=BertModel, remap_state_dict=remap_state_dict,
    head_prefixes=HEAD_PREFIXES, checkpoint_key=KEY_RULES.checkpoint_key,
    linear_layers=linear_layers, fused_linears=FUSED_LINEARS,
    lora_targets="query, key, value, dense (attention.output.dense, intermediate.dense, output.dense)"))
