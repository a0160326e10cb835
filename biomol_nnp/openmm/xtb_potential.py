"""The openmm-ml potential ``xtb``: GFN2-xTB (xtb-python) for the region, true QM/MM.

Registered through the ``openmmml.potentials`` entry point, so after ``import openmmml``:

>>> potential = MLPotential("xtb", multiplicity=1)  # doctest: +SKIP
>>> system = potential.createMixedSystem(topology, mm_system, qm_atoms,
...                                      embedding="electrostatic")  # doctest: +SKIP

``createSystem``/mechanical embedding use the vacuum GFN2-xTB energy of the atoms. With the
``electrostatic`` embedding (:mod:`biomol_nnp.openmm.embedding`) the MM charges enter the xTB
Hamiltonian as point charges, chosen exactly as for the NNP: whole MM molecules (residues) whose
closest atom is within ``embeddingCutoff`` of the region, imaged next to it under periodic boundaries,
their charges scaled by the smooth switch of :func:`biomol_nnp.models.environment.embedding_environment`.
Each point charge carries the element of its MM atom (xtb's damping), as at labelling. Link caps
created by the embedding are ordinary region atoms with atomic number 1.

Forces: xtb gives the gradient on the QM atoms and on the point charges (mapped back to their MM
atoms). The switch adds a term in the switching shell only: the energy depends on each molecule's
weight ``w(d_min)`` and ``dE/dw_mol = sum_B q_B dE/dq'_B`` over the molecule's atoms. xtb does not
return ``dE/dq'_B``; it is **approximated** by the electrostatic potential of the QM Mulliken charges
at ``r_B`` with the damped Coulomb kernel ``erf(r/a)/r`` (``a`` = ``SWITCH_ESP_DAMPING_NM``). This
neglects the higher multipoles of the QM density, so energy is not exactly conserved while a
molecule crosses the shell; molecules fully inside (w = 1) or outside have exact forces. Measured on
the dipeptide with six waters (tests/physics/test_openmm_xtb.py): 6 kJ/mol/nm error out of ~950 on an
atom of the water with the smallest weight; < 0.05 kJ/mol/nm on region atoms and fully included waters.
Under periodic boundaries the region and each MM molecule are made whole first (OpenMM may wrap
positions atom by atom), so the energy does not change when molecules are split across the box.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import openmm
import openmm.app
import openmm.unit as u
import torch
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError, SimulationError
from biomol_nnp.models.environment import candidate_atoms, embedding_environment
from biomol_nnp.openmm.backend import local_environment, molecule_anchors
from biomol_nnp.openmm.potential import add_vacuum_force, topology_atomic_numbers
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

logger = logging.getLogger(__name__)

POTENTIAL_NAME = "xtb"
KNOWN_ARGS = ("multiplicity", "embeddingCutoff", "switchWidth", "accuracy", "maxIterations", "threads")
"""Keyword arguments of ``MLPotential('xtb', ...)``."""

DEFAULT_EMBEDDING_CUTOFF_NM = 1.0
"""Group cutoff of the MM molecules xtb sees (the NNP default, ``ModelSettings.embedding_cutoff_nm``)."""
DEFAULT_SWITCH_WIDTH_NM = 0.1
"""Width of the molecule switch below the cutoff (``ModelSettings.embedding_switch_width_nm``)."""
XTB_FORCE_NAME = "GFN2-xTB"
"""``Force.getName()`` of the GFN2-xTB/MM force."""
SWITCH_ESP_DAMPING_NM = 0.03
"""Damping length ``a`` of ``erf(r/a)/r`` in the Mulliken-charge potential used for the switch force."""


class XTBPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`XTBPotentialImpl` for ``MLPotential('xtb', ...)``."""

    def createImpl(self, name: str, **args: Any) -> XTBPotentialImpl:
        unknown = sorted(set(args) - set(KNOWN_ARGS))
        if unknown:
            raise InputError(f"MLPotential({name!r}) got unknown arguments {unknown}; allowed: {list(KNOWN_ARGS)}")
        settings: dict[str, Any] = {}
        for arg, field in (("accuracy", "accuracy"), ("maxIterations", "max_iterations"), ("threads", "threads")):
            if args.get(arg) is not None:
                settings[field] = args[arg]
        return XTBPotentialImpl(
            multiplicity=int(args.get("multiplicity", 1)),
            embedding_cutoff_nm=float(args.get("embeddingCutoff", DEFAULT_EMBEDDING_CUTOFF_NM)),
            switch_width_nm=float(args.get("switchWidth", DEFAULT_SWITCH_WIDTH_NM)),
            settings=settings,
        )


