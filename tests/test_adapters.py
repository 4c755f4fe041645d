"""LoRA adapters made and saved by peft on random transformers models, merged at load: the same weights and
outputs as ``PeftModel.from_pretrained(hf_model, adapter).merge_and_unload()``; what cannot be merged is refused."""
from __future__ import annotations

import json
import os
import warnings

import peft
import pytest
import torch

import bertfast
from bertfast.adapters import AdapterError, merge_adapter
from bertfast.checkpoint import read_state_dict

from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, TINY, assert_close, assert_close_real, padded_batch


def hf_model(kind: str, **config_kwargs):
    import transformers

    torch.manual_seed(5)
    return getattr(transformers, kind)(transformers.BertConfig(**{**TINY, **config_kwargs})).eval()


def saved(model, path) -> str:
    model.save_pretrained(path)
    return str(path)


def make_adapter(model, path, safe: bool = True, **lora_options) -> str:
    """A LoRA adapter on ``model`` saved by peft, with random non-zero weights everywhere it trains."""
    config = peft.LoraConfig(init_lora_weights=False, **lora_options)
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if param.requires_grad:
                param.normal_(0.0, 0.1)
    wrapped.save_pretrained(path, safe_serialization=safe)
    return str(path)


def peft_merged(kind: str, base_dir: str, adapter_dir: str):
    import transformers

    base = getattr(transformers, kind).from_pretrained(base_dir)
    return peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()



