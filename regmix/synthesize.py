"""`python -m regmix.synthesize`: random proxy mixtures from the corpus' prior (regmix.search.synthesize)."""

from regmix.cli import run_command
from regmix.search.synthesize import main

if __name__ == "__main__":
    raise SystemExit(run_command(main))
