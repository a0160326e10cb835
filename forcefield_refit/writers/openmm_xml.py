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

Other sections (all optional):

- ``<CMAPTorsionForce>``: one ``<Map>`` per :class:`~forcefield_refit.terms.CmapTerm` (kJ/mol, OpenMM order
  ``energy[i + n j]`` from 0 degrees, converted by :func:`~forcefield_refit.terms.openmm_cmap_values`) and a
  ``<Torsion map=... type1..type5>``. amber14 has no CMAP, so nothing is overridden.
- ``<LennardJonesForce lj14scale="0.5">``: per-type ``<Atom sigma epsilon>`` copied from the base force field
  (:func:`lennard_jones_types`) plus ``<NBFixPair>``. OpenMM then evaluates all LJ in a CustomNonbondedForce;
  :func:`load_forcefield` sets the base NonbondedForce epsilons to zero so LJ is not counted twice (the
  CHARMM36 ffxml layout). Use :func:`load_forcefield` for files with NBFIX.
- ``<CustomHbondForce>``: one per :class:`~forcefield_refit.hbonds.HbondTerm`, an angle-dependent 12-10 term
  on donor-hydrogen...acceptor triples.

Verified in ``tests/unit/test_refit_ffxml.py``: the dipeptide phi torsion built from
``ForceField(refit, "amber14-all.xml")`` carries the refit terms and not the ff14SB ones.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from openmm import app

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import CmapTerm, NBFixPair, merge_cmaps, merge_pairs, merge_torsions, openmm_cmap_values
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.writers._io import atomic_write_text

if TYPE_CHECKING:
    from forcefield_refit.hbonds import HbondTerm

logger = logging.getLogger(__name__)


def proper_element(torsion: FourierTorsion, by: str = "type") -> ET.Element:
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
    if by not in ("type", "class"):
        raise RefitInputError(f"by={by!r}; allowed: 'type' or 'class'. Hint: 'class' for amber99sb.xml.")
    attrib = {f"{by}{i + 1}": name for i, name in enumerate(torsion.types)}
    for i, (n, phase_deg, k_kj) in enumerate(torsion.terms, start=1):
        attrib[f"periodicity{i}"] = str(int(n))
        attrib[f"phase{i}"] = repr(math.radians(phase_deg))
        attrib[f"k{i}"] = repr(float(k_kj))
    return ET.Element("Proper", attrib)


def cmap_element(cmaps: Sequence[CmapTerm]) -> ET.Element:
    """The ``<CMAPTorsionForce>`` element: one ``<Map>`` and one ``<Torsion>`` per CMAP term (kJ/mol)."""
    force = ET.Element("CMAPTorsionForce")
    unique = merge_cmaps(cmaps)
    for cmap in unique:
        values = openmm_cmap_values(cmap.grid_kj)
        rows = [" ".join(repr(v) for v in values[s : s + 24]) for s in range(0, len(values), 24)]
        ET.SubElement(force, "Map").text = "\n" + "\n".join(rows) + "\n"
    for index, cmap in enumerate(unique):
        attrib = {"map": str(index), **{f"type{i + 1}": name for i, name in enumerate(cmap.types)}}
        ET.SubElement(force, "Torsion", attrib)
    return force


def lennard_jones_types(forcefield: app.ForceField) -> dict[str, tuple[float, float]]:
    """Per-type LJ parameters of a loaded force field's NonbondedForce (``sigma`` nm, ``epsilon`` kJ/mol).

    Parameters
    ----------
    forcefield : openmm.app.ForceField
        e.g. ``ForceField("amber14-all.xml", "amber14/tip3p.xml")``.

    Returns
    -------
    dict
        ``{type: (sigma_nm, epsilon_kj)}`` for every type with LJ parameters.
    """
    out: dict[str, tuple[float, float]] = {}
    for generator in forcefield.getGenerators():
        if isinstance(generator, app.forcefield.NonbondedGenerator):
            for name, params in generator.params.paramsForType.items():
                if "sigma" in params and "epsilon" in params:
                    out[name] = (float(params["sigma"]), float(params["epsilon"]))
    if not out:
        raise RefitInputError(
            "forcefield has no NonbondedForce atom parameters; allowed: a base force field with LJ per atom type. "
            "Hint: ForceField('amber14-all.xml', 'amber14/tip3p.xml')."
        )
    return out


def lennard_jones_element(
    nbfix: Sequence[NBFixPair], lj_types: Mapping[str, tuple[float, float]], lj14scale: float = 0.5
) -> ET.Element:
    """The ``<LennardJonesForce>`` element: every base type's LJ and the NBFIX pairs (sigma nm, epsilon kJ/mol).

    Raises
    ------
    RefitMatchError
        If an NBFIX type is missing from ``lj_types`` (the base force field).
    """
    from forcefield_refit.exceptions import RefitMatchError

    force = ET.Element("LennardJonesForce", {"lj14scale": repr(float(lj14scale))})
    for name, (sigma, epsilon) in sorted(lj_types.items()):
        ET.SubElement(force, "Atom", {"type": name, "sigma": repr(sigma), "epsilon": repr(epsilon)})
    for pair in merge_pairs(nbfix):
        missing = [t for t in pair.types if t not in lj_types]
        if missing:
            raise RefitMatchError(
                f"nbfix pair {pair.types}: types {missing} are not in the base force field; allowed: OpenMM type "
                f"names such as {sorted(lj_types)[:4]}. Hint: amber14 names carry a prefix ('protein-O'); TIP3P "
                "types are 'tip3p-O', 'tip3p-H'."
            )
        attrib = {"type1": pair.types[0], "type2": pair.types[1]}
        attrib.update(sigma=repr(pair.sigma_nm), epsilon=repr(float(pair.epsilon_kj)))
        ET.SubElement(force, "NBFixPair", attrib)
    return force


