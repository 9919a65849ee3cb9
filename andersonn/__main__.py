"""``python -m andersonn`` (and ``torchrun -m andersonn``) runs the command-line interface."""

import sys

from andersonn.cli import main

sys.exit(main())