class XTBForceCallback:
    """Picklable ``openmm.PythonForce`` computation: GFN2-xTB of the region in the switched MM charges.

    The callback receives a State restricted to ``qm_atoms + mm_atoms`` (in that order).

    Parameters
    ----------
    qm_atoms, atomic_numbers : sequence of int
        System indices and atomic numbers of the region (link caps included, Z = 1).
    total_charge : float
        Region charge, e (rounded to an integer for xtb).
    multiplicity : int
        Spin multiplicity 2S+1.
    mm_atoms, mm_charges, mm_numbers, mm_molecules : sequences
        Candidate MM point charges: system index, charge (e), element, molecule (residue) index.
    periodic : bool
        Whether the box is read from the State (region made whole, molecules imaged next to it).
    cutoff_nm, switch_width_nm : float
        Molecule cutoff and switch width, nm.
    settings : dict
        :class:`biomol_nnp.config.LabelSettings` fields (accuracy, max_iterations, threads, ...).
    """

    def __init__(
        self,
        qm_atoms: Sequence[int],
        atomic_numbers: Sequence[int],
        total_charge: float,
        multiplicity: int = 1,
        mm_atoms: Sequence[int] = (),
        mm_charges: Sequence[float] = (),
        mm_numbers: Sequence[int] = (),
        mm_molecules: Sequence[int] = (),
        periodic: bool = False,
        cutoff_nm: float = DEFAULT_EMBEDDING_CUTOFF_NM,
        switch_width_nm: float = DEFAULT_SWITCH_WIDTH_NM,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if len(qm_atoms) == 0:
            raise InputError("qm_atoms is empty; give the indices of at least one region atom")
        if len(atomic_numbers) != len(qm_atoms):
            raise InputError(f"atomic_numbers has {len(atomic_numbers)} entries but qm_atoms has {len(qm_atoms)}")
        if not len(mm_atoms) == len(mm_charges) == len(mm_numbers) == len(mm_molecules):
            raise InputError(
                f"mm_atoms ({len(mm_atoms)}), mm_charges ({len(mm_charges)}), mm_numbers ({len(mm_numbers)}) and "
                f"mm_molecules ({len(mm_molecules)}) must have one entry per MM atom"
            )
        if not 0.0 < switch_width_nm <= cutoff_nm:
            raise InputError(
                f"switchWidth={switch_width_nm} nm must be positive and at most embeddingCutoff={cutoff_nm} nm"
            )
        if abs(total_charge - round(total_charge)) > 1e-3:
            raise InputError(f"xtb needs an integer region charge, got totalCharge={total_charge}")
        self.qm_atoms = [int(i) for i in qm_atoms]
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.total_charge = int(round(total_charge))
        self.multiplicity = int(multiplicity)
        self.mm_atoms = [int(i) for i in mm_atoms]
        self.mm_charges = [float(q) for q in mm_charges]
        self.mm_numbers = [int(z) for z in mm_numbers]
        renumber = {m: k for k, m in enumerate(dict.fromkeys(int(m) for m in mm_molecules))}
        self.mm_molecules = [renumber[int(m)] for m in mm_molecules]
        self.periodic = bool(periodic)
        self.cutoff_nm = float(cutoff_nm)
        self.switch_width_nm = float(switch_width_nm)
        self.settings = dict(settings or {})
        self.last_result: Any = None
        self._mm_anchors: np.ndarray | None = None
        self._mm_molecules_np: np.ndarray | None = None

    def particles(self) -> list[int]:
        """System indices of the particles the force acts on: region atoms, then MM charges."""
        return self.qm_atoms + self.mm_atoms

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["last_result"] = None
        state["_mm_anchors"] = None
        state["_mm_molecules_np"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _anchors(self) -> np.ndarray:
        """Anchor atom of each MM atom's molecule, cached (not pickled: rebuilt after loading)."""
        if self._mm_anchors is None:
            self._mm_anchors = molecule_anchors(self.mm_molecules)
        return self._mm_anchors

    def _molecules(self) -> np.ndarray:
        """Molecule index of each MM atom, cached as an array."""
        if self._mm_molecules_np is None:
            self._mm_molecules_np = np.asarray(self.mm_molecules, dtype=np.int64)
        return self._mm_molecules_np

    def environment(
        self, region: np.ndarray, mm_positions: np.ndarray, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Selected MM atoms: candidate index ``[K]``, imaged positions ``[K,3]`` nm and switch weights ``[K]``.

        ``mm_positions`` holds every MM atom with molecules whole. Uses the NNP's selection
        (:func:`biomol_nnp.models.environment.candidate_atoms` then
        :func:`~biomol_nnp.models.environment.embedding_environment`, in its order).
        """
        subset = candidate_atoms(region, mm_positions, self._molecules(), box, self.cutoff_nm)
        return self._select(region, mm_positions[subset], subset, box)

    def _select(
        self,
        region: np.ndarray,
        local: np.ndarray,
        subset: np.ndarray,
        box: np.ndarray | None,
        images: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`environment` on the candidate atoms ``subset`` at ``local`` (molecules whole; ``images``: next
        to the region, when known). Unit charges: the switched charges are the weights."""
        if len(subset) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0)
        with torch.no_grad():
            imaged, weights, kept = embedding_environment(
                torch.from_numpy(region),
                torch.from_numpy(local),
                torch.ones(len(subset), dtype=torch.float64),
                torch.from_numpy(self._molecules()[subset]),
                None if box is None else torch.from_numpy(box),
                self.cutoff_nm,
                self.switch_width_nm,
                None if images is None else torch.from_numpy(images),
            )
        return subset[kept.numpy()], imaged.numpy(), weights.numpy()

    def compute(self, positions_nm: np.ndarray, box_nm: np.ndarray | None) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces ``[N+M,3]`` (kJ/mol/nm) for the particles of :meth:`particles`."""
        from biomol_nnp.qm.xtb_engine import XTBEngine

        n_qm = len(self.qm_atoms)
        positions = np.asarray(positions_nm, dtype=np.float64)
        box = None if box_nm is None else np.asarray(box_nm, dtype=np.float64)
        region, subset, local, images = local_environment(
            positions, n_qm, self._anchors(), self._molecules(), box, self.cutoff_nm
        )
        kept, imaged, weights = self._select(region, local, subset, box, images)
        used = weights > 0.0  # molecules exactly at the cutoff add nothing
        kept = kept[used]
        engine = XTBEngine(LabelSettings.model_validate(self.settings))
        result = engine.compute(
            np.asarray(self.atomic_numbers),
            region,
            self.total_charge,
            self.multiplicity,
            imaged[used] if len(kept) else None,
            np.asarray(self.mm_charges)[kept] * weights[used] if len(kept) else None,
            np.asarray(self.mm_numbers)[kept] if len(kept) else None,
        )
        self.last_result = result
        if not np.isfinite(result.energy):
            raise SimulationError("GFN2-xTB returned a non-finite energy; the structure has probably exploded")
        forces = np.zeros_like(positions)
        forces[:n_qm] = result.forces
        if len(kept):
            np.add.at(forces, n_qm + kept, result.mm_forces)
            if bool((weights < 1.0).any()):
                region_forces, local_forces = self._switch_forces(
                    region, local, subset, box, imaged, result.charges, images
                )
                forces[:n_qm] += region_forces
                forces[n_qm + subset] += local_forces
        return float(result.energy), forces

    def _switch_forces(
        self,
        region: np.ndarray,
        local: np.ndarray,
        subset: np.ndarray,
        box: np.ndarray | None,
        imaged: np.ndarray,
        qm_charges: np.ndarray,
        images: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forces (region ``[N,3]``, candidates ``[K,3]``) through the switch weights:
        ``-grad sum_B phi_B q_B w_B(R)`` with ``phi_B`` held fixed.

        ``phi_B`` (kJ/mol/e) approximates ``dE/dq'_B`` by the damped Coulomb potential of the QM Mulliken
        charges at the imaged ``r_B`` (module docstring). Atoms of molecules with ``w = 1`` have no weight
        gradient, so only the switching shell contributes.
        """
        with torch.no_grad():
            distances = torch.linalg.norm(
                torch.from_numpy(imaged).unsqueeze(1) - torch.from_numpy(region).unsqueeze(0), dim=-1
            )
            a = SWITCH_ESP_DAMPING_NM
            kernel = torch.where(
                distances > 1e-9,
                torch.erf(distances / a) / distances.clamp_min(1e-9),
                torch.full_like(distances, 2.0 / (np.sqrt(np.pi) * a)),
            )
            potential = ELECTROSTATIC_CONSTANT * kernel @ torch.from_numpy(np.asarray(qm_charges, dtype=np.float64))
        region_t = torch.from_numpy(region.copy()).requires_grad_(True)
        local_t = torch.from_numpy(local.copy()).requires_grad_(True)
        _, switched, _ = embedding_environment(
            region_t,
            local_t,
            torch.tensor(self.mm_charges, dtype=torch.float64)[torch.from_numpy(subset)],
            torch.from_numpy(self._molecules()[subset]),
            None if box is None else torch.from_numpy(box),
            self.cutoff_nm,
            self.switch_width_nm,
            None if images is None else torch.from_numpy(images),
        )
        region_forces, local_forces = np.zeros_like(region), np.zeros_like(local)
        surrogate = (switched * potential).sum()
        if not surrogate.requires_grad:
            return region_forces, local_forces
        grad_region, grad_local = torch.autograd.grad(surrogate, (region_t, local_t), allow_unused=True)
        if grad_region is not None:
            region_forces = -grad_region.numpy()
        if grad_local is not None:
            local_forces = -grad_local.numpy()
        return region_forces, local_forces

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        """PythonForce entry point: read positions (nm) and box from ``state``, return energy and forces."""
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if self.periodic else None
        return self.compute(positions, box)


class XTBPotentialImpl(MLPotentialImpl):
    """GFN2-xTB as an openmm-ml potential (vacuum with ``addForces``, point charges with ``make_force``).

    Parameters
    ----------
    multiplicity : int
        Spin multiplicity of the region.
    embedding_cutoff_nm, switch_width_nm : float
        Molecule cutoff and switch width of the electrostatic embedding, nm.
    settings : dict, optional
        :class:`biomol_nnp.config.LabelSettings` fields for xtb (``accuracy``, ``max_iterations``, ``threads``).

    Examples
    --------
    >>> impl = XTBPotentialImpl(multiplicity=1)
    >>> impl.multiplicity
    1
    """

    def __init__(
        self,
        multiplicity: int = 1,
        embedding_cutoff_nm: float = DEFAULT_EMBEDDING_CUTOFF_NM,
        switch_width_nm: float = DEFAULT_SWITCH_WIDTH_NM,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if multiplicity < 1:
            raise InputError(f"multiplicity={multiplicity} is not allowed; give 2S+1 >= 1")
        self.multiplicity = int(multiplicity)
        self.embedding_cutoff_nm = float(embedding_cutoff_nm)
        self.switch_width_nm = float(switch_width_nm)
        self.settings = dict(settings or {})
        LabelSettings.model_validate(self.settings)  # fail at construction on bad settings

    @staticmethod
    def _numbers(topology: openmm.app.Topology, atoms: Iterable[int], what: str) -> list[int]:
        return topology_atomic_numbers(topology, atoms, what, "xtb needs an element for it")

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
        """The PythonForce running GFN2-xTB on ``atoms`` with point charges ``mm_charges`` on ``mm_atoms``."""
        residue_of = {atom.index: atom.residue.index for atom in topology.atoms()}
        kept = [(int(i), float(q)) for i, q in zip(mm_atoms, mm_charges, strict=True) if float(q) != 0.0]
        mm = [i for i, _ in kept]
        callback = XTBForceCallback(
            atoms,
            self._numbers(topology, atoms, "region"),
            total_charge,
            self.multiplicity,
            mm_atoms=mm,
            mm_charges=[q for _, q in kept],
            mm_numbers=self._numbers(topology, mm, "MM"),
            mm_molecules=[residue_of[i] for i in mm],
            periodic=periodic,
            cutoff_nm=self.embedding_cutoff_nm,
            switch_width_nm=self.switch_width_nm,
            settings=self.settings,
        )
        force = openmm.PythonForce(callback)
        force.setParticles(callback.particles())
        force.setUsesPeriodicBoundaryConditions(callback.periodic)
        force.setForceGroup(force_group)
        force.setName(XTB_FORCE_NAME)
        return force

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,
        **args: Any,
    ) -> None:
        """Add the vacuum GFN2-xTB energy of ``atoms`` (all atoms if None); ``args`` may hold ``totalCharge``."""
        total_charge = float(args.get("totalCharge") or 0.0)
        add_vacuum_force(self, topology, system, atoms, forceGroup, total_charge, "GFN2-xTB")

    def getMLLongRange(self) -> bool:
        """GFN2-xTB of the region is evaluated whole: no long-range ML interactions to add."""
        return False
