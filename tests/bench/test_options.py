"""bertfast/bench/options.py: the help of ``bertfast bench`` and its answers to bad arguments."""
from __future__ import annotations

import pytest

from bertfast.cli import main as bertfast_main


def test_bench_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bertfast_main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--quick" in help_text and "--providers" in help_text
    with pytest.raises(SystemExit) as exit_info:
        bertfast_main(["bench", "--batch", "-1"])
    assert exit_info.value.code == 2 and "--batch: must be a positive integer, got -1" in capsys.readouterr().err
    assert bertfast_main(["bench", "--providers", "bertfast-torch,nope"]) == 1
    assert "unknown provider(s) ['nope']; known providers: bertfast-torch" in capsys.readouterr().err
    assert bertfast_main(["bench", "--device", "cpu", "--seq", "600"]) == 1
    assert "--seq [600] is longer than the model's max_position_embeddings (512)" in capsys.readouterr().err
    assert bertfast_main(["bench", "--device", "cpu", "--model", "/no/such/dir"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert bertfast_main(["bench", "--dtype", "float64"]) == 1
    assert "unsupported dtype 'float64'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bertfast_main(["bench", "--task", "fill-mask"])
    assert exit_info.value.code == 2 and "--task: invalid choice: 'fill-mask'" in capsys.readouterr().err


def test_help_quotes_the_defaults_settings_apply(capsys):
    with pytest.raises(SystemExit):
        bertfast_main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the option help
    assert "defaults: --batch 1 8 32 --seq 32 128 512," in help_text
    assert "float32 on CPU, float16 and bfloat16 on CUDA" in help_text
    assert "--quick: --batch 4 --seq 128, --warmup 0, 5 timed calls per case (at least 5, past 2 s if need be)" \
        in help_text and "--full (the default) runs every provider on the whole grid" in help_text
    assert "after the parity check (default 3; 0 with --quick)" in help_text
    assert "most timed calls per case (default 30; 5 with --quick)" in help_text
    assert "once 3 calls are timed (default 10; 2 with --quick)" in help_text
    assert "resident at once (default: off, --quick too)" in help_text and "(default: ./bertfast-results)" in help_text
    assert "--task {feature-extraction,text-classification,token-classification,question-answering,multiple-choice,sentence-embedding}" \
        in help_text and "(default: feature-extraction)" in help_text
