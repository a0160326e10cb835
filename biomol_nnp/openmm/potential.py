"""The openmm-ml potential ``biomol-nnp``: a deployed biomol-nnp model as an ``MLPotential``.

Registered through the ``openmmml.potentials`` entry point, so after ``import openmmml``:

>>> from openmmml import MLPotential  # doctest: +SKIP
>>> potential = MLPotential("biomol-nnp", modelPath="model.pt")  # doctest: +SKIP
>>> system = potential.createMixedSystem(topology, mm_system, ml_atoms,
...                                      embedding="electrostatic")  # doctest: +SKIP

``createSystem``/mechanical embedding use the vacuum energy of the model (no MM charges);
the ``electrostatic`` embedding (:mod:`biomol_nnp.openmm.embedding`) adds the MM charges.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import openmm
import openmm.app
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from biomol_nnp.exceptions import InputError, ModelFileError
from biomol_nnp.models.export import check_elements, check_total_charge, load_model
from biomol_nnp.openmm.backend import create_force

logger = logging.getLogger(__name__)

POTENTIAL_NAME = "biomol-nnp"
KNOWN_ARGS = ("modelPath", "torchThreads", "backend")
"""Keyword arguments of ``MLPotential('biomol-nnp', ...)``."""


@runtime_checkable
class EmbeddablePotential(Protocol):
    """A potential the ``electrostatic`` embedding can use: it builds its force with the MM charges.

    ``make_force`` returns the Force for the region ``atoms`` (link caps included, atomic number 1)
    of total charge ``total_charge`` (e) polarized by ``mm_charges`` (e) on ``mm_atoms``; each MM
    atom's residue is its charge group. Implemented by :class:`BiomolNNPPotentialImpl` and
    :class:`biomol_nnp.openmm.xtb_potential.XTBPotentialImpl`.
    """

    def make_force(
        self,
        topology: openmm.app.Topology,
        atoms: list[int],
        total_charge: float,
        mm_atoms: list[int],
        mm_charges: list[float],
        periodic: bool,
        force_group: int,
    ) -> openmm.Force: ...


def topology_atomic_numbers(
    topology: openmm.app.Topology,
    atoms: Iterable[int],
    what: str,
    fix: str,
    error: type[Exception] = InputError,
) -> list[int]:
    """Atomic numbers of ``atoms`` of ``topology``.

    Parameters
    ----------
    what : str
        What the atoms are, for the message (e.g. ``"ML"``, ``"MM"``).
    fix : str
        What to do about an atom without element, for the message.
    error : type
        Exception raised for an atom without element (a virtual site or extra particle).

    Examples
    --------
    >>> topology = openmm.app.Topology()
    >>> residue = topology.addResidue("HOH", topology.addChain())
    >>> _ = topology.addAtom("O", openmm.app.element.oxygen, residue)
    >>> topology_atomic_numbers(topology, [0], "ML", "remove it")
    [8]
    """
    topology_atoms = list(topology.atoms())
    numbers = []
    for index in atoms:
        element = topology_atoms[index].element
        if element is None:
            raise error(
                f"{what} atom {index} ({topology_atoms[index].name}) has no element (a virtual site or extra "
                f"particle); {fix}"
            )
        numbers.append(int(element.atomic_number))
    return numbers


def add_vacuum_force(
    potential: EmbeddablePotential,
    topology: openmm.app.Topology,
    system: openmm.System,
    atoms: Iterable[int] | None,
    force_group: int,
    total_charge: float,
    name: str,
) -> None:
    """The ``addForces`` of an :class:`EmbeddablePotential`: its force on ``atoms`` without MM charges.

    ``atoms`` None means all atoms of ``topology``. The force is periodic when the System or the
    Topology has a periodic box. ``name`` names the potential in the log.
    """
    atom_list = list(range(topology.getNumAtoms())) if atoms is None else [int(i) for i in atoms]
    periodic = system.usesPeriodicBoundaryConditions() or topology.getPeriodicBoxVectors() is not None
    system.addForce(potential.make_force(topology, atom_list, total_charge, [], [], periodic, force_group))
    logger.info("added %s vacuum potential for %d atoms (total charge %g e)", name, len(atom_list), total_charge)


class BiomolNNPPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`BiomolNNPPotentialImpl` for ``MLPotential('biomol-nnp', modelPath=...)``."""

    def createImpl(self, name: str, **args: Any) -> BiomolNNPPotentialImpl:
        unknown = sorted(set(args) - set(KNOWN_ARGS))
        if unknown:
            raise InputError(f"MLPotential({name!r}) got unknown arguments {unknown}; allowed: {list(KNOWN_ARGS)}")
        if "modelPath" not in args:
            raise InputError(f"MLPotential({name!r}) needs modelPath=, the path of a deployed model.pt")
        return BiomolNNPPotentialImpl(
            args["modelPath"],
            torch_threads=args.get("torchThreads", 1),
            backend=args.get("backend", "python"),
        )


