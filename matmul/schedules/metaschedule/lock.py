"""One tuning process per profile database at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .database import DatabaseError

#: The lock file of a profile's database folder; it holds the pid of the tuning process.
LOCK_FILE = ".lock"
_HELD: set[Path] = set()


@contextlib.contextmanager
def profile_lock(pdir: Path):
    """Hold a profile folder for one tuning process; another one is refused at once, with who holds it.

    Two processes tuning one profile would share its staging folder, merge each other's records into the
    ledger and delete each other's runs. The lock is an OS file lock, so a killed process releases it.
    """
    pdir = Path(pdir).resolve()
    if pdir in _HELD:  # re-entered by this process
        yield
        return
    pdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(pdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DatabaseError(f"another tuning process (pid {holder}) is tuning {pdir}; wait for it to finish, "
                                "or tune into another --root") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(pdir)
        try:
            yield
        finally:
            _HELD.discard(pdir)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "profile_lock"]
