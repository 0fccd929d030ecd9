"""Bad input, checked the same way at every stage: the command's exit code, one line on stderr naming the file or
flag, no traceback, and nothing already computed changed. The tables of bad inputs live by stage in
tests/test_bad_input_<stage>.py (corpus, configs, results, training); this module holds the check."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

from regmix.cli import run_command


def folder_hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders (or of the files themselves), by path."""
    out = {}
    for folder in folders:
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        out |= {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return out


def check_bad_input(main: Callable[[list[str]], Any], argv: Sequence[str], capsys: Any, *, names: Sequence[str],
                    code: int = 2, watched: Sequence[Path] = ()) -> str:
    """Run a command's main through regmix.cli.run_command as `python -m ...` would; its stderr."""
    before = folder_hashes(*watched)
    capsys.readouterr()
    rc = run_command(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert rc == code, f"exit code {rc}, expected {code}; stderr: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert any(str(n) in lines[0] for n in names), f"stderr does not name any of {names}: {lines[0]}"
    assert folder_hashes(*watched) == before, "a bad input changed files already computed"
    return lines[0]


def test_the_tables_cover_every_stage():
    """The bad inputs live by stage in tests/test_bad_input_<stage>.py; together they must span every command."""
    import test_bad_input_configs as configs
    import test_bad_input_corpus as corpus
    import test_bad_input_results as results
    import test_bad_input_training as training

    tables = {"prepare and the corpus": corpus.PREPARE_CASES + corpus.VERIFY_CASES + corpus.CORPUS_CASES,
              "synthesize, configs, experiments, pretrain": configs.CASES + configs.RESUMES,
              "collect, fit, simulate": results.CASES,
              "train_proxy, pipeline, search, transfer, online": training.CASES}
    assert all(len(cases) >= 15 for cases in tables.values()), {k: len(v) for k, v in tables.items()}
    assert sum(len(cases) for cases in tables.values()) >= 60
