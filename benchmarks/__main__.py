"""``python -m benchmarks``: the comparative benchmark of ``bertfast bench`` (bertfast/bench/runner.py)."""
from bertfast.bench.runner import main

raise SystemExit(main())
