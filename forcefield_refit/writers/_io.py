"""Atomic, no-clobber output shared by every writer."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from forcefield_refit.exceptions import RefitInputError

logger = logging.getLogger(__name__)


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Parameters
    ----------
    path : str or PathLike
        Destination file.
    text : str
        Full file contents.
    overwrite : bool
        Replace an existing file; without it an existing ``path`` is an error.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    RefitInputError
        If ``path`` exists and ``overwrite`` is false, or its folder does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "x\\n")
    >>> out.read_text()
    'x\\n'
    """
    return atomic_write_with(path, lambda tmp: tmp.write_text(text), overwrite)


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """``path`` as a Path after checking it may be written (no clobber unless ``overwrite``, folder exists).

    Raises
    ------
    RefitInputError
        If ``path`` exists and ``overwrite`` is false, or its folder does not exist.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise RefitInputError(
            f"path={str(target)!r} exists; allowed: a new file, or overwrite=True to replace it. "
            "Hint: choose another output name or pass overwrite=True."
        )
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise RefitInputError(
            f"path={str(target)!r}: folder {str(folder)!r} does not exist; allowed: a path in an existing "
            "folder. Hint: create the output folder first."
        )
    return target


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Let ``write(tmp)`` create a temporary file next to ``path``, then ``os.replace`` it onto ``path``.

    For files written by other libraries (ParmEd). Same checks as :func:`atomic_write_text`.
    """
    target = check_writable(path, overwrite)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s", target)
    return target
