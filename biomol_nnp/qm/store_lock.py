"""An exclusive writer lock for a label store: a ``.lock`` file next to it holding host and PID.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). A lock
whose process no longer runs on this host is stale and is taken over with a warning; a lock held
by another host cannot be checked and is refused with the command to remove it.

>>> with StoreLock("labels.h5"):  # doctest: +SKIP
...     pass
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from biomol_nnp.exceptions import InputError

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StoreLock:
    """Exclusive lock on ``path`` through ``path + ".lock"``; re-entrant within one process.

    Parameters
    ----------
    path : str or os.PathLike
        The file to protect (the lock is ``<path>.lock``).

    Examples
    --------
    >>> lock = StoreLock("labels.h5")  # doctest: +SKIP
    >>> lock.acquire(); lock.release()  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(str(path) + ".lock")
        self._depth = 0
        self._owner = False

    def holder(self) -> dict[str, Any] | None:
        """Contents of the lock file (host, pid, time), or None when unlocked."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = {}
        return data if isinstance(data, dict) else {}

    def is_stale(self, holder: dict[str, Any]) -> bool:
        """Whether a lock was left by a process that no longer runs on this host."""
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return not isinstance(pid, int) or not _pid_alive(pid)

    def held_by_other(self) -> dict[str, Any] | None:
        """The holder when a live process other than this one holds the lock, else None."""
        holder = self.holder()
        if holder is None or self.is_stale(holder):
            return None
        if holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
            return None
        return holder

    def refuse_message(self, holder: dict[str, Any]) -> str:
        """Error text naming the holder and what to do."""
        return (
            f"label store {str(self.path)[:-5]!r} is being written by another job (PID {holder.get('pid')} on "
            f"{holder.get('host')!r} since {holder.get('time', '?')}); wait for it to finish or write to another "
            f"file. If that job is dead, remove {str(self.path)!r}"
        )

    def acquire(self) -> None:
        """Take the lock; raise :class:`InputError` when another live job holds it."""
        if self._depth:
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder() or {}
                if holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
                    self._owner = False  # this process already holds it through another StoreLock object
                    break
                if not self.is_stale(holder):
                    raise InputError(self.refuse_message(holder)) from None
                logger.warning("removing stale lock %s left by dead PID %s", self.path, holder.get("pid"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
            self._owner = True
            break
        else:  # pragma: no cover - another process won the race twice
            raise InputError(f"could not take the lock {str(self.path)!r}; another job is starting on it")
        self._depth = 1

    def release(self) -> None:
        """Release the lock (the file is removed when the outermost holder releases)."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._owner:
            self._owner = False
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