def edit_config(adapter: str, **changes) -> None:
    """Rewrite the adapter's adapter_config.json with ``changes`` applied."""
    path = os.path.join(adapter, "adapter_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**config, **changes}, f)

def test_lora_on_every_encoder_linear_matches_peft_merge(tmp_path):
    base = saved(hf_model("BertModel"), tmp_path / "base")
    options = dict(r=4, lora_alpha=16, target_modules=["query", "key", "value", "dense"], use_rslora=True,
                   rank_pattern={"layer.1.attention.self.key": 2}, alpha_pattern={"intermediate.dense": 3})
    adapter = make_adapter(hf_model("BertModel"), tmp_path / "adapter", **options)
    expected = peft_merged("BertModel", base, adapter)
    ours = bertfast.BertModel.from_pretrained(base, adapter=adapter)
    plain = bertfast.BertModel.from_pretrained(base)
    batch = padded_batch(TINY["vocab_size"], [9, 4, 1])
    with torch.no_grad():
        reference = expected(**batch)
        out = ours(**batch)
        assert (plain(**batch).last_hidden_state - out.last_hidden_state).abs().max() > 0.1  # the adapter matters
    assert_close_real(out.last_hidden_state, reference.last_hidden_state, batch, HIDDEN_ATOL)
    assert_close(out.pooler_output, reference.pooler_output, HIDDEN_ATOL)
    merged = ours.state_dict()
    for key, value in expected.state_dict().items():
        assert_close(merged[key], value, 1e-6)


@pytest.mark.parametrize("safe", [True, False])
def test_mlm_adapter_with_biases_and_a_saved_module_matches_peft(tmp_path, safe):
    base = saved(hf_model("BertForMaskedLM"), tmp_path / "base")
    options = dict(r=3, lora_alpha=6, target_modules=["query", "value", "output.dense"], bias="lora_only",
                   lora_bias=True, modules_to_save=["transform"])
    adapter = make_adapter(hf_model("BertForMaskedLM"), tmp_path / "adapter", safe=safe, **options)
    assert os.path.exists(os.path.join(adapter, "adapter_model.safetensors" if safe else "adapter_model.bin"))
    expected = peft_merged("BertForMaskedLM", base, adapter)
    ours = bertfast.BertForMaskedLM.from_pretrained(base, adapter=adapter)
    batch = padded_batch(TINY["vocab_size"], [7, 3])
    with torch.no_grad():
        assert_close_real(ours(**batch).logits, expected(**batch).logits, batch, LOGITS_ATOL)
    merged = ours.state_dict()
    for key, value in expected.state_dict().items():
        if key in merged:  # the tied decoder weight is the word embeddings
            assert_close(merged[key], value, 1e-6)


def test_bias_all_and_a_saved_pooler_match_peft(tmp_path):
    base = saved(hf_model("BertModel"), tmp_path / "base")
    adapter = make_adapter(hf_model("BertModel"), tmp_path / "adapter", r=2, target_modules=["key"], bias="all",
                           modules_to_save=["pooler"])
    expected = peft_merged("BertModel", base, adapter).state_dict()
    merged = bertfast.BertModel.from_pretrained(base, adapter=adapter).state_dict()
    assert set(merged) == set(expected)
    for key, value in expected.items():
        assert_close(merged[key], value, 1e-6)


def test_classifier_in_modules_to_save_and_prefix_free_matching(tmp_path):
    """At state-dict level (the sequence-classification model class is built elsewhere): the trained classifier
    comes from the adapter, even into a checkpoint without one; an encoder adapter fits a bert.-prefixed one."""
    head = saved(hf_model("BertForSequenceClassification", num_labels=3), tmp_path / "cls")
    adapter = make_adapter(hf_model("BertForSequenceClassification", num_labels=3), tmp_path / "adapter", r=4,
                           target_modules=["query", "value"], modules_to_save=["classifier"])
    expected = peft_merged("BertForSequenceClassification", head, adapter).state_dict()
    merged = merge_adapter(read_state_dict(head), adapter)
    assert set(merged) == set(expected)
    for key in merged:
        assert_close(merged[key], expected[key], 1e-6)
    pretraining = saved(hf_model("BertForPreTraining"), tmp_path / "pretraining")  # no classifier at all
    added = merge_adapter(read_state_dict(pretraining), adapter)
    assert_close(added["classifier.weight"], expected["classifier.weight"], 0)
    encoder = saved(hf_model("BertModel"), tmp_path / "encoder")
    encoder_adapter = make_adapter(hf_model("BertModel"), tmp_path / "encoder_adapter", r=2, target_modules=["query"])
    bare = merge_adapter(read_state_dict(encoder), encoder_adapter)
    prefixed = merge_adapter({f"bert.{k}": v for k, v in read_state_dict(encoder).items()}, encoder_adapter)
    assert {f"bert.{k}": v for k, v in bare.items()}.keys() == prefixed.keys()
    for key, value in bare.items():
        assert torch.equal(prefixed[f"bert.{key}"], value)


def test_fan_in_fan_out_is_ignored_for_linear_layers_as_peft_does(tmp_path):
    base = saved(hf_model("BertModel"), tmp_path / "base")
    adapter = make_adapter(hf_model("BertModel"), tmp_path / "adapter", r=2, target_modules=["intermediate.dense"])
    edit_config(adapter, fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = peft_merged("BertModel", base, adapter).state_dict()
    with pytest.warns(UserWarning, match="fan_in_fan_out=True is for Conv1D layers"):
        merged = bertfast.BertModel.from_pretrained(base, adapter=adapter).state_dict()
    for key, value in expected.items():
        assert_close(merged[key], value, 1e-6)


def test_adapters_that_cannot_be_merged_are_clear_errors(tmp_path):
    base = saved(hf_model("BertModel"), tmp_path / "base")
    dora = make_adapter(hf_model("BertModel"), tmp_path / "dora", r=2, target_modules=["query"], use_dora=True)
    with pytest.raises(AdapterError, match=r"uses DoRA \(use_dora\), which bertfast cannot merge"):
        bertfast.BertModel.from_pretrained(base, adapter=dora)
    ia3 = peft.get_peft_model(hf_model("BertModel"), peft.IA3Config(target_modules=["key", "value", "output.dense"],
                                                                   feedforward_modules=["output.dense"]))
    ia3.save_pretrained(tmp_path / "ia3")
    with pytest.raises(AdapterError, match="is a 'IA3' adapter; bertfast merges LoRA adapters only"):
        bertfast.BertModel.from_pretrained(base, adapter=tmp_path / "ia3")
    embedding = make_adapter(hf_model("BertModel"), tmp_path / "embedding", r=2, target_modules=["word_embeddings"])
    with pytest.raises(AdapterError, match=r"word_embeddings\.lora_embedding_A.* is not LoRA on a Linear layer"):
        bertfast.BertModel.from_pretrained(base, adapter=embedding)
    wider = make_adapter(hf_model("BertModel", hidden_size=48, num_attention_heads=4), tmp_path / "wider", r=2,
                         target_modules=["query"])
    with pytest.raises(AdapterError, match=r"self\.query\.weight is \(48, 48\) in the adapter but \(32, 32\)"):
        bertfast.BertModel.from_pretrained(base, adapter=wider)
    classifier = make_adapter(hf_model("BertForSequenceClassification", num_labels=2), tmp_path / "head", r=2,
                              target_modules=["classifier"])
    with pytest.raises(AdapterError, match="changes classifier.weight, which this checkpoint does not have"):
        bertfast.BertModel.from_pretrained(base, adapter=classifier)
    edit_config(classifier, r=3)
    with pytest.raises(AdapterError, match=r"lora_A \(2, 32\) and lora_B \(2, 2\), not of the rank r=3"):
        bertfast.BertModel.from_pretrained(base, adapter=classifier)
    with pytest.raises(FileNotFoundError, match="adapter_config.json not found"):
        bertfast.BertModel.from_pretrained(base, adapter=tmp_path)


@pytest.mark.parametrize("edit, message", [
    ({"r": 0}, r"adapter_config.json: r must be a positive integer \(the LoRA rank\), got 0"),
    ({"r": -2}, r"adapter_config.json: r must be a positive integer"),
    ({"rank_pattern": {"query": 0}}, r"adapter_config.json: rank_pattern\['query'\] must be a positive integer"),
    ({"lora_alpha": "16"}, r"adapter_config.json: lora_alpha must be a finite number, got '16'"),
    ({"alpha_pattern": ["query"]}, r"adapter_config.json: alpha_pattern must be an object"),
], ids=["r_0", "r_negative", "rank_pattern_0", "alpha_a_string", "alpha_pattern_a_list"])
def test_a_rank_or_alpha_that_cannot_scale_is_refused_naming_the_file(edit, message, tmp_path):
    """The merge scales by alpha / r: r 0 was a ZeroDivisionError."""
    base = saved(hf_model("BertModel"), tmp_path / "base")
    adapter = make_adapter(hf_model("BertModel"), tmp_path / "adapter", r=2, target_modules=["query"])
    edit_config(adapter, **edit)
    with pytest.raises(AdapterError, match=message):
        bertfast.BertModel.from_pretrained(base, adapter=adapter)


def test_rank_0_matrices_and_a_config_that_is_not_json_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    base = saved(hf_model("BertModel"), tmp_path / "base")
    adapter = make_adapter(hf_model("BertModel"), tmp_path / "adapter", r=2, target_modules=["query"])
    edit_config(adapter, r=None)  # the matrices' own rank, then
    weights = os.path.join(adapter, "adapter_model.safetensors")
    save_file({k: v[:0] if "lora_A" in k else v[:, :0] for k, v in load_file(weights).items()}, weights)
    with pytest.raises(AdapterError, match=r"query has lora_A \(0, 32\), of rank 0: a LoRA update needs rank r >= 1"):
        bertfast.BertModel.from_pretrained(base, adapter=adapter)
    with open(os.path.join(adapter, "adapter_config.json"), "w", encoding="utf-8") as f:
        f.write('{"peft_type": "LORA", "r": ')
    with pytest.raises(AdapterError, match=r"adapter_config.json is not valid UTF-8 JSON"):
        bertfast.BertModel.from_pretrained(base, adapter=adapter)