class BiomolNNPPotentialImpl(MLPotentialImpl):
    """A deployed biomol-nnp model (TorchScript ``model.pt``) as an openmm-ml potential.

    The model file is validated at construction (:func:`biomol_nnp.models.export.load_model`).

    Parameters
    ----------
    model_path : path-like
        Deployed model file.
    torch_threads : int
        Threads torch uses inside each force evaluation.
    backend : str
        Force backend (see :func:`biomol_nnp.openmm.backend.create_force`).

    Examples
    --------
    >>> impl = BiomolNNPPotentialImpl("model.pt")  # doctest: +SKIP
    >>> impl.metadata["elements"]  # doctest: +SKIP
    [1, 6, 7, 8]
    """

    def __init__(self, model_path: str | os.PathLike, torch_threads: int = 1, backend: str = "python") -> None:
        self.model_path = Path(model_path).resolve()
        _, self.metadata = load_model(self.model_path)
        self.torch_threads = int(torch_threads)
        self.backend = backend

    def region_atomic_numbers(self, topology: openmm.app.Topology, atoms: list[int]) -> list[int]:
        """Atomic numbers of ``atoms``, checked against the model's elements (ModelFileError names misses)."""
        numbers = topology_atomic_numbers(topology, atoms, "ML", "remove it from the ML region", ModelFileError)
        check_elements(self.metadata, numbers)
        return numbers

    def make_force(
        self,
        topology: openmm.app.Topology,
        atoms: list[int],
        total_charge: float,
        mm_atoms: list[int],
        mm_charges: list[float],
        periodic: bool,
        force_group: int,
    ) -> openmm.Force:
        """The force evaluating the model on ``atoms`` with MM charges ``mm_charges`` (e) on ``mm_atoms``.

        Each MM atom's residue is its charge group for the molecule-based embedding cutoff.
        """
        check_total_charge(self.metadata, total_charge)
        residue_of = {atom.index: atom.residue.index for atom in topology.atoms()}
        return create_force(
            self.model_path,
            atoms,
            self.region_atomic_numbers(topology, atoms),
            total_charge,
            mm_atoms=mm_atoms,
            mm_charges=mm_charges,
            mm_molecules=[residue_of[i] for i in mm_atoms],
            periodic=periodic,
            torch_threads=self.torch_threads,
            embedding=bool(mm_atoms),
            force_group=force_group,
            backend=self.backend,
        )

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,
        **args: Any,
    ) -> None:
        """Add the vacuum NNP energy of ``atoms`` (all atoms if None) to ``system``.

        ``args`` may hold ``totalCharge`` (e, default 0); other openmm-ml arguments are ignored.
        The force is periodic when the System or the Topology has a periodic box (the ML region is then
        made whole by minimum image before the model call).
        """
        total_charge = float(args.get("totalCharge", 0.0))
        add_vacuum_force(self, topology, system, atoms, forceGroup, total_charge, POTENTIAL_NAME)

    def getMLLongRange(self) -> bool:
        """The model is local (finite cutoffs): no long-range ML interactions."""
        return False