def write_ffxml(
    path: str | os.PathLike[str],
    torsions: Sequence[FourierTorsion] = (),
    cmaps: Sequence[CmapTerm] = (),
    nbfix: Sequence[NBFixPair] = (),
    lj_types: Mapping[str, tuple[float, float]] | None = None,
    hbonds: Sequence[HbondTerm] = (),
    overwrite: bool = False,
    base_forcefield: app.ForceField | None = None,
    by: str = "type",
) -> Path:
    """Write an OpenMM ffxml file with the requested sections (atomic; no overwrite unless asked).

    Load it **before** the base force field, in the same call, so that it overrides the base terms:
    use :func:`load_forcefield` (required when ``nbfix`` is given).

    Parameters
    ----------
    path : str or PathLike
        Output file; written to a temporary file in the same folder, then ``os.replace``-d.
    torsions : sequence of FourierTorsion
        Series with OpenMM type names (``protein-C``, ...); terms ``(n, phase_deg, k_kj)``.
    cmaps : sequence of CmapTerm
        phi/psi maps (kJ/mol) written as ``<CMAPTorsionForce>``.
    nbfix : sequence of NBFixPair
        Pair-specific LJ, written in a ``<LennardJonesForce>``; needs ``lj_types``.
    lj_types : mapping, optional
        ``{type: (sigma_nm, epsilon_kj)}`` of the base force field (:func:`lennard_jones_types`).
    hbonds : sequence of HbondTerm
        Angle-dependent hydrogen-bond terms, one ``<CustomHbondForce>`` each.
    overwrite : bool
        Replace an existing file.
    base_forcefield : openmm.app.ForceField, optional
        When given, every atom type written must be defined there (else :class:`RefitMatchError`).
    by : {"type", "class"}
        Whether torsion names are atom types (amber14) or atom classes (amber99sb.xml): ``type1`` or ``class1``.

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
    if not (torsions or cmaps or nbfix or hbonds):
        raise RefitInputError(
            "torsions, cmaps, nbfix and hbonds are all empty; allowed: at least one term. "
            "Hint: pass the fitted terms."
        )
    if base_forcefield is not None:
        from forcefield_refit.torsions import check_types_known

        names = [t for term in torsions for t in term.types] + [t for term in cmaps for t in term.types]
        check_types_known(base_forcefield, names + [t for term in nbfix for t in term.types])
    root = ET.Element("ForceField")
    if torsions:
        force = ET.SubElement(root, "PeriodicTorsionForce")
        for torsion in merge_torsions(torsions):
            force.append(proper_element(torsion, by))
    if cmaps:
        root.append(cmap_element(cmaps))
    if nbfix:
        if lj_types is None:
            raise RefitInputError(
                "nbfix given with lj_types=None; allowed: the base force field's per-type LJ. "
                "Hint: lj_types=lennard_jones_types(ForceField('amber14-all.xml', 'amber14/tip3p.xml'))."
            )
        root.append(lennard_jones_element(nbfix, lj_types))
    for term in hbonds:
        root.append(term.ffxml_element())
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode") + "\n"
    target = atomic_write_text(path, text, overwrite=overwrite)
    logger.info(
        "wrote ffxml %s (%d torsions, %d cmaps, %d nbfix, %d hbond terms; load it before the base force field)",
        target,
        len(torsions),
        len(cmaps),
        len(nbfix),
        len(hbonds),
    )
    return target


class _IndexOrderedSet(list[int]):
    """List with ``set.add`` semantics; iterates in insertion (definition) order."""

    def add(self, index: int) -> None:
        if index not in self:
            self.append(index)


def load_forcefield(refit_files: Iterable[str], base_files: Iterable[str]) -> app.ForceField:
    """Load refit ffxml files ahead of base files so the refit torsions win, deterministically.

    Equivalent to ``ForceField(*refit_files, *base_files)``; when a ``<LennardJonesForce>`` is loaded
    (NBFIX refits), the NonbondedForce epsilons are set to zero so LJ is evaluated once; in addition the
    proper-torsion candidate sets of OpenMM's ``PeriodicTorsionGenerator`` are ordered by definition index, so the
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
    generators = forcefield.getGenerators()
    if any(isinstance(g, app.forcefield.LennardJonesGenerator) for g in generators):
        for generator in generators:  # LJ now comes from the LennardJonesForce only (CHARMM36 layout)
            if isinstance(generator, app.forcefield.NonbondedGenerator):
                for params in generator.params.paramsForType.values():
                    if "epsilon" in params:
                        params["epsilon"] = 0.0
        logger.info("LennardJonesForce present: base NonbondedForce epsilons set to 0")
    return forcefield
