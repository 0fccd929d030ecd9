"""How every command ends: one line on stderr and an exit code, never a traceback (unless --debug).

Exit codes: 0 done; 1 the run failed (a run that diverged or crashed, a full disk, an error nobody
foresaw); 2 bad input (a file or a flag: `ConfigError`, `ValueError`, argparse's own errors); 130
interrupted (the same command resumes). `--debug` anywhere on the command line (or REGMIX_DEBUG=1)
prints the traceback too. Every module's `__main__` block is `raise SystemExit(run_command(main))`.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import traceback
from typing import Any, Callable, Sequence

from regmix.core.files import ConfigError
from regmix.core.schema import is_file_tag

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: <prog>: <problem>`) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(BAD_INPUT, f"error: {self.prog}: {message} (see --help)\n")


def integer_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (and <= maximum: counts beyond any machine's memory are a typo,
    better refused by name than met as a MemoryError); argparse names the flag in its error."""
    wanted = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum:,}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {wanted}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {wanted}, got {text}")
        return value
    return parse


def number_above(minimum: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number > minimum (>= with `inclusive`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if inclusive else '>'} {minimum}, "
                                             f"got {text}")
        return value
    return parse


def share(include_one: bool = False) -> Callable[[str], float]:
    """An argparse type: a share of a whole, in (0, 1) (or (0, 1] with `include_one`)."""
    interval = f"(0, 1{']' if include_one else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        if not (0.0 < value < 1.0 or (include_one and value == 1.0)):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text}")
        return value
    return parse


def file_tag(text: str) -> str:
    """An argparse type: a part of a file name (letters, digits, `_`, `.`, `-`), so the CSVs land where expected."""
    if not is_file_tag(text):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be part of a file name: use letters, digits, _ . -")
    return text


def torch_device(text: str) -> str:
    """An argparse type: a torch device this machine has (`cuda` without a GPU is refused here, not mid-run)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch sees no CUDA GPU here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPUs")
    return text


def add_dry_run_argument(parser: argparse.ArgumentParser) -> None:
    """--dry-run, the same on every command that trains: `regmix validate`'s checks and plan, nothing trained."""
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything and print what would train (runs, tokens, model, the time here from "
                             "two timed steps), training and writing nothing (as `regmix validate`)")


class RunFailed(RuntimeError):
    """The command ran but its work did not finish (e.g. some runs of a sweep failed): exit code 1."""


def run_command(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Call main(argv) and turn how it ended into an exit code and at most one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REGMIX_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["REGMIX_DEBUG"] = "1"  # deeper layers (a sweep's failure summary) keep their tracebacks
    try:
        result = main(argv)
    except SystemExit as exc:  # argparse (--help: 0, a bad flag: 2, its message already printed)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        _say(str(exc.code))
        return BAD_INPUT
    except KeyboardInterrupt:
        _say("interrupted: run the same command again to resume")
        return INTERRUPTED
    except (ConfigError, ValueError) as exc:
        return _fail(BAD_INPUT, f"error: {exc}", debug)
    except RunFailed as exc:
        return _fail(FAILED, f"error: {exc}", debug)
    except OSError as exc:
        return _fail(FAILED, f"error: {describe_os_error(exc)}", debug)
    except Exception as exc:  # a bug: still one line, and how to see more
        return _fail(FAILED, f"error: internal error {type(exc).__name__}: {exc} (--debug shows the traceback)",
                     debug)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def describe_os_error(exc: OSError) -> str:
    """`<file>: <reason>` for a failed read or write (a full disk says so and that nothing finished is lost)."""
    where = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason += " (the disk is full; finished files are intact: free space and run the same command again)"
    return f"{where}: {reason}"


def _fail(code: int, message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    _say(message)
    return code


def _say(message: str) -> None:
    print(" ".join(line.strip() for line in message.splitlines()), file=sys.stderr, flush=True)
