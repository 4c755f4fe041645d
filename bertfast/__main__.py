import sys

from bertfast.cli import main

sys.exit(main())
