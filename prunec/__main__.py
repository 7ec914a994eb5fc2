"""`python -m prunec ...` is the `prunec` command."""
import sys

from .cli import main

sys.exit(main())
