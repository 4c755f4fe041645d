"""Checkpoint reading (every file format, corrupt and missing files) and the pure key remap, rule by rule."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file

import bertfast
from bertfast import checkpoint
from bertfast.checkpoint import read_state_dict
from bertfast.models.bert import remap_state_dict
from tests.helpers import REPO_ROOT, TINY, copy_config, padded_batch

MODEL_CLASSES = [bertfast.BertModel, bertfast.BertForMaskedLM, bertfast.BertForNextSentencePrediction,
                 bertfast.BertForPreTraining]
WORD = "embeddings.word_embeddings.weight"
DECODER = "cls.predictions.decoder.weight"


def hidden(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else next(iter(out.to_tuple()))


@pytest.fixture(scope="module")
def legacy_checkpoint(tmp_path_factory, tiny_checkpoint) -> str:
    """The key layout of the original bert-base-uncased pytorch_model.bin: LayerNorm gamma/beta, an explicit
    (tied) decoder weight, a position_ids buffer."""
    path = tmp_path_factory.mktemp("legacy")
    copy_config(tiny_checkpoint, path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    legacy["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    torch.save(legacy, os.path.join(path, "pytorch_model.bin"))
    return str(path)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_legacy_gamma_beta_bin_matches_safetensors(cls, legacy_checkpoint, tiny_checkpoint):
    batch = padded_batch(TINY["vocab_size"], [9, 4])
    expected = hidden(cls.from_pretrained(tiny_checkpoint), batch)
    torch.testing.assert_close(hidden(cls.from_pretrained(legacy_checkpoint), batch), expected, atol=0, rtol=0)


def test_sharded_safetensors(tiny_checkpoint, tmp_path):
    hf = transformers.BertForPreTraining.from_pretrained(tiny_checkpoint)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    batch = padded_batch(TINY["vocab_size"], [6, 6])
    torch.testing.assert_close(hidden(bertfast.BertForPreTraining.from_pretrained(tmp_path), batch),
                               hidden(bertfast.BertForPreTraining.from_pretrained(tiny_checkpoint), batch))


def test_sharded_bin_reads_every_shard(tiny_checkpoint, tmp_path):
    """pytorch_model.bin.index.json, the layout transformers wrote before safetensors: two .bin shards."""
    expected = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    keys = sorted(expected)
    weight_map = {}
    for i, shard_keys in enumerate((keys[::2], keys[1::2])):
        shard = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: expected[k] for k in shard_keys}, tmp_path / shard)
        weight_map.update(dict.fromkeys(shard_keys, shard))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    state = read_state_dict(tmp_path)
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_bin_is_read_with_weights_only(tmp_path):
    """A pytorch_model.bin that pickles a callable is refused with our message (never torch's advice to pass
    weights_only=False), and the callable never runs."""
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin")
    refused = (r"pytorch_model.bin holds pickled objects that are not plain tensors \(e\.g\. io\.open\), so it was "
               r"refused for safety.*If you trust the file .*convert it to model.safetensors")
    with pytest.raises(bertfast.CheckpointError, match=refused) as caught:
        read_state_dict(tmp_path)
    assert "weights_only=False" not in str(caught.value) and "allowlist" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert not ran.exists()


def test_a_bin_that_is_not_a_state_dict_is_a_clear_error(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(bertfast.CheckpointError, match="does not hold a state dict .*it holds a list"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: out of memory"), PermissionError(13, "Permission denied")])
def test_errors_that_are_not_the_files_are_never_called_corruption(error, tiny_checkpoint, monkeypatch):
    def load_file(*args, **kwargs):
        raise error

    monkeypatch.setattr(checkpoint, "load_file", load_file)
    with pytest.raises(type(error)) as caught:
        read_state_dict(tiny_checkpoint)
    assert not isinstance(caught.value, bertfast.CheckpointError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_reading_onto_a_missing_gpu_is_not_called_corruption(tiny_checkpoint):
    with pytest.raises((RuntimeError, AssertionError)) as caught:  # torch's own "not compiled with CUDA" error
        read_state_dict(tiny_checkpoint, device="cuda")
    assert not isinstance(caught.value, bertfast.CheckpointError) and "corrupt" not in str(caught.value)


@pytest.fixture
def sharded(tiny_checkpoint, tmp_path) -> str:
    """tiny_checkpoint saved by transformers in several safetensors shards."""
    transformers.BertForPreTraining.from_pretrained(tiny_checkpoint).save_pretrained(tmp_path / "sharded",
                                                                                    max_shard_size="20KB")
    return str(tmp_path / "sharded")


def rewrite_index(folder: str, edit) -> None:
    path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(path))
    edit(index)
    json.dump(index, open(path, "w"))


@pytest.mark.parametrize("case, message", [
    ("no_weight_map", r"index.json has no usable 'weight_map' field"),
    ("weight_map_a_list", r"index.json has no usable 'weight_map' field"),
    ("not_json", r"index.json is not a JSON index of shards"),
    ("not_utf8", r"index.json is not a JSON index of shards .*utf-8"),
    ("missing_shard", r"lists the shard model-00009-of-00009.safetensors, which is not in the checkpoint"),
    ("parent_path", r"lists shards outside the checkpoint folder \(\.\./outside/model.safetensors\): refused"),
    ("absolute_path", r"lists shards outside the checkpoint folder \(/.*outside/model.safetensors\): refused"),
])
def test_a_broken_shard_index_names_the_file_and_the_field(case, message, sharded, tiny_checkpoint, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(os.path.join(tiny_checkpoint, "model.safetensors"), outside)  # loadable, were it ever read
    index = os.path.join(sharded, "model.safetensors.index.json")
    if case == "no_weight_map":
        rewrite_index(sharded, lambda i: i.pop("weight_map"))
    elif case == "weight_map_a_list":
        rewrite_index(sharded, lambda i: i.update(weight_map=list(i["weight_map"])))
    elif case == "not_json":
        open(index, "w").write("{'weight_map': ")
    elif case == "not_utf8":
        open(index, "wb").write(b"\xff\xfe{}")
    elif case == "missing_shard":
        rewrite_index(sharded, lambda i: i["weight_map"].update(
            {next(iter(i["weight_map"])): "model-00009-of-00009.safetensors"}))
    else:
        shard = "../outside/model.safetensors" if case == "parent_path" else str(outside / "model.safetensors")
        rewrite_index(sharded, lambda i: i.update(weight_map=dict.fromkeys(i["weight_map"], shard)))
    with pytest.raises(bertfast.CheckpointError, match=message):
        bertfast.BertForPreTraining.from_pretrained(sharded)


def test_truncated_safetensors_is_a_clear_error(tiny_checkpoint, tmp_path):
    copy_config(tiny_checkpoint, tmp_path)
    data = open(os.path.join(tiny_checkpoint, "model.safetensors"), "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(bertfast.CheckpointError, match="cannot read checkpoint file .*corrupt"):
        bertfast.BertModel.from_pretrained(tmp_path)


QUERY = "bert.encoder.layer.1.attention.self.query.weight"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.to(torch.int32), rf"weights are not floating point: {QUERY} \(torch.int32\)"),
    (lambda t: t.index_fill(1, torch.tensor([3]), float("nan")), rf"hold NaN or infinite values: {QUERY}\."),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("-inf")), rf"hold NaN or infinite values: {QUERY}\."),
], ids=["int32", "nan", "inf"])
def test_integer_nan_and_infinite_weights_are_refused_at_load_naming_the_tensor(edit, message, tiny_checkpoint,
                                                                                tmp_path):
    """Not torch's "Only Tensors of floating point..." RuntimeError, nor NaN scores at the first call."""
    from safetensors.torch import save_file

    copy_config(tiny_checkpoint, tmp_path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    save_file({**state, QUERY: edit(state[QUERY])}, tmp_path / "model.safetensors")
    for cls in (bertfast.BertModel, bertfast.BertForPreTraining):
        with pytest.raises(bertfast.CheckpointError, match=message) as caught:
            cls.from_pretrained(tmp_path)
        assert f"{cls.__name__} from {tmp_path}" in str(caught.value)


def test_an_unreadable_safetensors_file_is_a_permission_error_not_a_missing_one(tiny_checkpoint, monkeypatch):
    """safetensors calls a file it may not open "No such file or directory"; bertfast opens it first. (Tests run as
    root, who may read a mode-000 file: the refusal is simulated.)"""
    weights = os.path.join(tiny_checkpoint, "model.safetensors")

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == weights:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(PermissionError) as caught:
        bertfast.BertModel.from_pretrained(tiny_checkpoint)
    assert caught.value.filename == weights


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9])
def test_a_truncated_bin_is_a_clear_error(fraction, tiny_checkpoint, tmp_path):
    """torch.load raises EOFError, RuntimeError or even OSError(EINVAL) on these: all become CheckpointError."""
    copy_config(tiny_checkpoint, tmp_path)
    torch.save(load_file(os.path.join(tiny_checkpoint, "model.safetensors")), tmp_path / "full.bin")
    data = (tmp_path / "full.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(bertfast.CheckpointError, match="cannot read checkpoint file .*pytorch_model.bin.*corrupt"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_a_directory_without_weights_is_a_clear_error(tiny_checkpoint, tmp_path):
    copy_config(tiny_checkpoint, tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights found .*model.safetensors"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_reading_never_imports_the_model():
    """hub and checkpoint sit below modeling: imported without the package's __init__ (which imports
    everything), they load no other bertfast module but the all-or-nothing file layer (readers finish an
    interrupted save: bertfast.atomic)."""
    code = ("import sys, types; package = types.ModuleType('bertfast'); package.__path__ = [sys.argv[1]]; "
            "sys.modules['bertfast'] = package; import bertfast.checkpoint, bertfast.hub; "
            "print(sorted(m for m in sys.modules if m.startswith('bertfast.')))")
    result = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "bertfast")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    below = ["bertfast.atomic", "bertfast.atomic_recovery", "bertfast.checkpoint", "bertfast.hub"]
    assert result.stdout.strip() == str(below)


# remap_state_dict, one rule per row: (checkpoint keys, bert_prefix, tie_word_embeddings) -> {new key: checkpoint key}
REMAP_CASES = {
    "prefixed_kept": (["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight"],
                      True, True, {"bert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
                                   "bert.encoder.layer.0.output.dense.weight":
                                       "bert.encoder.layer.0.output.dense.weight"}),
    "prefix_added": (["embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.weight"], True, True,
                     {"bert.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
                      "bert.encoder.layer.0.output.dense.weight": "encoder.layer.0.output.dense.weight"}),
    "prefix_stripped": (["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight"],
                        False, True, {"embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
                                      "encoder.layer.0.output.dense.weight":
                                          "bert.encoder.layer.0.output.dense.weight"}),
    "bare_kept": (["embeddings.word_embeddings.weight"], False, True,
                  {"embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight"}),
    "heads_never_nested": (["cls.seq_relationship.weight", "cls.predictions.transform.dense.weight"], True, True,
                           {"cls.seq_relationship.weight": "cls.seq_relationship.weight",
                            "cls.predictions.transform.dense.weight": "cls.predictions.transform.dense.weight"}),
    "heads_kept_without_prefix": (["cls.seq_relationship.bias"], False, True,
                                  {"cls.seq_relationship.bias": "cls.seq_relationship.bias"}),
    "task_heads_never_nested": (["classifier.weight", "qa_outputs.bias"], True, True,
                                {"classifier.weight": "classifier.weight", "qa_outputs.bias": "qa_outputs.bias"}),
    "task_heads_kept_without_prefix": (["classifier.bias"], False, True, {"classifier.bias": "classifier.bias"}),
    "legacy_gamma_beta": (["bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.beta",
                           "cls.predictions.transform.LayerNorm.gamma"], True, True,
                          {"bert.embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.gamma",
                           "bert.embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.beta",
                           "cls.predictions.transform.LayerNorm.weight": "cls.predictions.transform.LayerNorm.gamma"}),
    "legacy_gamma_prefix_stripped": (["bert.encoder.layer.1.output.LayerNorm.gamma"], False, True,
                                     {"encoder.layer.1.output.LayerNorm.weight":
                                          "bert.encoder.layer.1.output.LayerNorm.gamma"}),
    "buffers_dropped": (["bert.embeddings.position_ids", "bert.embeddings.token_type_ids", "bert." + WORD], True,
                        True, {"bert." + WORD: "bert." + WORD}),
    "buffers_dropped_without_prefix": (["embeddings.position_ids", "bert.embeddings.token_type_ids"], False, True,
                                       {}),
    "tied_decoder_dropped": (["bert." + WORD, DECODER], True, True, {"bert." + WORD: "bert." + WORD}),
    "tied_decoder_dropped_without_prefix": (["bert." + WORD, DECODER], False, True, {WORD: "bert." + WORD}),
    "tied_decoder_without_embeddings": ([DECODER], True, True, {}),
    "untied_decoder_kept": (["bert." + WORD, DECODER], True, False,
                            {"bert." + WORD: "bert." + WORD, DECODER: DECODER}),
    "decoder_bias_renamed": (["cls.predictions.decoder.bias"], True, True,
                             {"cls.predictions.bias": "cls.predictions.decoder.bias"}),
    "decoder_bias_renamed_untied": (["cls.predictions.decoder.bias"], False, False,
                                    {"cls.predictions.bias": "cls.predictions.decoder.bias"}),
    "bias_wins_over_decoder_bias": (["cls.predictions.decoder.bias", "cls.predictions.bias"], True, True,
                                    {"cls.predictions.bias": "cls.predictions.bias"}),
    "pooler_prefix_stripped": (["bert.pooler.dense.weight", "bert.pooler.dense.bias"], False, True,
                               {"pooler.dense.weight": "bert.pooler.dense.weight",
                                "pooler.dense.bias": "bert.pooler.dense.bias"}),
    "pooler_prefix_added": (["pooler.dense.weight"], True, True, {"bert.pooler.dense.weight": "pooler.dense.weight"}),
    "pooler_absent_not_invented": (["encoder.layer.0.output.dense.bias"], True, True,
                                   {"bert.encoder.layer.0.output.dense.bias": "encoder.layer.0.output.dense.bias"}),
}


@pytest.mark.parametrize("keys, bert_prefix, tie, expected", REMAP_CASES.values(), ids=REMAP_CASES.keys())
def test_remap_rules(keys, bert_prefix, tie, expected):
    state = {key: torch.zeros(2) for key in keys}  # equal values (a tied decoder matches), distinct objects
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, origin = remap_state_dict(state, nested=bert_prefix, tie_word_embeddings=tie)
    assert origin == expected
    assert set(out) == set(expected)
    assert all(out[key] is state[source] for key, source in origin.items()), "the tensors themselves, no copies"
    assert list(state) == keys, "the checkpoint's own state is left as it is"


@pytest.mark.parametrize("bert_prefix", [True, False])
@pytest.mark.parametrize("decoder, warns", [(torch.ones(4, 2), False), (torch.full((4, 2), 2.0), True),
                                            (torch.ones(5, 2), True)], ids=["equal", "different", "other_shape"])
def test_remap_warns_when_the_tied_decoder_differs_from_the_embeddings(bert_prefix, decoder, warns):
    embedding = ("bert." if bert_prefix else "") + WORD
    state = {"bert." + WORD: torch.ones(4, 2), DECODER: decoder}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = remap_state_dict(state, nested=bert_prefix, tie_word_embeddings=True)
    warning = ("the checkpoint's cls.predictions.decoder.weight differs from the word embeddings but "
               "config.tie_word_embeddings is true: the word embeddings are used (as transformers does)")
    assert [str(w.message) for w in caught] == ([warning] if warns else [])
    assert list(out) == [embedding]


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_remap_of_transformers_keys_gives_our_model_keys(cls):
    """transformers' BertForPreTraining state remapped for each class: all of its keys, and beyond them only
    the parts it does not have (heads, the pooler); none at all for BertForPreTraining."""
    hf_state = transformers.BertForPreTraining(transformers.BertConfig(**TINY)).state_dict()
    with torch.device("meta"):
        model = cls(bertfast.BertConfig(**TINY))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = remap_state_dict(hf_state, nested=bool(cls.base_model_prefix), tie_word_embeddings=True)
    ours = set(model.module_shapes())
    extra = set(out) - ours
    assert ours <= set(out), ours - set(out)
    if cls is bertfast.BertForPreTraining:
        assert extra == set()
    else:
        assert extra and all(key.startswith(("cls.", "bert.pooler.")) for key in extra), extra


def test_remap_joins_each_layers_query_key_value_into_the_fused_qkv():
    stem = "bert.encoder.layer.0.attention.self."
    state = {f"{stem}{part}.{kind}": torch.full((2, 3) if kind == "weight" else (2,), float(i))
             for i, part in enumerate(("query", "key", "value")) for kind in ("weight", "bias")}
    state["bert.encoder.layer.1.attention.self.query.weight"] = torch.zeros(2, 3)  # no key / value: left as it is
    out, origin = remap_state_dict(state, nested=True, tie_word_embeddings=True)
    assert torch.equal(out[f"{stem}qkv.weight"], torch.cat([torch.full((2, 3), float(i)) for i in range(3)]))
    assert torch.equal(out[f"{stem}qkv.bias"], torch.tensor([0., 0., 1., 1., 2., 2.]))
    assert origin[f"{stem}qkv.weight"] == f"{stem}query.weight + {stem}key.weight + {stem}value.weight"
    assert set(out) == {f"{stem}qkv.weight", f"{stem}qkv.bias", "bert.encoder.layer.1.attention.self.query.weight"}
    assert len(state) == 7, "the checkpoint's own state is left as it is"
    state[f"{stem}key.weight"] = torch.zeros(4, 3)
    with pytest.raises(bertfast.CheckpointError, match=r"key.weight, .*value.weight have different shapes"):
        remap_state_dict(state, nested=True, tie_word_embeddings=True)
