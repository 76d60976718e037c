"""Files written whole or not at all, and kernel locks: what every writer of results uses.

Imports no torch, timm or pandas.
"""

from __future__ import annotations

import fcntl
import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from timm_scaling.errors import UserError


def file_mode() -> int:
    """The mode a new file gets from the umask (0644 under umask 0022), as ``open`` gives it."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def umask_mode(folder: str | os.PathLike) -> None:
    """Give every file in ``folder`` the umask's mode (safetensors writes 0600, as mkstemp)."""
    mode = file_mode()
    for path in Path(folder).iterdir():
        if path.is_file():
            path.chmod(mode)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write, renamed over ``path`` when the block ends
    (deleted if it raises): readers never see half a file. It has the umask's mode, not
    mkstemp's owner-only 0600, so collaborators can read the results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}-{os.getpid()}"
    _clear_dead_writers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{owner}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clear_dead_writers(path: Path) -> None:
    """Remove the temporary files of ``path`` that a writer on this host left when it was
    killed (its pid is gone); another host's, and a live writer's, stay."""
    host = socket.gethostname()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(host)}-*.tmp"):
        pid = stale.name[len(f".{path.name}.{host}-") :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def clear_stale_lock(path: Path) -> None:
    """Remove the lock file ``path`` that no process holds (taken and let go, as holders do)."""
    if path.is_file():
        try:
            with locked(path, wait=False):
                pass
        except Busy:
            pass


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`), synced to disk."""
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class Busy(UserError):
    """Another process holds the lock asked for without waiting."""


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold the kernel lock (flock) of the file ``path`` for the block; a killed holder frees
    it. With ``wait`` False, :class:`Busy` (naming the holder's pid) if another process holds it.
    The file goes when the block ends: a process that opened it just before is told by its inode
    and locks the new file instead."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            holder = path.read_text().strip() if path.exists() else ""
            raise Busy(f"pid {holder or '?'}") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def writers_lock(path: Path) -> Iterator[None]:
    """Serialise the writers of ``path`` (a hidden lock file beside it); once the lock is held,
    temporary files of ``path`` left by a writer killed mid-write are removed."""
    with locked(path.with_name(f".{path.name}.lock")):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        yield
