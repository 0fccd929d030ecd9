"""Reading and writing the project's files: one error type that names the file, atomic writes.

Every input file problem becomes a `ConfigError` whose message starts with the file, and every file
the project writes is written whole or not at all, so a crash never leaves half a result behind.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no Python objects, so an untrusted file runs nothing) with YAML 1.2's
    floats: `800e9` and `1e-3` are numbers, not strings (YAML 1.1
    wants a dot and a signed exponent, so `800e9` silently became the text "800e9")."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `choices` to a misspelled `name`, or "" when none is close.
    Compared in lower case (`smollm2-153m` is close to `SmolLM2-135M`), suggested as spelled in `choices`."""
    spelled = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(spelled), n=1, cutoff=0.6)
    return f" (did you mean {spelled[close[0]]!r}?)" if close else ""


class ConfigError(ValueError):
    """A bad input file. The message starts with the file so the user knows what to fix."""

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self) -> tuple:
        """Pickled as its two parts: an error raised in a worker process (a sweep's, a bench's) reaches the parent."""
        return type(self), (self.source, self.problem)


@contextmanager
def noting(problems: list[ConfigError], source: str | os.PathLike) -> Iterator[None]:
    """Run a check, keeping its error in `problems` instead of stopping (a bare ValueError as one naming `source`):
    `regmix validate` lists every problem of an experiment, not only the first one a run would stop at."""
    try:
        yield
    except ConfigError as exc:
        problems.append(exc)
    except ValueError as exc:
        problems.append(ConfigError(source, str(exc)))


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML or JSON file, turning every failure into one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None


def check_output_folder(path: str | os.PathLike) -> Path:
    """A folder a command will write into: refused at once when a file is in its way (not halfway through)."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(folder, f"is a file, but {path} should be a folder to write into")
            break
    return path


def check_outputs(outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike]) -> None:
    """Files a command will write, by flag, against what it reads, by flag: an output must be a plain file (or
    not exist yet), not one of the inputs, not inside an input folder and not another output. Checked before any
    work, so a mistyped flag never destroys what was computed."""
    seen: dict[Path, str] = {}
    for flag, output in outputs.items():
        path = Path(output)
        if path.exists() and not path.is_file():
            raise ConfigError(path, f"{flag}: not a plain file (a folder, device or pipe); name a file to write")
        check_output_folder(path.parent)
        resolved = path.resolve()
        if resolved in seen:
            raise ConfigError(path, f"{flag} is also {seen[resolved]}; give each output its own file")
        seen[resolved] = flag
        for source_flag, source in inputs.items():
            source = Path(source).resolve()
            if resolved == source or (source.is_dir() and source in resolved.parents):
                where = "is" if resolved == source else "is inside"
                raise ConfigError(path, f"{flag} {where} the input {source_flag}; writing it would destroy what "
                                        "that input holds: name another file")


def read_json_in(path: str | os.PathLike, file_name: str, missing: str) -> tuple[Path, Any]:
    """Parse a JSON file given by its path or by the folder holding it as `file_name`."""
    path = Path(path)
    if path.is_dir():
        path = path / file_name
    if not path.exists():
        raise ConfigError(path, missing)
    return path, read_yaml(path)


_HOST = socket.gethostname().replace(".", "_")
_UMASK = os.umask(0)
os.umask(_UMASK)


def replace_atomic(path: str | os.PathLike, write: Any) -> None:
    """Call `write(temporary path)`, then rename it over `path`: readers see the old file or the new one. A
    failed write names `path` (a full disk's own error names no file, or the temporary one)."""
    path = Path(path)
    tmp = temporary_file(path)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; others on a shared sweep read them too
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename not in (None, tmp):  # about another file (a source read while writing, say)
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_file(path: str | os.PathLike) -> Path:
    """A new empty temporary file next to `path` (its folder made), to be renamed over it; the temporaries of
    `path` that killed writers on this machine left behind are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of `path` left by killed writers on this machine (a SIGKILL leaves them behind). Those of
    live processes, or of other machines sharing the folder, are theirs: left alone."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(_HOST)}.*.tmp"):
        pid = stale.name[len(f".{path.name}.{_HOST}."):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_files(contents: Mapping[str | os.PathLike, bytes]) -> None:
    """Write files whole and together: each to a temporary file next to it and onto the disk (fsync), and only
    once all are written are they renamed over the old ones, so a full disk or a kill while writing leaves every
    old file as it was (a kill between two renames aside)."""
    items = list(contents.items())

    def write(index: int) -> None:
        path, data = items[index]

        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if index + 1 < len(items):
                write(index + 1)  # the next file's temporary file, before this one is renamed

        replace_atomic(path, fill)

    if items:
        write(0)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file via a temporary file, on disk before the rename: a crash cannot leave it empty."""
    write_files({path: data})


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary file, on disk before the rename."""
    write_bytes_atomic(path, text.encode("utf-8"))
