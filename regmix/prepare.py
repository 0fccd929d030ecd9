"""`python -m regmix.prepare`: tokenize a corpus into shards and a manifest (regmix.data.prepare)."""

from regmix.cli import run_command
from regmix.data.prepare import main

if __name__ == "__main__":
    raise SystemExit(run_command(main))
