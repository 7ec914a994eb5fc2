"""`python -m prunec ...` is the `prunec` command."""
from .cli import run

run()
