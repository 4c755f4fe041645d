"""Writes the texts int8 is calibrated and judged on (none written on this project):

    python -m benchmarks.make_int8_texts

- ``bertfast/data/calibration.txt`` (shipped in the package): CALIBRATION_LINES lines of the default bench corpus
  (benchmarks/data/license-corpus.txt, Debian's license texts) of mixed lengths, and SHORT_LINES fragments of one
  and two words cut from them. ``bertfast.quantize`` runs the float32 model on them once to measure each int8
  layer's input range per channel (bertfast.cpu.int8).
- ``benchmarks/data/heldout-texts.txt``: texts of another source and kind, for the int8 accuracy figures and tests:
  Debian's package descriptions (this system's /var/lib/dpkg/status: the one-line synopses, the paragraphs of the
  long descriptions, the first word and the first two words of each synopsis), and HAND_WORDS. See
  benchmarks/data/heldout-texts.SOURCE.md.
"""
from __future__ import annotations

import argparse
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "license-corpus.txt")
CALIBRATION_OUT = os.path.join(os.path.dirname(HERE), "bertfast", "data", "calibration.txt")
HELDOUT_OUT = os.path.join(HERE, "data", "heldout-texts.txt")
DPKG_STATUS = "/var/lib/dpkg/status"
CALIBRATION_LINES, SHORT_LINES = 48, 16
MAX_CALIBRATION_WORDS = 120
HAND_WORDS = ("ok", "yes", "no")  # the worst text ("ok") and its kin: the only words typed here
SYNOPSES, PARAGRAPHS, FRAGMENTS = 200, 250, 150


def calibration_lines(corpus: list[str], seed: int = 0) -> list[str]:
    """CALIBRATION_LINES corpus lines of up to MAX_CALIBRATION_WORDS words, then SHORT_LINES one- or two-word
    beginnings of other lines (seeded)."""
    rng = random.Random(seed)
    pool = [line for line in corpus if len(line.split()) <= MAX_CALIBRATION_WORDS]
    lines = rng.sample(pool, CALIBRATION_LINES)
    pool = [line for line in pool if re.match(r"[a-zA-Z]", line)]
    short = [" ".join(line.split()[:1 + i % 2]).strip(".,;:()") for i, line in enumerate(rng.sample(pool, SHORT_LINES))]
    return lines + [s for s in short if re.search(r"[a-zA-Z]", s)]


def descriptions(status: str) -> tuple[list[str], list[str]]:
    """(synopses, long-description paragraphs) of a dpkg status file, each once, in file order."""
    synopses, paragraphs = {}, {}
    for block in status.split("\n\n"):
        found = re.search(r"^Description: (.*)\n((?: .*\n?)*)", block, re.M)
        if not found:
            continue
        synopses.setdefault(found.group(1).strip(), None)
        for part in re.split(r"\n \.\n", found.group(2)):
            text = " ".join(line.strip() for line in part.splitlines() if line.strip() not in ("", "."))
            if len(text.split()) >= 3:
                paragraphs.setdefault(text, None)
    return list(synopses), list(paragraphs)


def heldout_lines(status: str, seed: int = 0) -> list[str]:
    """HAND_WORDS, FRAGMENTS one- and two-word synopsis beginnings, SYNOPSES synopses, PARAGRAPHS paragraphs."""
    rng = random.Random(seed)
    synopses, paragraphs = descriptions(status)
    fragments = list(dict.fromkeys(" ".join(s.split()[:n]) for s in synopses for n in (1, 2) if len(s.split()) >= n))
    picked = (rng.sample(fragments, FRAGMENTS) + rng.sample(synopses, SYNOPSES) + rng.sample(paragraphs, PARAGRAPHS))
    return list(dict.fromkeys([*HAND_WORDS, *picked]))


def write(path: str, lines: list[str]) -> None:
    """``lines`` to ``path`` through one rename (a crash leaves the old file)."""
    from bertfast.atomic import replacing_file

    with replacing_file(path) as new, open(new, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    print(f"wrote {len(lines)} texts to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_int8_texts")
    parser.add_argument("--status", default=DPKG_STATUS, help="a dpkg status file (default: %(default)s)")
    args = parser.parse_args()
    with open(CORPUS, encoding="utf-8") as f:
        write(CALIBRATION_OUT, calibration_lines([line.strip() for line in f if line.strip()]))
    with open(args.status, encoding="utf-8") as f:
        write(HELDOUT_OUT, heldout_lines(f.read()))


if __name__ == "__main__":
    main()
