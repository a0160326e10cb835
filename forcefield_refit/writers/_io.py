"""Atomic, no-clobber text output shared by every writer."""

from __future__ import annotations

import logging
import os
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("wrote %s", target)
    return target
