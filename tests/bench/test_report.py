"""bertfast/bench/report.py: machine names in result file names."""
from __future__ import annotations

from bertfast.bench.report import slugify


def test_machine_slugs():
    assert slugify("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == "intel-xeon-gold-6248"
    assert slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slugify("AMD EPYC 7763 64-Core Processor") == "amd-epyc-7763-64-core-processor"
