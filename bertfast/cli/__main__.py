"""``python -m bertfast.cli``: the console script."""
import sys

from bertfast.cli import main

sys.exit(main())
