"""Write fitted torsions as an OpenMM ForceField XML (ffxml) file that overrides a base force field.

The file holds only a ``<PeriodicTorsionForce>`` with one ``<Proper>`` per type quadruple
(``type1..type4``, ``periodicityN``, ``phaseN`` in radians, ``kN`` in kJ/mol). It defines no atom
types: those come from the base force field.

How to load it (OpenMM 8.x semantics, ``openmm/app/forcefield.py``):

- ``PeriodicTorsionGenerator.createForce`` uses, for each torsion, the *first* non-wildcard
  ``<Proper>`` whose types match and ignores later ones. A refit file therefore replaces the base
  parameters only if its definitions come first: **list it before the base files in one
  constructor call**, ``ForceField("refit.xml", "amber14-all.xml", "amber14/tip3p.xml")``.
- It must be the *same* ``ForceField(...)`` call (or one ``loadFile((...))`` tuple): ``loadFile``
  registers the atom types of all files given together before it parses any force, so
  ``type1="protein-C"`` resolves even though ``protein-C`` is defined in a later file. Loaded alone
  (``ForceField("refit.xml")`` then ``loadFile("amber14-all.xml")``) the types are unknown when the
  refit file is parsed and OpenMM silently drops its torsions.
- "First" means first in OpenMM's candidate iteration (a ``set`` of definition indices per atom type).
  The refit definitions have the smallest indices, which in practice puts them first; use
  :func:`load_forcefield` to load in this order *and* make the precedence explicit (it orders the
  candidate sets by definition index, so first-loaded wins deterministically).

Verified in ``tests/unit/test_refit_ffxml.py``: the dipeptide phi torsion built from
``ForceField(refit, "amber14-all.xml")`` carries the refit terms and not the ff14SB ones.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

from openmm import app

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import FourierTorsion

logger = logging.getLogger(__name__)


def proper_element(torsion: FourierTorsion) -> ET.Element:
    """The ``<Proper>`` element for one torsion series (phase in radians, k in kJ/mol).

    Parameters
    ----------
    torsion : FourierTorsion
        Types must be OpenMM atom-type names of the base force field (e.g. ``"protein-CX"``).

    Returns
    -------
    xml.etree.ElementTree.Element
    """
    if not torsion.terms:
        raise RefitInputError(
            f"torsion {torsion.types} has terms=[]; allowed: at least one (n, phase_deg, k_kj) term. "
            "Hint: fit it with fit_fourier()."
        )
    attrib = {f"type{i + 1}": name for i, name in enumerate(torsion.types)}
    for i, (n, phase_deg, k_kj) in enumerate(torsion.terms, start=1):
        attrib[f"periodicity{i}"] = str(int(n))
        attrib[f"phase{i}"] = repr(math.radians(phase_deg))
        attrib[f"k{i}"] = repr(float(k_kj))
    return ET.Element("Proper", attrib)


def write_ffxml(path: str | os.PathLike[str], torsions: Sequence[FourierTorsion]) -> Path:
    """Write an OpenMM ffxml file with the torsions as ``<Proper>`` entries (atomic write).

    Load it **before** the base force field, in the same call, so that it overrides the base terms:
    ``ForceField(path, "amber14-all.xml")`` (see the module docstring, or use :func:`load_forcefield`).

    Parameters
    ----------
    path : str or PathLike
        Output file; written to a temporary file in the same folder, then ``os.replace``-d.
    torsions : sequence of FourierTorsion
        Series with OpenMM type names (``protein-C``, ...); terms ``(n, phase_deg, k_kj)``.

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FourierTorsion(("protein-C", "protein-N", "protein-CX", "protein-C"), [(2, 180.0, 1.0)])
    >>> out = write_ffxml(pathlib.Path(tempfile.mkdtemp()) / "refit.xml", [t])
    >>> "PeriodicTorsionForce" in out.read_text()
    True
    """
    if not torsions:
        raise RefitInputError(
            "torsions=[]; allowed: at least one FourierTorsion. Hint: pass the fitted series."
        )
    root = ET.Element("ForceField")
    force = ET.SubElement(root, "PeriodicTorsionForce")
    for torsion in torsions:
        force.append(proper_element(torsion))
    ET.indent(root)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            ET.ElementTree(root).write(handle, encoding="utf-8", xml_declaration=False)
            handle.write(b"\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %d torsion series to %s (load it before the base force field)", len(torsions), target)
    return target


class _IndexOrderedSet(list[int]):
    """List with ``set.add`` semantics; iterates in insertion (definition) order."""

    def add(self, index: int) -> None:
        if index not in self:
            self.append(index)


def load_forcefield(refit_files: Iterable[str], base_files: Iterable[str]) -> app.ForceField:
    """Load refit ffxml files ahead of base files so the refit torsions win, deterministically.

    Equivalent to ``ForceField(*refit_files, *base_files)``; in addition the proper-torsion candidate
    sets of OpenMM's ``PeriodicTorsionGenerator`` are ordered by definition index, so the
    first-loaded matching definition is always the one used (OpenMM iterates a ``set`` there).

    Parameters
    ----------
    refit_files : iterable of str
        Files written by :func:`write_ffxml`.
    base_files : iterable of str
        Base force field, e.g. ``["amber14-all.xml", "amber14/tip3p.xml"]``.

    Returns
    -------
    openmm.app.ForceField
    """
    forcefield = app.ForceField(*refit_files, *base_files)
    for generator in forcefield.getGenerators():
        if isinstance(generator, app.forcefield.PeriodicTorsionGenerator):
            table = getattr(generator, "propersForAtomType", None)
            if table is None:  # OpenMM internals changed: fall back to load order alone
                logger.warning("PeriodicTorsionGenerator has no propersForAtomType; relying on load order")
                continue
            for atom_type, indices in list(table.items()):
                table[atom_type] = _IndexOrderedSet(sorted(indices))
    return forcefield
