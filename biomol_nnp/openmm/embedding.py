"""The openmm-ml embedding ``electrostatic``: the ML region is polarized by the MM point charges.

Registered through the ``openmmml.embeddings`` entry point:

>>> potential = MLPotential("biomol-nnp", modelPath="model.pt")  # doctest: +SKIP
>>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms,
...                                     embedding="electrostatic")  # doctest: +SKIP

The mixed System (DESIGN.md, "Electrostatic embedding") is a copy of the MM System in which

- bonded terms inside the ML region are removed (``openmmml.embeddings.utilities.removeBonds``);
- in the NonbondedForce the ML atoms' charges are **zero**, so PME/cutoff Coulomb is MM-MM only;
- ML-ML pairs get exceptions with zero charge product and zero Lennard-Jones (the model computes them);
- ML-MM Lennard-Jones stays MM;
- an exception between an ML and an MM atom (a 1-2/1-3/1-4 pair across a cut bond) keeps its
  Lennard-Jones but gets a zero charge product: all ML-MM electrostatics come from the embedding
  energy, which sees every MM charge within the model's embedding cutoff without exclusions;
- a region may cut single C-C and C-N bonds (:func:`biomol_nnp.region.find_cut_bonds`: rings,
  disulfides and other bonds are refused with the same messages as at labelling). Each cut bond gets
  a link hydrogen, a virtual site at ``biomol_nnp.region.LINK_BOND_LENGTH_NM`` from the region atom
  (:mod:`biomol_nnp.openmm.link_atoms`; the labelled clusters were capped the same way). The caps are
  part of the model's region (atomic number 1) and have no MM interactions; OpenMM passes their
  forces back to the two atoms of the cut bond. Bonded terms follow openmm-ml's ``removeBonds`` as in
  the mechanical embedding: the cut bond, angles centred on the MM side and torsions around the cut
  bond stay MM; angles centred on a region atom are removed (the model sees them through the cap);
- boundary charges: the charge of each MM atom bonded to the region is moved, in equal parts, to its
  other MM neighbours (:func:`biomol_nnp.region.redistribute_boundary_charges`) **for the charges the
  embedding sees only**, so a point charge never sits ~0.15 nm from a cap. The MM-MM NonbondedForce
  keeps the force field's original charges: the MM-MM electrostatics (and the pure MM end state of
  ``lambda_interpolate``) are unchanged and the total charge seen by the region is conserved;
- one force (:func:`biomol_nnp.openmm.backend.create_force`) adds the model energy of the region with
  the MM charges of the *original* NonbondedForce (nonzero ones only):
  ``E_vac(R_A) + E_emb(R_A; R_B, q_B)``. The MM charges are taken by molecule (residue): a residue
  whose closest atom is within the model's ``embedding_cutoff_nm`` of the region enters whole, its
  charges scaled by one smooth switch, imaged next to the region under periodic boundaries
  (:mod:`biomol_nnp.models.environment`), so neutral molecules stay neutral at the cutoff.

With ``interpolate=True`` the global parameter ``lambda_interpolate`` (openmm-ml semantics) gives
``E = lambda * E_mixed + (1 - lambda) * E_MM`` for the terms that differ, through openmm-ml's
``InterpolationHelper``: 0 is the pure MM System, 1 the electrostatic NNP/MM System.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import openmm
import openmm.app
import openmm.unit as u
from openmmml.embeddings import utilities
from openmmml.mlpotential import Embedding, EmbeddingFactory, MLPotentialImpl

from biomol_nnp.exceptions import InputError
from biomol_nnp.openmm.link_atoms import add_link_sites
from biomol_nnp.openmm.potential import EmbeddablePotential
from biomol_nnp.region import LINK_BOND_LENGTH_NM, find_cut_bonds, redistribute_boundary_charges

logger = logging.getLogger(__name__)

EMBEDDING_NAME = "electrostatic"
KNOWN_ARGS = ("totalCharge", "mlLongRange", "linkAtomDistances")
"""Keyword arguments createMixedSystem accepts for this embedding (the last two only as None/empty: cap
distances are fixed by ``biomol_nnp.region.LINK_BOND_LENGTH_NM``)."""


class ElectrostaticEmbeddingFactory(EmbeddingFactory):
    """Creates :class:`ElectrostaticEmbedding` for ``embedding='electrostatic'``."""

    def createEmbedding(self, name: str, **args: Any) -> ElectrostaticEmbedding:
        return ElectrostaticEmbedding()


def _original_charges(system: openmm.System) -> list[float] | None:
    """Per-particle charges (e) of the System's single NonbondedForce, or None without one."""
    forces = [force for force in system.getForces() if isinstance(force, openmm.NonbondedForce)]
    if len(forces) > 1:
        raise InputError(
            f"the System has {len(forces)} NonbondedForce objects; electrostatic embedding needs "
            "exactly one (merge them before creating the mixed System)"
        )
    if not forces:
        return None
    force = forces[0]
    return [
        force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(force.getNumParticles())
    ]


def _zero_region_electrostatics(system: openmm.System, atoms: list[int]) -> None:
    """Zero ML charges, zero ML-MM exception charge products and exclude ML-ML pairs, in place."""
    atom_set = set(atoms)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in atoms:
                _, sigma, epsilon = force.getParticleParameters(i)
                force.setParticleParameters(i, 0.0, sigma, epsilon)
            for index in range(force.getNumExceptions()):
                i, j, _, sigma, epsilon = force.getExceptionParameters(index)
                if (i in atom_set) != (j in atom_set):
                    force.setExceptionParameters(index, i, j, 0.0, sigma, epsilon)
            for a in range(len(atoms)):
                for b in range(a):
                    force.addException(atoms[a], atoms[b], 0.0, 1.0, 0.0, True)
        elif isinstance(force, openmm.CustomNonbondedForce):
            utilities.addCustomNonbondedExclusions(force, atoms)


class ElectrostaticEmbedding(Embedding):
    """Electrostatic embedding of a biomol-nnp model's (or GFN2-xTB's) region in an MM System (see module docstring).

    Arguments accepted by ``createMixedSystem`` through ``**args``: ``totalCharge`` (e; default: the
    rounded sum of the region's MM charges).

    Examples
    --------
    >>> ElectrostaticEmbedding().createMixedSystem(impl, topology, system, atoms, 0, False)  # doctest: +SKIP
    """

    def createMixedSystem(
        self,
        potential: MLPotentialImpl,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: list[int],
        forceGroup: int,
        interpolate: bool,
        returnInfo: bool = False,
        **args: Any,
    ) -> openmm.System | dict[str, Any]:
        if not isinstance(potential, EmbeddablePotential):
            raise InputError(
                f"embedding='electrostatic' got a {type(potential).__name__}: electrostatic embedding "
                "needs a model that predicts charges (a potential with make_force, see "
                "biomol_nnp.openmm.potential.EmbeddablePotential); use MLPotential('biomol-nnp', "
                "modelPath=...), MLPotential('xtb') or embedding='mechanical' for other potentials"
            )
        unknown = sorted(set(args) - set(KNOWN_ARGS))
        if unknown:
            raise InputError(
                f"createMixedSystem(embedding='electrostatic') got unknown arguments {unknown}; "
                f"allowed: {list(KNOWN_ARGS)}"
            )
        if args.get("linkAtomDistances"):
            raise InputError(
                f"linkAtomDistances={args['linkAtomDistances']!r} is not allowed: link-hydrogen distances are "
                f"fixed by biomol_nnp.region.LINK_BOND_LENGTH_NM ({LINK_BOND_LENGTH_NM} nm by element of the "
                "region atom) so that caps sit where they sat in the labelled QM clusters; leave it out"
            )
        atoms = [int(i) for i in atoms]
        if len(set(atoms)) != len(atoms) or not atoms:
            raise InputError(
                f"atoms must be a nonempty list of distinct indices, got {len(atoms)} entries with "
                f"{len(set(atoms))} distinct"
            )
        cuts = find_cut_bonds(topology, atoms)
        periodic = system.usesPeriodicBoundaryConditions()

        charges = _original_charges(system) or [0.0] * system.getNumParticles()
        atom_set = set(atoms)
        seen = redistribute_boundary_charges(topology, np.asarray(charges, dtype=float), cuts, atoms)
        mm_atoms = [i for i, q in enumerate(seen) if i not in atom_set and q != 0.0]
        mm_charges = [float(seen[i]) for i in mm_atoms]
        region_charge = sum(charges[i] for i in atoms)
        total_charge = (
            float(args["totalCharge"]) if args.get("totalCharge") is not None else float(round(region_charge))
        )
        if not math.isclose(region_charge, total_charge, abs_tol=1e-3):
            logger.warning(
                "ML region MM charges sum to %.4f e but the region's total charge is %g e",
                region_charge,
                total_charge,
            )

        new_system = utilities.removeBonds(system, topology, atoms, True)
        _zero_region_electrostatics(new_system, atoms)
        new_topology = copy.deepcopy(topology)
        # with interpolation the MM reference System needs the same (inert) cap particles
        mm_system = copy.deepcopy(system) if interpolate and cuts else system
        caps = add_link_sites(new_topology, [new_system, mm_system] if mm_system is not system else [new_system], cuts)
        force = potential.make_force(
            new_topology, atoms + caps, total_charge, mm_atoms, mm_charges, periodic, forceGroup
        )

        if interpolate:
            helper = utilities.InterpolationHelper()
            helper.addMLTerm(force)
            helper.addMMBondedTerms(mm_system, topology, atoms)
            helper.setupNonbonded(new_system, mm_system)
            helper.setupInterpolation(new_system)
        else:
            new_system.addForce(force)
        logger.info(
            "electrostatic embedding: %d ML atoms and %d link hydrogens (total charge %g e) see %d MM charges%s",
            len(atoms),
            len(caps),
            total_charge,
            len(mm_atoms),
            " (periodic)" if periodic else "",
        )

        if returnInfo:
            return dict(
                system=new_system,
                topology=new_topology,
                oldToNew=list(range(topology.getNumAtoms())),
            )
        return new_system
