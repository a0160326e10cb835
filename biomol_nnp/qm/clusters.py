"""Clusters carved from a solvated frame: water clusters, and a region of whole residues with MM charges.

:func:`carve_region` takes whole residues as the QM region and, as point charges, every other
residue with an atom within a cutoff (minimum image, imaged next to the region). A region that cuts
a covalent bond is capped with link hydrogens by the rules of :mod:`biomol_nnp.region`.
:func:`water_clusters` carves clusters of the n waters nearest a random water of an equilibrated box.

>>> configs = water_clusters("systems/alanine_dipeptide/solvated.pdb", sizes=[2, 5])  # doctest: +SKIP
>>> [c.n_atoms for c in configs]  # doctest: +SKIP
[6, 15]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import Configuration, minimum_image, select_point_charges
from biomol_nnp.region import find_cut_bonds, link_atom_positions, redistribute_boundary_charges

logger = logging.getLogger(__name__)

WATER_RESIDUES = ("HOH", "WAT", "TIP3", "SOL")
TIP3P_CHARGES = {8: -0.834, 1: 0.417}
"""TIP3P charges by element, e (Jorgensen et al. 1983), for water point charges."""


def _load(pdb_path: str | os.PathLike) -> tuple[Any, np.ndarray, np.ndarray]:
    import openmm.app as app
    from openmm import unit

    if not os.path.isfile(pdb_path):
        raise InputError(f"PDB {str(pdb_path)!r} does not exist")
    pdb = app.PDBFile(str(pdb_path))
    box = pdb.topology.getPeriodicBoxVectors()
    if box is None:
        raise InputError(f"{str(pdb_path)!r} has no periodic box (CRYST1); carving needs a solvated, periodic frame")
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return pdb.topology, xyz, np.asarray([[v.value_in_unit(unit.nanometer) for v in vec] for vec in box])


def _numbers(topology: Any) -> np.ndarray:
    return np.array([a.element.atomic_number if a.element is not None else 0 for a in topology.atoms()])


def water_clusters(
    pdb_path: str | os.PathLike,
    sizes: Sequence[int] = tuple(range(2, 21)),
    per_size: int = 1,
    seed: int = 0,
    point_charge_cutoff_nm: float = 0.0,
) -> list[Configuration]:
    """Water clusters of ``n`` molecules (the ``n`` nearest by O...O to a random centre water).

    Parameters
    ----------
    pdb_path : str or os.PathLike
        Equilibrated, periodic PDB with water residues (HOH/WAT/TIP3/SOL).
    sizes : sequence of int
        Cluster sizes, molecules (each 1..number of waters).
    per_size : int
        Clusters per size (different random centres).
    seed : int
        Random seed of the centres.
    point_charge_cutoff_nm : float
        If > 0, the other waters within this distance become TIP3P point charges, nm.

    Returns
    -------
    list of Configuration
        Source ``"water-cluster"``, ``trajectory_id`` = size, ``frame`` = replicate.
    """
    topology, xyz, box = _load(pdb_path)
    waters = [np.array([a.index for a in r.atoms()]) for r in topology.residues() if r.name in WATER_RESIDUES]
    if not waters:
        raise InputError(f"no water residues ({', '.join(WATER_RESIDUES)}) in {str(pdb_path)!r}")
    numbers = _numbers(topology)
    oxygens = np.array([w[numbers[w] == 8][0] for w in waters])
    rng = np.random.default_rng(seed)
    configs = []
    for n in sizes:
        if not 1 <= n <= len(waters):
            raise InputError(f"cluster size {n} must be between 1 and the {len(waters)} waters of the box")
        for rep in range(per_size):
            centre = int(rng.integers(len(waters)))
            d = np.linalg.norm(minimum_image(xyz[oxygens] - xyz[oxygens[centre]], box), axis=-1)
            chosen = np.argsort(d, kind="stable")[:n]
            region_xyz, region_idx = select_point_charges(
                xyz[waters[centre]], xyz, [waters[k] for k in chosen], box, np.inf
            )
            mm_xyz, mm_idx = np.zeros((0, 3)), np.zeros(0, dtype=int)
            if point_charge_cutoff_nm > 0:
                others = [waters[k] for k in np.argsort(d, kind="stable")[n:]]
                mm_xyz, mm_idx = select_point_charges(region_xyz, xyz, others, box, point_charge_cutoff_nm)
            configs.append(
                Configuration(
                    numbers[region_idx],
                    region_xyz,
                    mm_positions=mm_xyz,
                    mm_charges=np.array([TIP3P_CHARGES[int(z)] for z in numbers[mm_idx]]),
                    mm_numbers=numbers[mm_idx],
                    source="water-cluster",
                    trajectory_id=n,
                    frame=rep,
                )
            )
    logger.info("carved %d water clusters from %s", len(configs), pdb_path)
    return configs


def carve_region(
    topology: Any,
    positions_nm: np.ndarray,
    box_nm: np.ndarray,
    region_residues: Sequence[int],
    charges: np.ndarray,
    cutoff_nm: float,
    source: str = "carved",
    frame: int = 0,
    link_atoms: bool = True,
) -> Configuration:
    """The region of whole residues (cut bonds capped with link hydrogens) plus nearby residues as point charges.

    Boundary rules (which bonds may be cut, where the caps go, how the boundary MM charge is moved to
    its MM neighbours) are those of :mod:`biomol_nnp.region`, shared with the runtime region.

    Parameters
    ----------
    topology : openmm.app.Topology
    positions_nm : numpy.ndarray, shape (A, 3)
        Frame positions, nm (molecules whole).
    box_nm : numpy.ndarray, shape (3, 3)
        Periodic box vectors, nm.
    region_residues : sequence of int
        Residue indices (0-based) forming the region.
    charges : numpy.ndarray, shape (A,)
        MM charges of every atom (from the NonbondedForce), e.
    cutoff_nm : float
        Residues with any atom this close to the region become point charges, nm.
    link_atoms : bool
        Cap cut C-C / C-N bonds with hydrogens (default); False refuses any cut.

    Raises
    ------
    InputError
        A cut that cannot be capped (ring, disulfide, not C-C/C-N) or any cut without ``link_atoms``
        (the message names the bond and the fix), or an empty region.
    """
    chosen = set(int(r) for r in region_residues)
    atoms = list(topology.atoms())
    region = np.array([a.index for a in atoms if a.residue.index in chosen], dtype=int)
    if region.size == 0:
        raise InputError(f"region_residues {sorted(chosen)} select no atom")
    cuts = find_cut_bonds(topology, region)
    if cuts and not link_atoms:
        inside, outside = atoms[cuts[0].inside], atoms[cuts[0].outside]
        raise InputError(
            f"the region cuts the bond {inside.name}({inside.residue.name}{inside.residue.id})-"
            f"{outside.name}({outside.residue.name}{outside.residue.id}); add residue {outside.residue.index} "
            "to the region, or pass link_atoms=True to cap the cut with a hydrogen"
        )
    charges = redistribute_boundary_charges(topology, charges, cuts, region)
    numbers = _numbers(topology)
    q_region = float(charges[region].sum())
    if abs(q_region - round(q_region)) > 1e-3:
        raise InputError(f"the region's MM charges sum to {q_region:.4f} e, not an integer; check the residues")
    others = [np.array([a.index for a in r.atoms()]) for r in topology.residues() if r.index not in chosen]
    mm_xyz, mm_idx = select_point_charges(positions_nm[region], positions_nm, others, box_nm, cutoff_nm)
    caps = link_atom_positions(positions_nm, cuts, numbers)
    if cuts:
        logger.info("capped %d cut bonds with link hydrogens; boundary charges moved to their MM neighbours", len(cuts))
    return Configuration(
        np.concatenate([numbers[region], np.ones(len(cuts), dtype=numbers.dtype)]),
        np.concatenate([positions_nm[region], caps]),
        total_charge=int(round(q_region)),
        mm_positions=mm_xyz,
        mm_charges=charges[mm_idx],
        mm_numbers=numbers[mm_idx],
        source=source,
        frame=frame,
    )
