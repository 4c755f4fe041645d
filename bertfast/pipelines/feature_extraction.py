"""``feature-extraction`` (alias ``sentence-embedding``): sentence embeddings as ``SentenceTransformer.encode``
computes them, or per-token hidden states.

By default the pipeline follows the model folder's sentence-transformers configuration (bertfast.st_config):
its pooling, Dense layers, Normalize module, ``max_seq_length``, ``do_lower_case`` and default prompt. A plain
checkpoint without ``modules.json`` gets mean pooling without normalisation. Explicit arguments win.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from bertfast.export.onnx_model import OnnxModel
from bertfast.models.bert import BertModel
from bertfast.padding import PackedBatch, pool_packed
from bertfast.pipelines.base import Pipeline, as_list
from bertfast.pretrained import BertPreTrainedModel
from bertfast.st_config import POOLING_MODES, SentenceConfig, read_sentence_config
from bertfast.tokenizer import BertTokenizer

POOLINGS = (*POOLING_MODES, "none")  # "none": each text's token vectors (tokens, H)


def output_kind(convert_to_numpy: bool | None, convert_to_tensor: bool | None, tokens: bool) -> tuple[str, bool]:
    """(what an embedding call returns, whether on the CPU). Neither flag given (this pipeline's default): a
    "tensor" on the CPU. Else ``SentenceTransformer.encode``'s choice, its defaults (numpy True, tensor False)
    standing for the missing flag: "tensor" (convert_to_tensor wins) on the model's device, "numpy", or "list"
    (both off) on the model's device. Token embeddings (pooling "none") are always a "list"."""
    if convert_to_numpy is None and convert_to_tensor is None:
        return ("list" if tokens else "tensor"), True
    numpy = convert_to_numpy is not False  # sentence-transformers' default: True
    if tokens or not (convert_to_tensor or numpy):
        return "list", False
    return ("tensor", False) if convert_to_tensor else ("numpy", True)


class SentenceConfigPipeline(Pipeline):
    """A pipeline that follows a sentence-transformers folder of its ``model_type`` (``pipeline()`` reads the
    configuration): the folder's ``max_seq_length`` applies unless ``max_length`` is given."""

    model_type: str  # the sentence-transformers model type this task runs
    other_task: str  # the pipeline task for a folder of the other model type

    def __init__(self, model: BertPreTrainedModel | OnnxModel, tokenizer: BertTokenizer, batch_size: int = 32,
                 max_length: int | None = None, sentence_config: SentenceConfig | None = None):
        """``sentence_config``: the folder's configuration; None = the defaults of a plain checkpoint."""
        config = self._checked(sentence_config or SentenceConfig(self.model_type))
        if max_length is None and config.max_seq_length is not None:
            max_length = min(config.max_seq_length, model.config.max_sequence_length)
        super().__init__(model, tokenizer, batch_size=batch_size, max_length=max_length)
        self.sentence_config = config

    @classmethod
    def folder_options(cls, name_or_path: str | os.PathLike, local_files_only: bool = False) -> dict[str, Any]:
        config = read_sentence_config(name_or_path, local_files_only=local_files_only)
        return {"sentence_config": None if config is None else cls._checked(config)}

    @classmethod
    def _checked(cls, config: SentenceConfig) -> SentenceConfig:
        if config.model_type != cls.model_type:
            raise ValueError(f"this model folder is a sentence-transformers {config.model_type}: use "
                             f"pipeline({cls.other_task!r}, ...) for it")
        return config

    def _texts(self, text: str | Sequence[str], prefix: str | None = None) -> tuple[list[str], bool]:
        """(the texts as the model reads them: prompt prepended, lowercased if the folder says so, single)."""
        texts, single = as_list(text, "text")
        texts = [(prefix or "") + t for t in texts]
        return [t.lower() for t in texts] if self.sentence_config.do_lower_case else texts, single


class FeatureExtractionPipeline(SentenceConfigPipeline):
    model_class = BertModel
    packed_input = True
    model_type = "SentenceTransformer"
    other_task = "sparse-embedding"

    def __init__(self, model: BertPreTrainedModel | OnnxModel, tokenizer: BertTokenizer, batch_size: int = 32,
                 max_length: int | None = None, sentence_config: SentenceConfig | None = None):
        super().__init__(model, tokenizer, batch_size=batch_size, max_length=max_length,
                         sentence_config=sentence_config)
        width, hidden = self.sentence_config.embedding_dimension, model.config.hidden_size
        if width not in (None, hidden):
            raise ValueError(f"the folder's Pooling expects {width}-wide token vectors but the encoder's hidden "
                             f"size is {hidden}: is 1_Pooling/config.json from this model?")

    def __call__(self, text: str | Sequence[str], pooling: str | Sequence[str] | None = None,
                 normalize: bool | None = None, prompt: str | None = None, prompt_name: str | None = None,
                 convert_to_numpy: bool | None = None, convert_to_tensor: bool | None = None):
        """Sentence embeddings: (D,) for a string, (N, D) for a list; by default float32 torch tensors on the CPU.

        ``convert_to_numpy`` / ``convert_to_tensor``: as ``SentenceTransformer.encode``, whenever either is given
        (its defaults, True / False, fill in the other): ``convert_to_tensor=True`` wins and gives a tensor on
        the model's device; else ``convert_to_numpy=True`` a float32 numpy array; both False a list of (D,)
        tensors on the model's device (for one string, its (D,) tensor).

        ``pooling``: one of ``POOLINGS`` or a sequence of them (concatenated); None = the folder's. "mean"
        averages the real tokens (padding excluded), "cls" takes the first token, "max" the element-wise
        maximum, "mean_sqrt_len_tokens" divides the sum by sqrt(length), "weightedmean" weighs position p by p,
        "lasttoken" takes the last real token ([SEP]); "none" returns each text's (tokens, H) hidden states, a
        list for a list whatever the convert flags (sentence-transformers' token embeddings; on the CPU unless a
        flag is given), no Dense layers, not normalised unless ``normalize=True``. The folder's Dense layers
        follow any other pooling. ``normalize``: L2-normalise (cosine similarity = dot product); None = the
        folder's Normalize. ``prompt`` (a text) or ``prompt_name`` (one of the folder's prompts) is prepended to
        every text; by default the folder's default prompt, if it has one.
        """
        config = self.sentence_config
        modes = config.pooling if pooling is None else ((pooling,) if isinstance(pooling, str) else tuple(pooling))
        unknown = [m for m in modes if m not in POOLINGS]
        if unknown or not modes or ("none" in modes and len(modes) > 1):
            raise ValueError(f"pooling must be one of {POOLINGS} (or a sequence of pooling modes), got {pooling!r}")
        tokens = modes == ("none",)
        width = len(modes) * self.model.config.hidden_size
        if config.dense and not tokens and config.dense[0].weight.shape[1] != width:
            raise ValueError(f"the folder's Dense layer takes {config.dense[0].weight.shape[1]}-wide vectors, pooling "
                             f"{modes} gives {width}: choose a pooling of the folder's width")
        output, to_cpu = output_kind(convert_to_numpy, convert_to_tensor, tokens)
        normalize = (config.normalize and not tokens) if normalize is None else normalize
        prefix = config.prompt_text(prompt, prompt_name)
        texts, single = self._texts(text, prefix)
        skip = self._prompt_length(prefix) if prefix and not config.include_prompt else 0
        results = self._run(texts, modes=modes, normalize=normalize, skip=skip, to_cpu=to_cpu)
        if output == "list":
            return results[0] if single else results
        stacked = results[0] if single else torch.stack(results)  # (D,) or (N, D)
        return stacked.numpy() if output == "numpy" else stacked

    def _prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt at the start of every input: [CLS] and its pieces (its trailing [SEP] is not)."""
        prompt = prompt.lower() if self.sentence_config.do_lower_case else prompt
        return len(self.tokenizer(prompt)["input_ids"]) - 1

    def _process(self, batch: PackedBatch | dict[str, torch.Tensor], modes: tuple[str, ...] = ("mean",),
                 normalize: bool = False, skip: int = 0, to_cpu: bool = True) -> list[torch.Tensor]:
        """One (D,) embedding per row, or its (tokens, H) vectors for pooling "none"; moved to the CPU if
        ``to_cpu``, else left on the model's device."""
        hidden, lengths = self._token_vectors(batch)  # (T, H): each row's tokens, one row after another
        if modes == ("none",):
            rows = list(torch.split(hidden, list(lengths)))
            rows = [F.normalize(r, dim=-1) if normalize else r for r in rows]
            return [r.cpu() for r in rows] if to_cpu else rows
        pooled = pool_packed(hidden, lengths, modes, skip)  # (B, D); include_prompt false: skip the prompt's tokens
        for layer in self.sentence_config.dense:
            pooled = layer(pooled)
        pooled = F.normalize(pooled, dim=-1) if normalize else pooled
        return list(pooled.cpu() if to_cpu else pooled)

    def _token_vectors(self, batch: PackedBatch | dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(last hidden states of the real tokens (T, H) float32, each row's token count). An exported graph
        takes and returns padded (B, S) rows: its real tokens are taken out of them."""
        if isinstance(batch, PackedBatch):
            return self.model(batch).last_hidden_state.float(), batch.lengths
        mask = batch["attention_mask"].bool()  # (B, S)
        return self.model(**batch).last_hidden_state[mask].float(), tuple(mask.sum(1).tolist())  # (T, H)
