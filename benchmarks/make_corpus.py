"""Writes benchmarks/data/license-corpus.txt, the default corpus of ``bertfast bench --task sentence-embedding``.

    python -m benchmarks.make_corpus [--out benchmarks/data/license-corpus.txt]

The texts are the license documents Debian ships in /usr/share/common-licenses/ and the license prose of the
packages' /usr/share/doc/*/copyright files (none written on this project; see benchmarks/data/license-corpus.SOURCE.md);
from the copyright files, only the bodies of License: fields, without lines naming people (copyright lines, e-mail and
web addresses).
They are cut into paragraphs (blank-line separated, re-flowed onto one line) and
each paragraph into sentences: every paragraph and every sentence of it is one line, in document order,
duplicates dropped, kept when it has MIN_WORDS to MAX_WORDS words (about 5 to 400 tokens), until the file would
pass MAX_BYTES.
"""
from __future__ import annotations

import argparse
import glob
import os
import re

LICENSES = ("GPL-3", "GPL-2", "GPL-1", "LGPL-3", "LGPL-2.1", "LGPL-2", "Apache-2.0", "MPL-2.0", "MPL-1.1",
            "GFDL-1.3", "GFDL-1.2", "Artistic", "CC0-1.0")
SOURCE_DIR = "/usr/share/common-licenses"
MIN_WORDS, MAX_WORDS = 3, 300
MAX_BYTES = 1_400_000  # the shipped file stays small
SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+(?=[A-Z(\"'])")
COPYRIGHT_FILES = "/usr/share/doc/*/copyright"
PROSE = re.compile(r"\b(the|of|to|and|or|is|be|this|you|any)\b", re.IGNORECASE)  # a text says something
NAMES_SOMEONE = re.compile(r"copyright|\(c\)|©|@|https?:|www\.", re.IGNORECASE)
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "data", "license-corpus.txt")


def license_prose(copyright_file: str) -> str:
    """The bodies of a Debian (DEP-5) copyright file's License: fields, their " ." lines as blank lines, without
    lines naming people; "" for a file in another format."""
    kept, in_license = [], False
    for line in copyright_file.splitlines():
        if not line.startswith((" ", "\t")):
            in_license = line.startswith("License:")
            kept.append("")
        elif in_license:
            kept.append("" if line.strip() == "." or NAMES_SOMEONE.search(line) else line)
    return "\n".join(kept)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each on one line (whitespace runs -> one space)."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def corpus_lines(texts: list[str]) -> list[str]:
    """Every paragraph, then its sentences (when it has more than one), each once, within the word bounds."""
    seen: dict[str, None] = {}
    for text in texts:
        for paragraph in paragraphs(text):
            sentences = SENTENCE_END.split(paragraph)
            for line in [paragraph] + (sentences if len(sentences) > 1 else []):
                if MIN_WORDS <= len(line.split()) <= MAX_WORDS and PROSE.search(line):
                    seen.setdefault(line, None)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_corpus")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    texts = []
    for name in LICENSES:
        with open(os.path.join(SOURCE_DIR, name), encoding="utf-8") as f:
            texts.append(f.read())
    for path in sorted(glob.glob(COPYRIGHT_FILES)):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(license_prose(f.read()))
    lines, size = [], 0
    for line in corpus_lines(texts):
        size += len(line.encode()) + 1
        if size > MAX_BYTES:
            break
        lines.append(line)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} texts to {args.out}")


if __name__ == "__main__":
    main()
