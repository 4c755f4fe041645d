"""Our top-level `kernels` package shadows an unrelated PyPI package of that name: transformers must not care."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import bertfast

REPO = os.path.dirname(os.path.dirname(bertfast.__file__))


def test_transformers_imports_and_runs_with_our_kernels_package():
    code = textwrap.dedent("""
        import kernels, torch, transformers
        from transformers.utils import is_kernels_available
        assert kernels.__file__.startswith(%r), kernels.__file__
        assert not is_kernels_available(), "transformers mistook our kernels package for the hub-kernels one"
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=20)
        model = transformers.BertForMaskedLM(config).eval()
        print(tuple(model(input_ids=torch.ones(1, 5, dtype=torch.long)).logits.shape))
    """ % os.path.join(REPO, "kernels"))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 5, 50)")


def test_runtime_never_imports_transformers():
    code = "import sys, bertfast, bertfast.cli; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
