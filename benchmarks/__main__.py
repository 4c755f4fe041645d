"""``python -m benchmarks``: the comparative benchmark (the same as ``bertfast bench``)."""
import sys

from benchmarks.runner import main

sys.exit(main())
