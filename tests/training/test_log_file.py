"""``pretrain --log-file``: one JSON line per step, and a full disk there is one line, not a traceback."""
from __future__ import annotations

import errno
import json
import os

import pytest

from bertfast.cli import main
from bertfast.training.pretraining import DEMO_CORPUS
from bertfast.training.trainer import PretrainingArguments, run_pretraining
from tests.helpers import PRETRAIN_QUICK

FULL = "/dev/full"  # every write to it fails with ENOSPC: a real full disk, as the kernel reports one


def test_the_log_file_gets_one_json_line_per_step(tmp_path, small_vocab):
    log = tmp_path / "metrics.jsonl"
    run_pretraining(DEMO_CORPUS, tmp_path / "out", PretrainingArguments(**{**PRETRAIN_QUICK, "steps": 2},
                                                                        log_file=str(log)),
                    config="tiny", vocab=small_vocab)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["loss"] > 0 for line in lines)


@pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full on this system")
def test_a_full_disk_under_the_log_file_is_one_line(tmp_path, small_vocab, capsys):
    out = tmp_path / "out"
    with pytest.raises(OSError, match=r"^no space left for --log-file /dev/full at step 1: training stopped and no "
                                      r"checkpoint was written by this run; free some space there or point "
                                      r"--log-file elsewhere$") as caught:
        run_pretraining(DEMO_CORPUS, out, PretrainingArguments(**{**PRETRAIN_QUICK, "steps": 2}, log_file=FULL),
                        config="tiny", vocab=small_vocab)
    assert caught.value.errno == errno.ENOSPC
    assert main(["pretrain", "--corpus", DEMO_CORPUS, "--steps", "2", "--batch-size", "4", "--max-seq-length", "32",
                 "--config", "tiny", "--vocab", small_vocab, "--out", str(tmp_path / "cli"), "--log-file", FULL,
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == ("bertfast pretrain: error: no space left for --log-file /dev/full at step 1: training stopped and "
                   "no checkpoint was written by this run; free some space there or point --log-file elsewhere\n")
