"""Molecules for profiles: load a PDB with bonds, name its backbone dihedrals, label atoms by type or class.

The capped dipeptides ACE-X-NME shipped in ``systems/dipeptides`` (and any PDB with the same atom
names) are handled by name: phi = C(i-1)-N-CA-C, psi = N-CA-C-N(i+1), chi1 = N-CA-CB-{CG, OG, CG1, SG, OG1}.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import openmm
from openmm import app, unit

from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.torsions import AtomQuad, TypeQuad, atom_types, proper_torsions

logger = logging.getLogger(__name__)

LabelKind = Literal["type", "class"]

_CHI1_GAMMA = ("CG", "OG", "CG1", "SG", "OG1")


@dataclass
class Molecule:
    """A molecule for scans.

    Attributes
    ----------
    name : str
        Label.
    topology : openmm.app.Topology
        With bonds.
    positions : np.ndarray
        ``[N, 3]`` nm.

    Examples
    --------
    >>> from pathlib import Path
    >>> m = load_molecule(Path(__file__).parents[1] / "systems" / "nma" / "nma.pdb")
    >>> m.positions.shape
    (12, 3)
    """

    name: str
    topology: app.Topology
    positions: np.ndarray

    @property
    def bonds(self) -> list[tuple[int, int]]:
        """Covalent bonds as 0-based index pairs."""
        return [(b[0].index, b[1].index) for b in self.topology.bonds()]

    def system(self, forcefield: app.ForceField | Sequence[str]) -> openmm.System:
        """Vacuum System (no cutoff, no constraints) from a loaded ForceField or ffxml file names."""
        ff = forcefield if isinstance(forcefield, app.ForceField) else app.ForceField(*forcefield)
        return ff.createSystem(self.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)


def load_molecule(pdb_path: str | os.PathLike[str], name: str | None = None) -> Molecule:
    """Read a PDB (with CONECT or standard residues) into a :class:`Molecule`.

    Parameters
    ----------
    pdb_path : str or PathLike
    name : str, optional
        Defaults to the file stem.

    Returns
    -------
    Molecule
    """
    pdb = app.PDBFile(os.fspath(pdb_path))
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=float)
    return Molecule(name or os.path.splitext(os.path.basename(os.fspath(pdb_path)))[0], pdb.topology, positions)


def backbone_dihedrals(topology: app.Topology) -> dict[str, AtomQuad]:
    """phi, psi and (when the side chain has one) chi1 of the single central residue of ACE-X-NME.

    Returns
    -------
    dict
        ``{"phi": quad, "psi": quad[, "chi1": quad]}``, 0-based indices.

    Raises
    ------
    RefitMatchError
        If the topology is not a capped dipeptide.
    """
    residues = list(topology.residues())
    if len(residues) != 3 or residues[0].name != "ACE" or residues[2].name != "NME":
        raise RefitMatchError(
            f"topology has residues {[r.name for r in residues]}; allowed: ACE-X-NME. "
            "Hint: build it with tleap 'sequence { ACE ALA NME }' (see systems/dipeptides)."
        )
    atoms = [{a.name: a.index for a in r.atoms()} for r in residues]
    ace, mid, nme = atoms
    out = {
        "phi": (ace["C"], mid["N"], mid["CA"], mid["C"]),
        "psi": (mid["N"], mid["CA"], mid["C"], nme["N"]),
    }
    gamma = next((g for g in _CHI1_GAMMA if g in mid), None)
    if "CB" in mid and gamma is not None:
        out["chi1"] = (mid["N"], mid["CA"], mid["CB"], mid[gamma])
    return out  # type: ignore[return-value]


def atom_labels(topology: app.Topology, forcefield: app.ForceField, by: LabelKind = "type") -> list[str]:
    """Atom type (``protein-CX``) or atom class (``CT`` in amber99sb.xml) of every atom.

    Parameters
    ----------
    topology : openmm.app.Topology
    forcefield : openmm.app.ForceField
    by : {"type", "class"}
        amber14 files define torsions by type, amber99sb.xml by class.

    Returns
    -------
    list of str
    """
    if by not in ("type", "class"):
        raise RefitInputError(f"by={by!r}; allowed: 'type' or 'class'. Hint: 'class' for amber99sb.xml.")
    types = atom_types(topology, forcefield)
    if by == "type":
        return types
    return [forcefield._atomTypes[t].atomClass for t in types]


def dihedrals_by_label(
    topology: app.Topology, labels: Sequence[str], wanted: Sequence[TypeQuad]
) -> dict[TypeQuad, list[AtomQuad]]:
    """Every proper dihedral whose atom labels match each wanted quadruple (oriented like it).

    Raises
    ------
    RefitMatchError
        If a wanted quadruple matches nothing (lists the labels present).
    """
    out: dict[TypeQuad, list[AtomQuad]] = {tuple(w): [] for w in wanted}  # type: ignore[misc]
    for quad in proper_torsions(topology):
        have = tuple(labels[i] for i in quad)
        for want in out:
            if have == want:
                out[want].append(quad)
            elif have[::-1] == want:
                out[want].append(quad[::-1])  # type: ignore[arg-type]
    empty = [w for w, quads in out.items() if not quads]
    if empty:
        raise RefitMatchError(
            f"types {empty} match no proper torsion; allowed labels in this molecule: {sorted(set(labels))}. "
            "Hint: amber14 types carry a prefix ('protein-CX'); amber99sb.xml needs by='class'."
        )
    return out


#: TIP3P geometry (Jorgensen et al. 1983): O-H 0.9572 A, H-O-H 104.52 degrees.
TIP3P_OH_NM = 0.09572
TIP3P_HOH_DEG = 104.52


def water_molecule() -> Molecule:
    """One TIP3P-geometry water (residue HOH, atoms O, H1, H2; O at the origin, molecule in the xy plane)."""
    top = app.Topology()
    residue = top.addResidue("HOH", top.addChain())
    o = top.addAtom("O", app.element.oxygen, residue)
    h1 = top.addAtom("H1", app.element.hydrogen, residue)
    h2 = top.addAtom("H2", app.element.hydrogen, residue)
    top.addBond(o, h1)
    top.addBond(o, h2)
    half = np.radians(TIP3P_HOH_DEG / 2.0)
    xyz = TIP3P_OH_NM * np.array(
        [[0.0, 0.0, 0.0], [np.cos(half), np.sin(half), 0.0], [np.cos(half), -np.sin(half), 0.0]]
    )
    return Molecule("water", top, xyz)


def combine(first: Molecule, second: Molecule, second_positions: np.ndarray | None = None) -> Molecule:
    """One Molecule holding both (``first`` atoms first), e.g. a dimer; positions of ``second`` optional (nm)."""
    top = app.Topology()
    for source in (first, second):
        chain = top.addChain()
        mapping = {}
        for residue in source.topology.residues():
            new_res = top.addResidue(residue.name, chain)
            for atom in residue.atoms():
                mapping[atom] = top.addAtom(atom.name, atom.element, new_res)
        for bond in source.topology.bonds():
            top.addBond(mapping[bond[0]], mapping[bond[1]])
    xyz = np.concatenate([first.positions, second.positions if second_positions is None else second_positions])
    return Molecule(f"{first.name}-{second.name}", top, xyz)


def residue_torsion_labels(
    topology: app.Topology, labels: Sequence[str], residue_index: int
) -> list[TypeQuad]:
    """Label quadruples of every proper torsion whose central bond lies inside one residue (one orientation each).

    Parameters
    ----------
    topology : openmm.app.Topology
    labels : sequence of str
        Per-atom types or classes (:func:`atom_labels`).
    residue_index : int
        0-based residue index (1 for the X of ACE-X-NME).

    Returns
    -------
    list of tuple of 4 str
        Sorted, a quadruple and its reverse counted once.
    """
    inside = {a.index for a in topology.atoms() if a.residue.index == residue_index}
    if not inside:
        raise RefitInputError(
            f"residue_index={residue_index}; allowed: 0..{topology.getNumResidues() - 1}. Hint: 1 for ACE-X-NME."
        )
    out: list[TypeQuad] = []
    for quad in proper_torsions(topology):
        if quad[1] in inside and quad[2] in inside:
            key = tuple(labels[i] for i in quad)
            key = min(key, key[::-1])
            if key not in out:
                out.append(key)  # type: ignore[arg-type]
    return sorted(out)
