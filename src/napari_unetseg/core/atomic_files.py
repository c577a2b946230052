"""Atomic file writes: a temporary beside the target, renamed into place once complete.

Readers never see half a file, a failed write leaves the old file as it was, the new file
gets the permissions the umask gives (or keeps those of the file it replaces), and
temporaries left by killed saves are cleaned up by the next save of the same file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Temporary files of a save are named ``.{target}.{host}-{pid}.{random}.tmp``; the owner part
#: tells a later save whether the process that wrote one is gone (killed mid-save).
_TEMPORARY = re.compile(
    r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$"
)
#: Temporaries of earlier versions (``mkstemp``: eight random characters).
_OLD_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")
#: A temporary this old is left from a killed save even when its owner cannot be checked.
STALE_SECONDS = 6 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this host (POSIX only; elsewhere never sure)."""
    if os.name != "posix" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    return False


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by saves that were killed; returns what was removed.

    A temporary is stale when the process that wrote it (same host) is gone, or when it is
    older than :data:`STALE_SECONDS`. Saves in progress elsewhere are left alone.
    """
    removed: list[Path] = []
    host, now = _host(), time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(f".{path.name}.") and entry.name.endswith(".tmp")):
            continue
        ours = _TEMPORARY.match(entry.name)
        match = ours or _OLD_TEMPORARY.match(entry.name)
        if match is None or match.group("target") != path.name:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            gone = (
                ours is not None
                and ours.group("host") == host
                and int(ours.group("pid")) != os.getpid()
                and _process_gone(int(ours.group("pid")))
            )
            if gone or age > STALE_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # another save removed it first, or it is not ours to remove
    return removed


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def create_temporary(path: Path) -> Path:
    """A new, empty temporary file beside ``path``, named after its owner process."""
    while True:
        temporary = path.parent / f".{path.name}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        os.close(handle)
        return temporary


def _target_mode(path: Path) -> int:
    """The permissions of the file being replaced, or those the umask gives a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _set_mode(temporary: Path, mode: int) -> None:
    with contextlib.suppress(OSError):  # file systems without POSIX modes
        os.chmod(temporary, mode)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` then rename over ``path``: readers never see half a file.

    The file gets the permissions a new file has under the umask, or keeps those of the file
    it replaces. Temporaries left by killed saves of ``path`` are removed first.
    """
    atomic_write_many([(Path(path), write)])


def atomic_write_many(items: Sequence[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every file to a temporary name first, then rename them all into place.

    If any write fails, no target is touched and every temporary file is removed. The renames
    happen in the order given; a failure between them leaves the earlier targets replaced, so
    callers put the file that matters first (a weights file carries its own settings).
    """
    temporaries: list[Path] = []
    try:
        for path, write in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            temporary = create_temporary(path)
            temporaries.append(temporary)
            write(temporary)
            # Set after writing: some writers (safetensors) recreate the file they are given.
            _set_mode(temporary, _target_mode(path))
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        for temporary, (path, _) in zip(temporaries, items, strict=True):
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise
