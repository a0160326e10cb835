"""Link-atom hydrogen caps as OpenMM virtual sites, for ML regions that cut covalent bonds.

The boundary rules (which bonds may be cut, the cap's X-H length) live in :mod:`biomol_nnp.region`,
shared with QM labelling (cluster carving), so a cap sits at the same place at labelling and at run
time. Here each cut bond ``inside-outside`` gets a massless particle placed by an
``openmm.LocalCoordinatesSite`` on the line from the region atom to the outside atom, at
``LINK_BOND_LENGTH_NM[element of inside]`` from the region atom: the construction of openmm-ml's
``addLinkAtomSites``, with our distances. OpenMM passes the force on a virtual site back to its parent
atoms by the chain rule, so the model's force on a cap reaches the two atoms of the cut bond.

>>> cuts = find_cut_bonds(topology, region_atoms)  # doctest: +SKIP
>>> caps = add_link_sites(new_topology, [new_system], cuts)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import openmm
import openmm.app

from biomol_nnp.exceptions import InputError
from biomol_nnp.region import LINK_BOND_LENGTH_NM, CutBond


def link_site(cut: CutBond, atomic_number: int) -> openmm.LocalCoordinatesSite:
    """The virtual site of the cap on ``cut``: origin the region atom, x axis towards the outside atom.

    Parameters
    ----------
    cut : CutBond
        The cut bond (system indices).
    atomic_number : int
        Element of the region atom ``cut.inside`` (a key of ``LINK_BOND_LENGTH_NM``).

    Returns
    -------
    openmm.LocalCoordinatesSite
        Site at ``LINK_BOND_LENGTH_NM[atomic_number]`` nm from the region atom along the bond.
    """
    distance = LINK_BOND_LENGTH_NM[int(atomic_number)]
    return openmm.LocalCoordinatesSite(
        [cut.inside, cut.outside], [1.0, 0.0], [-1.0, 1.0], [0.0, 0.0], [distance, 0.0, 0.0]
    )


def _check_one_cap_per_outside_atom(topology: openmm.app.Topology, cuts: Sequence[CutBond]) -> None:
    seen: dict[int, int] = {}
    atoms = list(topology.atoms())
    for cut in cuts:
        if cut.outside in seen:
            outside = atoms[cut.outside]
            raise InputError(
                f"MM atom {outside.name}({outside.residue.name}{outside.residue.id}, index {cut.outside}) is "
                f"bonded to two region atoms ({seen[cut.outside]} and {cut.inside}); its two link hydrogens would "
                "overlap. Put that atom in the region or take both of its region neighbours out"
            )
        seen[cut.outside] = cut.inside


def add_link_sites(
    topology: openmm.app.Topology, systems: Sequence[openmm.System], cuts: Sequence[CutBond]
) -> list[int]:
    """Append one link-hydrogen virtual site per cut bond to ``systems`` and ``topology`` (in place).

    In every System the site is a massless particle with zero charge and zero Lennard-Jones in each
    NonbondedForce and zero parameters in each CustomNonbondedForce; with a CustomNonbondedForce the
    site is excluded from every other particle in both forces (their exclusions must agree), as in
    openmm-ml. In the Topology each site is a hydrogen ``V<k>`` in its own residue of a new chain.

    Parameters
    ----------
    topology : openmm.app.Topology
        Topology to extend (its atom indices must match the Systems' particles).
    systems : sequence of openmm.System
        Systems to extend identically.
    cuts : sequence of CutBond
        Cut bonds from :func:`biomol_nnp.region.find_cut_bonds`.

    Returns
    -------
    list of int
        Particle indices of the sites, one per cut bond, in the order of ``cuts``.

    Raises
    ------
    InputError
        Two cut bonds share their outside atom (the caps would overlap).
    """
    if not cuts:
        return []
    _check_one_cap_per_outside_atom(topology, cuts)
    atoms = list(topology.atoms())
    for system in systems:
        if system.getNumParticles() != len(atoms):
            raise InputError(
                f"the System has {system.getNumParticles()} particles but the Topology has {len(atoms)} atoms; "
                "they must describe the same particles"
            )
    chain = topology.addChain()
    indices = []
    for k in range(len(cuts)):
        residue = topology.addResidue(f"V{k}", chain)
        indices.append(topology.addAtom(f"V{k}", openmm.app.element.hydrogen, residue).index)
    for system in systems:
        for cut in cuts:
            index = system.addParticle(0.0)
            system.setVirtualSite(index, link_site(cut, atoms[cut.inside].element.atomic_number))
            _add_site_to_nonbonded(system, index)
    return indices


def _add_site_to_nonbonded(system: openmm.System, index: int) -> None:
    """Give particle ``index`` no nonbonded interactions in each (Custom)NonbondedForce of ``system``."""
    forces = system.getForces()
    custom = any(isinstance(force, openmm.CustomNonbondedForce) for force in forces)
    for force in forces:
        if isinstance(force, openmm.NonbondedForce):
            force.addParticle(0.0, 0.0, 0.0)
            if custom:
                for other in range(index):
                    force.addException(other, index, 0.0, 0.0, 0.0)
        elif isinstance(force, openmm.CustomNonbondedForce):
            force.addParticle([0.0] * force.getNumPerParticleParameters())
            for other in range(index):
                force.addExclusion(other, index)
