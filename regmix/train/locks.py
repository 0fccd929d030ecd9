"""Run locks: a worker holds an exclusive flock on `<run>/lock` while it trains the run.

The kernel drops the lock when its holder dies, so a crashed worker leaves no stale lock behind
(on NFS the client maps flock to locks the server arbitrates between machines).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from regmix.core.files import ConfigError


def acquire_lock(path: Path) -> int | None:
    """The lock's descriptor, or None if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:  # never through a symbolic link: the pid would be written into whatever it points at
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise ConfigError(path, "is a symbolic link; a run's lock is a plain file: remove the link") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)  # its holder released and removed it between our open and flock: take the new one


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order, so nobody locks a removed file)."""
    path.unlink(missing_ok=True)
    os.close(fd)


def lock_holder(path: Path) -> str:
    """`pid host` of the process holding the lock, as it wrote it ("?" if unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
