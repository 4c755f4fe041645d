"""The proof that the architecture slot works: a toy architecture defined in this file alone -- BERT with fixed
sinusoidal positions instead of a learned position table (a different embedding, the same blocks) and checkpoints
of its own key names (``toy.`` where BERT's have ``bert.``) -- registered, then loaded, run padding-free, quantized,
given a head and served through a pipeline with no edit outside this file. Its reference is transformers' BertModel
with the sinusoid table put in as its position embeddings: the same function, computed by another library."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import transformers

import bertfast
from bertfast import ops
from bertfast.config import BertConfig
from bertfast.models import Architecture, register, unregister
from bertfast.models import bert
from bertfast.padding import PackedBatch
from tests.helpers import HIDDEN_ATOL, TINY, copy_tokenizer

MODEL_TYPE = "toy-sinusoidal"
SIZES = {**TINY, "vocab_size": 30522}


@dataclass
class ToyConfig(BertConfig):
    model_type: str = MODEL_TYPE
    position_base: float = 10000.0  # the sinusoid's wavelength base (the table is fixed, not learned)
    model_types = (MODEL_TYPE,)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.position_base, (int, float)) or not self.position_base > 1:
            raise ValueError(f"config.position_base must be a number > 1, got {self.position_base!r}")


def sinusoid_table(positions: int, width: int, base: float) -> torch.Tensor:
    """(positions, width): sin on the even columns, cos on the odd ones (Vaswani et al.). Made on the CPU whatever
    the default device: from_pretrained builds the model under torch.device("meta"), and this table is not loaded."""
    position = torch.arange(positions, dtype=torch.float64, device="cpu")[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float64, device="cpu") * (-math.log(base) / width))
    table = torch.zeros(positions, width, dtype=torch.float64, device="cpu")
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


class ToyEmbeddings(nn.Module):
    """BERT's embeddings with the sinusoid table (a buffer, not saved) where the learned positions were."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        table = sinusoid_table(config.max_position_embeddings, config.hidden_size, config.position_base)
        self.register_buffer("positions", table, persistent=False)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        return self.dropout(ops.embeddings(
            input_ids, word_weight=self.word_embeddings.weight, position_weight=self.positions.to(
                self.word_embeddings.weight.dtype), token_type_weight=self.token_type_embeddings.weight,
            ln_weight=self.LayerNorm.weight, ln_bias=self.LayerNorm.bias, eps=self.LayerNorm.eps,
            token_type_ids=token_type_ids, position_ids=position_ids, padding_idx=self.word_embeddings.padding_idx))


class ToyModel(bert.BertModel):
    """BERT's encoder blocks and pooler over the toy embeddings."""

    def __init__(self, config: ToyConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer)
        self.embeddings = ToyEmbeddings(config)
        self.init_weights()


def toy_remap(state, *, nested, tie_word_embeddings):
    """The toy's checkpoints nest the encoder under ``toy.``: renamed to BERT's, then BERT's rules."""
    renamed = {("bert." + key[4:] if key.startswith("toy.") else key): tensor for key, tensor in state.items()}
    out, origin = bert.remap_state_dict(renamed, nested=nested, tie_word_embeddings=tie_word_embeddings)
    back = {"bert." + key[4:]: key for key in state if key.startswith("toy.")}
    return out, {key: " + ".join(back.get(part, part) for part in source.split(" + "))
                 for key, source in origin.items()}


@pytest.fixture
def toy_architecture():
    register(Architecture(model_type=MODEL_TYPE, config_class=ToyConfig, encoder_class=ToyModel,
                          remap_state_dict=toy_remap, head_prefixes=bert.HEAD_PREFIXES,
                          checkpoint_key=lambda key: bert.ARCHITECTURE.checkpoint_key(key.replace("toy.", "bert.", 1)),
                          linear_layers=bert.linear_layers, fused_linears=bert.FUSED_LINEARS))
    yield
    unregister(MODEL_TYPE)


