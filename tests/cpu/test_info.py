"""bertfast.cpu: the CPU read at run time, and its dtype rules: bfloat16 parity on the CPU (error vs transformers
float32 within 2x transformers' own bf16 error), the warnings where the CPU lacks bf16 hardware and for float16."""
from __future__ import annotations

import warnings

import pytest
import torch

import bertfast
import bertfast.cpu.info as cpu
from tests.helpers import TINY, hf_pretraining_model, padded_batch


def test_cpuinfo_is_parsed(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
                    "\nprocessor\t: 1\nmodel name\t: other\nflags\t: fpu\n")
    name, flags = cpu._read_cpuinfo(str(path))
    assert name == "Example CPU 9000" and {"avx2", "avx512_bf16", "amx_tile"} <= flags and "avx512_vnni" not in flags
    assert cpu._read_cpuinfo(str(tmp_path / "missing")) == ("", set())
    info = cpu.CpuInfo("Example", frozenset({"avx512_bf16", "avx512_vnni"}), "AVX512")
    assert info.native_bf16 and info.vnni and "has avx512_vnni avx512_bf16" in info.describe()
    assert not cpu.CpuInfo("x", frozenset({"avx2"}), "AVX2").native_bf16


def test_this_machine_is_described():
    info = cpu.cpu_info()
    assert info.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert info.flags <= set(cpu.FEATURES) and info.name


@pytest.mark.parametrize("flags, warns", [(frozenset({"avx2"}), True), (frozenset({"avx512_bf16"}), False),
                                          (frozenset({"amx_bf16"}), False)])
def test_bfloat16_warns_without_bf16_hardware(monkeypatch, tiny_checkpoint, flags, warns):
    monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("Test CPU", flags, "AVX2"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = bertfast.BertModel.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    slow = [w for w in caught if "will be slow" in str(w.message)]
    assert bool(slow) == warns and model.dtype == torch.bfloat16


def test_float16_on_the_cpu_warns(tiny_checkpoint):
    with pytest.warns(UserWarning, match="float16 on the CPU is slow.*bfloat16"):
        model = bertfast.BertModel.from_pretrained(tiny_checkpoint, dtype="float16")
    assert model.dtype == torch.float16


@pytest.mark.parametrize("padding_free", [True, False])
def test_bfloat16_error_within_twice_transformers_own(padding_free):
    config = {**TINY, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}
    hf = hf_pretraining_model(**config).bert
    batch = padded_batch(TINY["vocab_size"], [33, 20, 7])
    real = batch["attention_mask"].bool()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = bertfast.BertModel.from_hf(hf).to(torch.bfloat16)
    ours.padding_free = padding_free
    with torch.no_grad():
        reference = hf(**batch).last_hidden_state[real]
        hf_error = (hf.to(torch.bfloat16)(**batch).last_hidden_state[real].float() - reference).abs().max()
        ours_error = (ours(**batch).last_hidden_state[real].float() - reference).abs().max()
    assert 0 < hf_error and ours_error <= 2 * hf_error, (ours_error, hf_error)
