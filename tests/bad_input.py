"""The check every bad input must pass (tests/test_bad_input*.py): the command's exit code, one line on stderr
naming the file or flag, no traceback, and nothing already computed changed."""

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
