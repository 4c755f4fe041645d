"""The CPU modes on the command line: --quantize int8 and --dtype on every inference command."""
from __future__ import annotations

import argparse
import json

import pytest

import bertfast
from bertfast.cli import build_parser, main

INFERENCE_COMMANDS = ("fill-mask", "nsp", "embed", "classify", "ner", "rerank", "qa")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", INFERENCE_COMMANDS)
def test_every_inference_command_takes_quantize_and_dtype(command):
    options = {o for a in _subparsers()[command]._actions for o in a.option_strings}
    assert {"--quantize", "--dtype"} <= options


def test_fill_mask_int8_runs_the_quantized_model(capsys, tiny_vocab_checkpoint):
    text = "The [MASK] sat on the mat."
    assert main(["fill-mask", text, "--model", tiny_vocab_checkpoint, "--quantize", "int8", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint, quantize="int8")(text)
    assert [p["token"] for p in got] == [p["token"] for p in expected]


def test_bad_quantize_mode_is_a_usage_error(capsys, tiny_vocab_checkpoint):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "a text", "--model", tiny_vocab_checkpoint, "--quantize", "int4"])
    assert exit_info.value.code == 2 and "int8" in capsys.readouterr().err


def test_int8_with_bfloat16_is_refused_with_a_message(capsys, tiny_vocab_checkpoint):
    code = main(["embed", "a text", "--model", tiny_vocab_checkpoint, "--quantize", "int8", "--dtype", "bfloat16"])
    assert code == 1 and "quantizes a float32 model" in capsys.readouterr().err
