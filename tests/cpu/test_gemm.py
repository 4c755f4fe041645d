"""bertfast.cpu.gemm: the float32 CPU GEMM chosen by a one-time measurement per CPU and shape, kept in a cache
file (written atomically, a damaged one measured again), and PackedLinear's numbers. Which implementation wins is
this machine's business: nothing here assumes it."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

import bertfast
import bertfast.cpu.gemm as cpu_gemm
from bertfast.cpu.gemm import PackedLinear
from tests.helpers import HIDDEN_ATOL, TINY, assert_umask_modes, hf_pretraining_model, padded_batch

needs_onednn = pytest.mark.skipif(not cpu_gemm._onednn_available(), reason="this torch build has no oneDNN linear")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "cpu-gemm.json"
    monkeypatch.setenv("BERTFAST_CPU_CACHE", str(path))
    monkeypatch.delenv("BERTFAST_CPU_GEMM", raising=False)
    cpu_gemm.gemm_for.cache_clear()
    yield path
    cpu_gemm.gemm_for.cache_clear()


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = cpu_gemm.measure

    def measure(n, k):
        calls.append((n, k))
        return real(n, k)

    monkeypatch.setattr(cpu_gemm, "measure", measure)
    return calls


@needs_onednn
def test_measured_once_then_read_from_the_cache(fresh_cache, counted):
    first = cpu_gemm.gemm_for(48, 32)
    assert cpu_gemm.gemm_for(48, 32) == first and counted == [(48, 32)]
    cpu_gemm.gemm_for.cache_clear()  # a new process: the file answers
    assert cpu_gemm.gemm_for(48, 32) == first and counted == [(48, 32)]
    entry = json.loads(fresh_cache.read_text())[cpu_gemm.machine_key()]["48x32"]
    assert entry["choice"] == first == min(entry["seconds"], key=entry["seconds"].get)
    assert set(entry["seconds"]) == set(cpu_gemm.GEMMS)
    cpu_gemm.gemm_for(64, 32)  # another shape: measured, added beside the first
    assert counted == [(48, 32), (64, 32)] and set(json.loads(fresh_cache.read_text())[cpu_gemm.machine_key()]) == {
        "48x32", "64x32"}
    assert "48x32" in cpu_gemm.gemm_path()


@needs_onednn
@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"machine": 3}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(fresh_cache, counted, damage):
    fresh_cache.parent.mkdir()
    fresh_cache.write_text(damage)
    with pytest.warns(UserWarning, match="unreadable"):
        choice = cpu_gemm.gemm_for(48, 32)
    assert counted == [(48, 32)]
    assert json.loads(fresh_cache.read_text())[cpu_gemm.machine_key()]["48x32"]["choice"] == choice


@needs_onednn
def test_the_cache_is_written_atomically(fresh_cache, counted, monkeypatch):
    cpu_gemm.gemm_for(48, 32)
    before = fresh_cache.read_text()

    def broken_dump(data, f, **kwargs):
        f.write('{"half": ')
        raise OSError("disk full")

    monkeypatch.setattr(cpu_gemm.json, "dump", broken_dump)
    with pytest.warns(UserWarning, match="cannot write the CPU GEMM cache"):
        cpu_gemm.gemm_for(64, 32)
    assert fresh_cache.read_text() == before  # the old file, whole
    assert [p.name for p in fresh_cache.parent.iterdir()] == ["cpu-gemm.json"]  # no leftovers


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["022", "077"])
def test_the_cache_file_and_its_folder_get_the_umask_modes(fresh_cache, umask):
    for data in ({"machine": {}}, {"machine": {"48x32": {}}}):  # written, then replaced
        cpu_gemm._write_cache(str(fresh_cache), data)
        assert_umask_modes(fresh_cache.parent, umask)
    assert json.loads(fresh_cache.read_text()) == {"machine": {"48x32": {}}}


def test_forced_gemm(fresh_cache, counted, monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("BERTFAST_CPU_GEMM", "mkl")
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    assert type(model.encoder.layer[0].intermediate.dense) is torch.nn.Linear and counted == []
    assert "forced" in cpu_gemm.gemm_path()
    monkeypatch.setenv("BERTFAST_CPU_GEMM", "bogus")
    cpu_gemm.gemm_for.cache_clear()
    with pytest.raises(ValueError, match="BERTFAST_CPU_GEMM='bogus'"):
        bertfast.BertModel.from_pretrained(tiny_checkpoint)


@needs_onednn
@pytest.mark.parametrize("padding_free", [True, False])
def test_packed_model_keeps_transformers_parity(fresh_cache, monkeypatch, padding_free):
    monkeypatch.setenv("BERTFAST_CPU_GEMM", "onednn")
    hf = hf_pretraining_model(**{**TINY, "hidden_act": "gelu"})
    hf.save_pretrained(fresh_cache.parent / "ckpt")
    model = bertfast.BertForPreTraining.from_pretrained(fresh_cache.parent / "ckpt")
    model.bert.padding_free = padding_free
    assert type(model.bert.encoder.layer[0].intermediate.dense) is PackedLinear
    batch = padded_batch(TINY["vocab_size"], [13, 9, 2])
    real = batch["attention_mask"].bool()
    with torch.inference_mode():
        ours, theirs = model(**batch, output_hidden_states=True), hf(**batch, output_hidden_states=True)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a[real], b[real], atol=HIDDEN_ATOL, rtol=0)
    assert set(model.state_dict()) <= set(hf.state_dict())  # the same keys as transformers' (its buffers aside)


@needs_onednn
def test_packed_linear_follows_its_weight_and_trains_as_nn_linear():
    torch.manual_seed(0)
    plain = torch.nn.Linear(32, 48)
    packed = PackedLinear(32, 48)
    packed.load_state_dict(plain.state_dict())
    x = torch.randn(5, 7, 32)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), plain(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(packed.gelu(x, "tanh"), torch.nn.functional.gelu(plain(x), approximate="tanh"),
                                   atol=1e-5, rtol=0)
    with torch.no_grad():  # an in-place update (an optimizer step): the next call repacks
        packed.weight.mul_(2.0)
        plain.weight.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), plain(x), atol=1e-5, rtol=0)
    packed(x).sum().backward()  # with autograd: F.linear on the live weight, gradients as nn.Linear's
    plain(x).sum().backward()
    torch.testing.assert_close(packed.weight.grad, plain.weight.grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone = copy.deepcopy(packed)
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), plain(x), atol=1e-5, rtol=0)


def test_packed_linear_built_under_inference_mode_runs():
    """A model loaded inside torch.inference_mode has inference-tensor weights, which have no version counter."""
    torch.manual_seed(0)
    plain = torch.nn.Linear(16, 24)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        packed = PackedLinear(16, 24)
        packed.load_state_dict(plain.state_dict())
        assert packed.weight.is_inference()
        torch.testing.assert_close(packed(x), plain(x), atol=1e-5, rtol=0)