@pytest.fixture
def toy_checkpoint(tmp_path, minilm_dir):
    """(folder, reference): a transformers BertForPreTraining's weights saved under the toy's names, without the
    position table, with its tokenizer files; the reference is that model's encoder with the sinusoids put in."""
    torch.manual_seed(7)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**SIZES, attn_implementation="eager")).eval()
    state = {("toy." + key[5:] if key.startswith("bert.") else key): value for key, value in hf.state_dict().items()
             if "position_embeddings" not in key and not key.endswith("position_ids")}
    from safetensors.torch import save_file

    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    config = {**{k: v for k, v in hf.config.to_dict().items() if v is not None and k not in ("id2label", "label2id")},
              "model_type": MODEL_TYPE, "position_base": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    copy_tokenizer(minilm_dir, tmp_path)
    reference = hf.bert
    with torch.no_grad():
        reference.embeddings.position_embeddings.weight.copy_(
            sinusoid_table(SIZES["max_position_embeddings"], SIZES["hidden_size"], 10000.0))
    return str(tmp_path), reference


def batch(lengths: list[int]) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths)))
    mask = torch.tensor([[1] * n + [0] * (max(lengths) - n) for n in lengths])
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_it_loads_by_model_type_and_runs_padding_free_as_the_reference(toy_architecture, toy_checkpoint):
    folder, reference = toy_checkpoint
    model = bertfast.BertModel.from_pretrained(folder)  # the encoder class gives way to the config's architecture
    assert type(model) is ToyModel and isinstance(model.config, ToyConfig)
    inputs = batch([9, 4, 1])
    with torch.inference_mode():
        expected = reference(**inputs).last_hidden_state * inputs["attention_mask"][..., None]
        padded = model(**inputs)
        packed = model(PackedBatch.from_token_lists([row[:n].tolist() for row, n in
                                               zip(inputs["input_ids"], inputs["attention_mask"].sum(1))]))
    torch.testing.assert_close(padded.last_hidden_state, expected, atol=HIDDEN_ATOL, rtol=0)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(packed.last_hidden_state, expected[real], atol=HIDDEN_ATOL, rtol=0)
    torch.testing.assert_close(padded.pooler_output, reference(**inputs).pooler_output, atol=HIDDEN_ATOL, rtol=0)


def test_its_heads_int8_and_save_use_its_entry(toy_architecture, toy_checkpoint, tmp_path):
    folder, reference = toy_checkpoint
    with pytest.warns(UserWarning, match="no task head"):
        classifier = bertfast.BertForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert type(classifier.bert) is ToyModel
    int8 = bertfast.BertModel.from_pretrained(folder, quantize="int8")  # its linear_layers, replaced
    inputs = batch([7, 3])
    with torch.inference_mode():
        expected = reference(**inputs).last_hidden_state[inputs["attention_mask"].bool()]
        got = int8(**inputs).last_hidden_state[inputs["attention_mask"].bool()]
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min() > 0.99
    classifier.save_pretrained(tmp_path / "saved")  # BERT's names: its own remap keeps them
    again = bertfast.BertForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert torch.equal(again.classifier.weight, classifier.classifier.weight)


def test_it_serves_through_the_pipeline(toy_architecture, toy_checkpoint):
    folder, reference = toy_checkpoint
    pipe = bertfast.pipeline("feature-extraction", folder)
    text = "a toy architecture from one test file"
    tokens = pipe.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        expected = reference(**tokens).last_hidden_state[0]
    assert type(pipe.model) is ToyModel
    torch.testing.assert_close(pipe(text), expected.mean(0), atol=HIDDEN_ATOL, rtol=0)  # a plain folder: mean pooling
    torch.testing.assert_close(torch.as_tensor(pipe(text, pooling="none")), expected, atol=HIDDEN_ATOL, rtol=0)


def test_an_unknown_model_type_is_one_line_naming_the_file(tmp_path, tiny_checkpoint):
    config = json.load(open(f"{tiny_checkpoint}/config.json"))
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config.json: model_type is 'gpt2'; bertfast runs the "
                                         rf"architectures 'bert', 'camembert', 'distilbert', 'electra', 'modernbert', 'roberta', "
                                         rf"'xlm-roberta' \(a checkpoint"):
        bertfast.BertModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"model_type is '{MODEL_TYPE}'; bertfast runs the architectures 'bert', "):
        BertConfig(model_type=MODEL_TYPE)  # not registered outside the fixture


def test_a_buffer_left_on_the_meta_device_is_named(toy_architecture, toy_checkpoint, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "sinusoid_table", lambda n, width, base: torch.zeros(n, width))
    with pytest.raises(TypeError, match=r"ToyModel: buffers \['embeddings.positions'\] are still on the meta device"):
        bertfast.BertModel.from_pretrained(toy_checkpoint[0])


def test_a_config_class_refuses_another_architectures_model_type(toy_architecture):
    with pytest.raises(ValueError, match=f"config.model_type is '{MODEL_TYPE}', which a BertConfig does not describe "
                                         f"\\(bert\\): build a ToyConfig"):
        BertConfig(model_type=MODEL_TYPE)
    with pytest.raises(ValueError, match="position_base must be a number > 1"):
        ToyConfig(position_base=0.5)
