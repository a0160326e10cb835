"""Atom-type naming between OpenMM ffxml files and Amber parameter files (the one place that maps them).

OpenMM's ``amber14-all.xml`` prefixes Amber atom types with the library they come from
(``protein-CX`` is Amber ``CX`` from ff14SB; ``DNA-``, ``RNA-`` and ``lipid17-`` likewise).
Amber frcmod files use the bare name (at most two characters).
"""

from __future__ import annotations

#: Prefixes used by OpenMM's amber14 ffxml files, tried in this order.
AMBER14_TYPE_PREFIXES: tuple[str, ...] = ("protein-", "DNA-", "RNA-", "lipid17-")

#: Prefix added by :func:`openmm_type_name` by default (ff14SB protein types).
DEFAULT_OPENMM_PREFIX = "protein-"


def amber_type_name(openmm_type: str) -> str:
    """Return the Amber atom-type name for an OpenMM amber14 atom type.

    Parameters
    ----------
    openmm_type : str
        OpenMM type name, e.g. ``"protein-CX"``; a bare Amber name is returned unchanged.

    Returns
    -------
    str
        Amber type name, e.g. ``"CX"``.

    Examples
    --------
    >>> amber_type_name("protein-CX")
    'CX'
    >>> amber_type_name("CX")
    'CX'
    """
    for prefix in AMBER14_TYPE_PREFIXES:
        if openmm_type.startswith(prefix):
            return openmm_type[len(prefix) :]
    return openmm_type


def openmm_type_name(amber_type: str, prefix: str = DEFAULT_OPENMM_PREFIX) -> str:
    """Return the OpenMM amber14 type name for an Amber type name (inverse of :func:`amber_type_name`).

    Parameters
    ----------
    amber_type : str
        Amber type (``"CX"``); a name that already carries a known prefix is returned unchanged.
    prefix : str
        Prefix to add, ``"protein-"`` for ff14SB protein types.

    Returns
    -------
    str
        e.g. ``"protein-CX"``.

    Examples
    --------
    >>> openmm_type_name("CX")
    'protein-CX'
    """
    if any(amber_type.startswith(p) for p in AMBER14_TYPE_PREFIXES):
        return amber_type
    return prefix + amber_type
