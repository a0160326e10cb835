"""Force backends that evaluate a deployed model inside an OpenMM System.

The backend is chosen in one place, :func:`create_force`. The default (``"python"``) wraps the
TorchScript model in an ``openmm.PythonForce`` whose computation is a picklable
:class:`ModelForceCallback`. A ``"torch"`` backend (openmm-torch ``TorchForce``) would plug in there;
the PyPI openmm-torch wheel is ABI-incompatible with the CPU torch build used here (DESIGN.md).

The force acts on the ML atoms and the MM atoms with nonzero charge only (``PythonForce.setParticles``),
so OpenMM copies only those positions into the callback.

>>> force = create_force("model.pt", ml_atoms=[0, 1, 2], atomic_numbers=[8, 1, 1],
...                      total_charge=0.0)  # doctest: +SKIP
>>> system.addForce(force)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.unit as u
import torch

from biomol_nnp.exceptions import InputError, SimulationError
from biomol_nnp.models.environment import embedding_environment
from biomol_nnp.qm.sampling import minimum_image

logger = logging.getLogger(__name__)

BACKENDS = ("python", "torch")
"""Names accepted by :func:`create_force`."""


class ModelForceCallback:
    """Picklable ``openmm.PythonForce`` computation: NNP energy plus embedding energy and forces.

    The callback receives a State restricted to the particles ``ml_atoms + mm_atoms`` (in that order,
    see :meth:`particles`), so ``ml_atoms`` and ``mm_atoms`` are only used to build the force.
    The TorchScript module is loaded lazily on the first call and dropped when pickled, so the
    callback survives ``XmlSerializer`` and ``copy.deepcopy`` of the force (and of a System).

    Parameters
    ----------
    model_path : path-like
        Deployed model file (``model.pt``).
    ml_atoms : sequence of int
        System indices of the ML region atoms, length N.
    atomic_numbers : sequence of int
        Atomic numbers of ``ml_atoms``, length N.
    total_charge : float
        Total charge of the ML region, e.
    mm_atoms : sequence of int, optional
        System indices of the MM point charges the region sees, length M (may be empty).
    mm_charges : sequence of float, optional
        Charges of ``mm_atoms``, e, length M.
    periodic : bool
        Whether the System is periodic; the box ``[3,3]`` nm is then passed to the model and the ML
        region is made whole (minimum image relative to its first atom) before the call.
    torch_threads : int
        Threads torch uses inside the call (set on entry, restored on exit).
    embedding : bool
        If False, the model is called with no MM charges (vacuum energy, mechanical embedding).

    Examples
    --------
    >>> callback = ModelForceCallback("model.pt", [0, 1, 2], [8, 1, 1], 0.0)  # doctest: +SKIP
    >>> force = openmm.PythonForce(callback)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        ml_atoms: Sequence[int],
        atomic_numbers: Sequence[int],
        total_charge: float,
        mm_atoms: Sequence[int] = (),
        mm_charges: Sequence[float] = (),
        periodic: bool = False,
        torch_threads: int = 1,
        embedding: bool = True,
        mm_molecules: Sequence[int] | None = None,
    ) -> None:
        if len(ml_atoms) == 0:
            raise InputError("ml_atoms is empty; give the indices of at least one ML region atom")
        if len(atomic_numbers) != len(ml_atoms):
            raise InputError(
                f"atomic_numbers has {len(atomic_numbers)} entries but ml_atoms has "
                f"{len(ml_atoms)}; give one atomic number per ML atom"
            )
        if len(mm_charges) != len(mm_atoms):
            raise InputError(
                f"mm_charges has {len(mm_charges)} entries but mm_atoms has {len(mm_atoms)}; "
                "give one charge per MM atom"
            )
        if torch_threads < 1:
            raise InputError(f"torch_threads={torch_threads} is not allowed; give an integer >= 1")
        overlap = set(ml_atoms) & set(mm_atoms)
        if overlap:
            raise InputError(
                f"atoms {sorted(overlap)[:10]} are both ML atoms and MM charges; an atom belongs to one region only"
            )
        self.model_path = str(Path(model_path).resolve())
        self.ml_atoms = [int(i) for i in ml_atoms]
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.total_charge = float(total_charge)
        self.embedding = bool(embedding)
        self.mm_atoms = [int(i) for i in mm_atoms] if self.embedding else []
        self.mm_charges = [float(q) for q in mm_charges] if self.embedding else []
        molecules = list(range(len(self.mm_atoms))) if mm_molecules is None else list(mm_molecules)
        if self.embedding and len(molecules) != len(self.mm_atoms):
            raise InputError(
                f"mm_molecules has {len(molecules)} entries but mm_atoms has {len(mm_atoms)}; "
                "give the molecule (residue) index of each MM atom"
            )
        renumber = {m: k for k, m in enumerate(dict.fromkeys(molecules))}
        self.mm_molecules = [renumber[m] for m in molecules] if self.embedding else []
        self.periodic = bool(periodic)
        self.torch_threads = int(torch_threads)
        self.cutoff_nm = 0.0
        self.switch_width_nm = 0.0
        self._module: Any = None
        self._tensors: dict[str, torch.Tensor] = {}
        self._mm_anchors: np.ndarray | None = None

    def particles(self) -> list[int]:
        """System indices of the particles the force acts on: ML atoms, then MM charges."""
        return self.ml_atoms + self.mm_atoms

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_module"] = None
        state["_tensors"] = {}
        state["_mm_anchors"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _load(self) -> None:
        from biomol_nnp.models.export import load_model

        self._module, metadata = load_model(self.model_path)
        self.cutoff_nm = float(metadata["embedding_cutoff_nm"])
        self.switch_width_nm = float(metadata.get("embedding_switch_width_nm", 0.1))
        self._tensors = {
            "mm_molecules": torch.tensor(self.mm_molecules, dtype=torch.int64),
            "atomic_numbers": torch.tensor(self.atomic_numbers, dtype=torch.int64),
            "total_charge": torch.tensor(self.total_charge, dtype=torch.float64),
            "mm_charges": torch.tensor(self.mm_charges, dtype=torch.float64),
            "no_box": torch.zeros((0, 3), dtype=torch.float64),
        }
        logger.debug(
            "loaded %s for %d ML atoms and %d MM charges",
            self.model_path,
            len(self.ml_atoms),
            len(self.mm_atoms),
        )

    def compute(self, positions_nm: np.ndarray, box_nm: np.ndarray | None) -> tuple[float, np.ndarray]:
        """Energy and forces for the particles of :meth:`particles`.

        Parameters
        ----------
        positions_nm : numpy.ndarray, shape (N + M, 3)
            Positions of the ML atoms then the MM charges, nm.
        box_nm : numpy.ndarray, shape (3, 3), or None
            Periodic box vectors (rows), nm, or None without periodic boundaries.

        Returns
        -------
        energy : float
            kJ/mol.
        forces : numpy.ndarray, shape (N + M, 3)
            kJ/mol/nm.
        """
        if self._module is None:
            self._load()
        n_ml = len(self.ml_atoms)
        positions = np.asarray(positions_nm, dtype=np.float64)
        if box_nm is not None:
            box_nm = np.asarray(box_nm, dtype=np.float64)
            positions = unwrap_periodic(positions, n_ml, self._anchors(), box_nm)
            box = torch.from_numpy(box_nm)
        else:
            box = self._tensors["no_box"]
        previous_threads = torch.get_num_threads()
        if previous_threads != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        try:
            all_positions = torch.from_numpy(positions).requires_grad_(True)
            mm_positions, mm_charges, _ = self._environment(all_positions[:n_ml], all_positions[n_ml:], box)
            energy = self._module(
                all_positions[:n_ml],
                self._tensors["atomic_numbers"],
                self._tensors["total_charge"],
                mm_positions,
                mm_charges,
                self._tensors["no_box"],
            )
            (gradient,) = torch.autograd.grad(energy, all_positions, allow_unused=True)
        finally:
            if previous_threads != self.torch_threads:
                torch.set_num_threads(previous_threads)
        value = float(energy.detach())
        if not np.isfinite(value):
            raise SimulationError(
                f"the model {self.model_path!r} returned energy {value} for the ML region; "
                "the structure has probably exploded: lower the time step or minimise first"
            )
        forces = np.zeros_like(positions) if gradient is None else -gradient.detach().numpy()
        return value, forces

    def _environment(
        self, region: torch.Tensor, mm_positions: torch.Tensor, box: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole MM molecules within the embedding cutoff, imaged next to the region, charges switched."""
        if not self.mm_atoms:
            return mm_positions.reshape(0, 3), self._tensors["mm_charges"], torch.zeros(0, dtype=torch.long)
        return embedding_environment(
            region,
            mm_positions,
            self._tensors["mm_charges"],
            self._tensors["mm_molecules"],
            box if box.shape[0] == 3 else None,
            self.cutoff_nm,
            self.switch_width_nm,
        )

    def _anchors(self) -> np.ndarray:
        """Anchor atom of each MM atom's molecule, cached (not pickled: rebuilt after loading)."""
        if self._mm_anchors is None:
            self._mm_anchors = molecule_anchors(self.mm_molecules)
        return self._mm_anchors

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        """PythonForce entry point: read positions (nm) and box from ``state``, return energy and forces."""
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if self.periodic else None
        return self.compute(positions, box)


def molecule_anchors(molecules: Sequence[int]) -> np.ndarray:
    """For each atom, the index of the first atom of its molecule (the anchor :func:`whole_molecules` uses)."""
    first: dict[int, int] = {}
    return np.asarray([first.setdefault(int(m), k) for k, m in enumerate(molecules)], dtype=np.int64)


def whole_molecules(positions: np.ndarray, anchors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions ``[M,3]`` nm with each molecule made whole: minimum image relative to its anchor atom.

    ``anchors`` comes from :func:`molecule_anchors`. A constant lattice shift per atom, so forces need no
    correction. Without it, positions wrapped atom by atom (as OpenMM may pass them, or as a wrapped
    trajectory holds them) split molecules across the box and
    :func:`biomol_nnp.models.environment.embedding_environment` would image a split molecule wrongly.
    """
    anchor = positions[anchors]
    return anchor + minimum_image(positions - anchor, box)


def unwrap_periodic(positions: np.ndarray, n_region: int, anchors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of ``positions`` [n_region + M, 3] nm with the region whole (minimum image relative to its first
    atom) and each of the M MM molecules whole (:func:`whole_molecules`); every shift is a lattice vector."""
    out = np.array(positions, dtype=np.float64, copy=True)
    region = out[:n_region]
    out[:n_region] = region[0] + minimum_image(region - region[0], box)
    if len(out) > n_region:
        out[n_region:] = whole_molecules(out[n_region:], anchors, box)
    return out


def make_force(callback: ModelForceCallback, force_group: int = 0, name: str = "BiomolNNP") -> openmm.PythonForce:
    """An ``openmm.PythonForce`` running ``callback`` on its particles, in ``force_group``."""
    force = openmm.PythonForce(callback)
    force.setParticles(callback.particles())
    force.setUsesPeriodicBoundaryConditions(callback.periodic)
    force.setForceGroup(force_group)
    force.setName(name)
    return force


def create_force(
    model_path: str | os.PathLike,
    ml_atoms: Sequence[int],
    atomic_numbers: Sequence[int],
    total_charge: float,
    mm_atoms: Sequence[int] = (),
    mm_charges: Sequence[float] = (),
    periodic: bool = False,
    torch_threads: int = 1,
    embedding: bool = True,
    force_group: int = 0,
    backend: str = "python",
    mm_molecules: Sequence[int] | None = None,
) -> openmm.Force:
    """Create the OpenMM Force evaluating a deployed model; the single place a backend is chosen.

    Parameters
    ----------
    model_path, ml_atoms, atomic_numbers, total_charge, mm_atoms, mm_charges, periodic
        As for :class:`ModelForceCallback`.
    torch_threads, embedding
        As for :class:`ModelForceCallback` (charges in e, positions in nm, energies in kJ/mol).
        MM atoms with zero charge are dropped.
    force_group : int
        Force group of the returned force (0-31).
    backend : {"python", "torch"}
        ``"python"``: ``openmm.PythonForce`` (default). ``"torch"``: openmm-torch ``TorchForce`` (not
        available with this torch build).

    Returns
    -------
    openmm.Force
        The force, not yet added to a System.

    Examples
    --------
    >>> force = create_force("model.pt", [0, 1, 2], [8, 1, 1], 0.0, periodic=False)  # doctest: +SKIP
    """
    if backend == "torch":
        raise InputError(
            "backend='torch' (openmm-torch TorchForce) is not usable with this torch build: the "
            "openmm-torch wheel is ABI-incompatible with torch "
            + torch.__version__
            + "; use backend='python' (openmm.PythonForce)"
        )
    if backend != "python":
        raise InputError(f"backend={backend!r} is not known; choose one of {list(BACKENDS)}")
    molecules = list(range(len(mm_atoms))) if mm_molecules is None else list(mm_molecules)
    if len(molecules) != len(mm_atoms):
        raise InputError(
            f"mm_molecules has {len(molecules)} entries but mm_atoms has {len(mm_atoms)}; "
            "give the molecule (residue) index of each MM atom"
        )
    kept = [
        (int(i), float(q), int(m)) for i, q, m in zip(mm_atoms, mm_charges, molecules, strict=True) if float(q) != 0.0
    ]
    callback = ModelForceCallback(
        model_path,
        ml_atoms,
        atomic_numbers,
        total_charge,
        mm_atoms=[i for i, _, _ in kept],
        mm_charges=[q for _, q, _ in kept],
        mm_molecules=[m for _, _, m in kept],
        periodic=periodic,
        torch_threads=torch_threads,
        embedding=embedding,
    )
    return make_force(callback, force_group=force_group)
