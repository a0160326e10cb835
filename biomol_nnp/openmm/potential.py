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
        topology_atoms = list(topology.atoms())
        numbers = []
        for index in atoms:
            element = topology_atoms[index].element
            if element is None:
                raise ModelFileError(
                    f"ML atom {index} ({topology_atoms[index].name}) has no element (a virtual "
                    "site or extra particle); remove it from the ML region"
                )
            numbers.append(int(element.atomic_number))
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
        atom_list = list(range(topology.getNumAtoms())) if atoms is None else [int(i) for i in atoms]
        total_charge = float(args.get("totalCharge", 0.0))
        periodic = system.usesPeriodicBoundaryConditions() or topology.getPeriodicBoxVectors() is not None
        force = self.make_force(topology, atom_list, total_charge, [], [], periodic, forceGroup)
        system.addForce(force)
        logger.info("added biomol-nnp vacuum potential for %d atoms (total charge %g e)", len(atom_list), total_charge)

    def getMLLongRange(self) -> bool:
        """The model is local (finite cutoffs): no long-range ML interactions."""
        return False
