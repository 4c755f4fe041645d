"""``python -m benchmarks.gpu_check``: see benchmarks/gpu_check/__init__.py."""
from benchmarks.gpu_check.check import main

raise SystemExit(main())
