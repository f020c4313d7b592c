"""``python -m lionsnb``: the same as the ``lionsnb`` command."""
import sys

from lionsnb.cli import main

sys.exit(main())
