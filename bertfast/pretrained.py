"""BertPreTrainedModel: what every bertfast model class shares — initialisation as transformers does it,
loading (checkpoint tensors checked against the model's keys and shapes, then assigned on the meta device),
``from_hf``, ``save_pretrained``. Name resolution is bertfast.hub's, file reading and key renaming
bertfast.checkpoint's; the assignment lives here, in the model."""
from __future__ import annotations

import logging
import os
import warnings
from typing import ClassVar

import torch
import torch.nn as nn

from bertfast.adapters import merge_adapter
from bertfast.atomic import staged_files
from bertfast.checkpoint import CheckpointError, check_weight_values, read_state_dict
from bertfast.config import BertConfig, resolve_dtype
from bertfast import cpu
from bertfast.hub import resolve_file
from bertfast.device import resolve_device
from bertfast.models.registry import FUSED_ORIGIN, Architecture, architecture_of, get_architecture, read_config


class BertPreTrainedModel(nn.Module):
    """Loading, saving, conversion and initialisation shared by every bertfast model class."""

    # The attribute holding the encoder ("bert" in models with heads, as in transformers), or "" for the
    # encoder itself: whether this model's state-dict keys nest the encoder under "bert.".
    base_model_prefix: str
    # what the model is for, the same across architectures: transformers' Auto-class suffix ("Model",
    # "ForMaskedLM", "ForSequenceClassification", ...), the key of Architecture.model_classes
    role: ClassVar[str]
    # The task head a model class builds newly when from_pretrained is given num_labels / id2label and the
    # checkpoint lacks it (a base model about to be fine-tuned); none for the encoder and the pretraining heads.
    new_head_prefixes: tuple[str, ...] = ()

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """Random initialisation as transformers does it (normal(0, initializer_range), LayerNorm 1/0)."""
        self.apply(self._init_module)

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                if module.bias is not None:  # ModernBERT's LayerNorms have none (norm_bias false)
                    module.bias.zero_()
            elif isinstance(getattr(module, "bias", None), nn.Parameter):
                module.bias.zero_()  # the MLM head's output bias

    @classmethod
    def _build(cls, config: BertConfig, state: dict[str, torch.Tensor]) -> "BertPreTrainedModel":
        return cls(config)

    @classmethod
    def _class_for(cls, architecture: Architecture) -> type["BertPreTrainedModel"]:
        """The class that loads a checkpoint of ``architecture``: the architecture's class of this class's ``role``
        (as transformers' Auto classes pick it by model_type), e.g. RobertaForMaskedLM for BertForMaskedLM on a
        RoBERTa checkpoint."""
        return architecture.model_class(cls.role, cls)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | str = torch.float32,
                        device: torch.device | str = "cpu", allow_missing_weights: bool = False,
                        local_files_only: bool = False, num_labels: int | None = None,
                        id2label: dict[int, str] | None = None,
                        adapter: str | os.PathLike | None = None,
                        quantize: str | None = None) -> "BertPreTrainedModel":
        """Load a HuggingFace checkpoint (local directory or hub id) in eval mode; its config.json's ``model_type``
        picks the architecture (bertfast.models), and an encoder class gives way to that architecture's encoder.

        The model is built on the meta device and the checkpoint tensors are assigned, so no random
        weights are ever allocated. Weights the architecture needs but the checkpoint lacks are an
        error unless ``allow_missing_weights=True`` (then they are initialised randomly, with a warning).
        ``num_labels`` / ``id2label`` set a task model's labels (they must agree with the checkpoint's
        config and head); on a checkpoint without the task head (a base model) they build a new head,
        initialised randomly as transformers does, with one warning: the start of fine-tuning.
        ``adapter``: a PEFT LoRA adapter folder or hub id, merged into the weights before they are assigned
        (bertfast.adapters). On the CPU, bfloat16 warns where the CPU lacks avx512_bf16 / AMX and float16 is refused
        (bertfast.cpu.check_cpu_dtype). ``quantize="int8"``: the encoder's linear layers in int8 on the CPU (bertfast.cpu.int8;
        a float32 model on the CPU only).
        """
        device = resolve_device(device)  # before any file is read: a missing GPU is not a broken checkpoint
        cpu.check_load(resolve_dtype(dtype), device, quantize)
        config = read_config(resolve_file(name_or_path, "config.json", local_files_only=local_files_only),
                             num_labels, id2label)
        state = read_state_dict(name_or_path, device=device, local_files_only=local_files_only)
        if adapter is not None:
            state = merge_adapter(state, adapter, local_files_only=local_files_only, model_type=config.model_type)
        new_head = num_labels is not None or id2label is not None
        model_class = cls._class_for(architecture_of(config))
        return model_class._from_state(config, state, dtype, device, allow_missing_weights, new_head,
                                       os.fspath(name_or_path), quantize)

    @classmethod
    def from_hf(cls, hf_model: nn.Module, allow_missing_weights: bool = False) -> "BertPreTrainedModel":
        """Convert an in-memory transformers model of an architecture bertfast runs (its weights are copied, on its
        device and dtype)."""
        architecture = get_architecture(getattr(hf_model.config, "model_type", None),
                                        f"from_hf({type(hf_model).__name__})")
        config = architecture.config_class.from_dict({k: v for k, v in hf_model.config.to_dict().items()
                                                      if v is not None})
        param = next(hf_model.parameters())
        state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
        return cls._class_for(architecture)._from_state(config, state, param.dtype, param.device,
                                                        allow_missing_weights)

    @classmethod
    def _from_state(cls, config: BertConfig, state: dict[str, torch.Tensor], dtype: torch.dtype | str,
                    device: torch.device | str, allow_missing_weights: bool, new_head: bool = False,
                    source: str | None = None, quantize: str | None = None) -> "BertPreTrainedModel":
        with torch.device("meta"):
            model = cls._build(config, state)
        model._load_state(state, allow_missing=allow_missing_weights, new_head=new_head, source=source)
        unfilled = [name for name, buffer in model.named_buffers() if buffer.is_meta]
        if unfilled:  # an architecture's bug, not the checkpoint's: said once, naming the buffers
            raise TypeError(f"{cls.__name__}: buffers {unfilled} are still on the meta device after loading: the model "
                            f"is built under torch.device('meta'), so a buffer computed in __init__ (not loaded from "
                            f"the checkpoint) must be created with an explicit device, e.g. device='cpu'")
        return cpu.prepare(model.to(device=device, dtype=resolve_dtype(dtype)).eval(), quantize, source)

    def _load_state(self, state: dict[str, torch.Tensor], allow_missing: bool = False, new_head: bool = False,
                    source: str | None = None) -> None:
        """Check a checkpoint's tensors (with its own key names) against this model's key set and every shape, and
        the values taken (floating point, finite: ``check_weight_values``, naming ``source``), then assign them (no
        copies).

        The model may live on the meta device. Weights of parts this model lacks (the pooler, the architecture's
        ``head_prefixes``) are ignored with an info message, other unused ones with a warning. Weights the checkpoint lacks are an
        error; with ``allow_missing`` they are materialised and initialised randomly, with a warning; with
        ``new_head`` the same holds for a task head (``new_head_prefixes``) when it is all that is missing.
        """
        name = type(self).__name__
        architecture = architecture_of(self.config)
        checkpoint = state
        state, origin = architecture.remap_state_dict(checkpoint, nested=bool(self.base_model_prefix),
                                                      tie_word_embeddings=self.config.tie_word_embeddings)
        expected = self.module_shapes()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [f"{origin[k]}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                      for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k]]
        if mismatched:
            raise CheckpointError("checkpoint and config disagree on weight shapes (is config.json from the same "
                                  "model?):\n  " + "\n  ".join(mismatched))
        prefix = f"{self.base_model_prefix}." if self.base_model_prefix else ""
        other = [k for k in unexpected if k.removeprefix(prefix).startswith(("pooler.", *architecture.head_prefixes))]
        unknown = [origin[k] for k in unexpected if k not in other]
        if other:
            logging.getLogger(__name__).info("%s: ignoring checkpoint weights of parts it does not have: %s",
                                             name, other)
        if unknown:
            warnings.warn(f"{name}: {len(unknown)} checkpoint weights were not used: {unknown}")
        head_only = bool(missing) and all(k.startswith(self.new_head_prefixes) for k in missing)
        if missing and head_only and not (new_head or allow_missing):
            raise CheckpointError(
                f"{name}: the checkpoint has no task head ({missing}): it is a base model, not one fine-tuned for this "
                f"task. Pass num_labels=N (or id2label={{0: 'NEG', 1: 'POS'}}; num_labels=2 for question answering) to "
                f"build a new head, initialised randomly for fine-tuning, or load a checkpoint fine-tuned for the task."
            )
        if missing and not (allow_missing or (new_head and head_only)):
            raise CheckpointError(
                f"{name}: the checkpoint lacks {len(missing)} weights: {missing}. It was probably saved from another "
                f"architecture (e.g. a bare BertModel). Pass allow_missing_weights=True (on the command line: "
                f"--allow-missing-weights) to initialise them randomly (the outputs that use them are then "
                f"meaningless until trained)."
            )
        taken = {k: state[k] for k in expected if k in state}
        sources = {part: checkpoint[part] for k in taken for part in origin[k].split(FUSED_ORIGIN)}  # as saved
        check_weight_values(sources, {part: part for part in sources}, f"{name} from {source}" if source else name)
        self.load_state_dict(taken, strict=False, assign=True)
        if missing:
            if new_head and head_only:
                warnings.warn(f"{name}: the checkpoint has no task head; new weights {missing} are initialised "
                              f"randomly (normal(0, {self.config.initializer_range}), zero bias): fine-tune the model "
                              f"before using its outputs")
            else:
                warnings.warn(f"{name}: initialised {len(missing)} weights missing from the checkpoint randomly: "
                              f"{missing}")
            self._materialize_meta()

    def module_shapes(self) -> dict[str, torch.Size]:
        """Every parameter and persistent buffer by its key in the module tree, the keys the architecture's remap
        gives a checkpoint (``state_dict()`` writes transformers' names instead: a fused qkv as query/key/value)."""
        shapes = {name: p.shape for name, p in self.named_parameters(remove_duplicate=False)}
        for module_name, module in self.named_modules(remove_duplicate=False):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and buffer_name not in module._non_persistent_buffers_set:
                    shapes[f"{module_name}.{buffer_name}" if module_name else buffer_name] = buffer.shape
        return shapes

    def _materialize_meta(self) -> None:
        """Real storage and a random init for parameters still on the meta device; loaded ones are kept."""
        device = next((p.device for p in self.parameters() if not p.is_meta), torch.device("cpu"))
        for module in self.modules():
            own = dict(module.named_parameters(recurse=False))
            if not any(p.is_meta for p in own.values()):
                continue
            loaded = {name: p.detach().clone() for name, p in own.items() if not p.is_meta}
            for name, p in own.items():
                if p.is_meta:
                    setattr(module, name, nn.Parameter(torch.empty_like(p, device=device)))
            self._init_module(module)
            with torch.no_grad():  # the init covers the whole module: put back what the checkpoint gave
                for name, value in loaded.items():
                    getattr(module, name).copy_(value)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors that both bertfast and transformers load, in one swap of
        ``directory`` (``bertfast.atomic.staged_files``; its other files are kept): a failed or killed save leaves
        the old pair whole, never the new config with the old weights."""
        from safetensors.torch import save_file

        if getattr(self, "quantization", None) is not None:
            raise ValueError(f"a {self.quantization} model is not saved (its weights are packed for this CPU): save "
                             f"the float32 model and load it with quantize={self.quantization!r}, or export it with "
                             f"export_onnx(..., quantize={self.quantization!r})")
        self.config.architectures = [type(self).__name__]
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with staged_files(directory) as staging:
            save_file(state, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
            self.config.save(staging)

    @property
    def base_model(self) -> "BertPreTrainedModel":
        """The encoder: the model itself for a BertModel, its ``bert`` for the models with heads (transformers' name)."""
        return getattr(self, self.base_model_prefix) if self.base_model_prefix else self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of (unique) parameters, as transformers counts them."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not only_trainable}
        if exclude_embeddings:
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    params.pop(id(module.weight), None)
        return sum(p.numel() for p in params.values())
