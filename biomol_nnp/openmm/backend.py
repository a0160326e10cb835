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

import dataclasses
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
from biomol_nnp.models.environment import embedding_environment, nearby_candidates
from biomol_nnp.qm.sampling import minimum_image

logger = logging.getLogger(__name__)

BACKENDS = ("python", "torch")
"""Names accepted by :func:`create_force`."""

NNP_FORCE_NAME = "BiomolNNP"
"""``Force.getName()`` of the model force (NNP energy of the region plus its embedding energy)."""


@dataclasses.dataclass
class ModelInputs:
    """The model's inputs for one configuration (nm, e), see :meth:`ModelForceCallback.model_inputs`.

    ``candidates`` [K, 3] are the MM atoms ``candidate_index`` (into the callback's MM atoms) that may
    see the region; ``mm_positions`` and ``mm_charges`` are the ones within the cutoff, imaged and
    switched, which are MM atoms ``mm_index``.
    """

    region: torch.Tensor
    candidates: torch.Tensor
    candidate_index: np.ndarray
    mm_positions: torch.Tensor
    mm_charges: torch.Tensor
    mm_index: np.ndarray


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
        self._molecules_np = np.zeros(0, dtype=np.int64)

    def particles(self) -> list[int]:
        """System indices of the particles the force acts on: ML atoms, then MM charges."""
        return self.ml_atoms + self.mm_atoms

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_module"] = None
        state["_tensors"] = {}
        state["_mm_anchors"] = None
        state["_molecules_np"] = np.zeros(0, dtype=np.int64)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _load(self) -> None:
        from biomol_nnp.models.export import load_model

        module, metadata = load_model(self.model_path)
        self._module = inference_module(module)
        self.cutoff_nm = float(metadata["embedding_cutoff_nm"])
        self.switch_width_nm = float(metadata.get("embedding_switch_width_nm", 0.1))
        self._tensors = {
            "mm_molecules": torch.tensor(self.mm_molecules, dtype=torch.int64),
            "atomic_numbers": torch.tensor(self.atomic_numbers, dtype=torch.int64),
            "total_charge": torch.tensor(self.total_charge, dtype=torch.float64),
            "mm_charges": torch.tensor(self.mm_charges, dtype=torch.float64),
            "no_box": torch.zeros((0, 3), dtype=torch.float64),
        }
        self._molecules_np = np.asarray(self.mm_molecules, dtype=np.int64)
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
        positions = np.asarray(positions_nm, dtype=np.float64)
        previous_threads = torch.get_num_threads()
        if previous_threads != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        try:
            inputs = self.model_inputs(positions, box_nm, requires_grad=True)
            energy = self.module(
                inputs.region,
                self._tensors["atomic_numbers"],
                self._tensors["total_charge"],
                inputs.mm_positions,
                inputs.mm_charges,
                self._tensors["no_box"],
            )
            gradients = torch.autograd.grad(energy, (inputs.region, inputs.candidates), allow_unused=True)
        finally:
            if previous_threads != self.torch_threads:
                torch.set_num_threads(previous_threads)
        value = float(energy.detach())
        if not np.isfinite(value):
            raise SimulationError(
                f"the model {self.model_path!r} returned energy {value} for the ML region; "
                "the structure has probably exploded: lower the time step or minimise first"
            )
        forces = np.zeros_like(positions)
        n_ml = len(self.ml_atoms)
        if gradients[0] is not None:
            forces[:n_ml] = -gradients[0].numpy()
        if gradients[1] is not None:
            forces[n_ml + inputs.candidate_index] = -gradients[1].numpy()
        return value, forces

    @property
    def module(self) -> torch.jit.ScriptModule:
        """The deployed model as this callback runs it (loaded on first use; no weight gradients)."""
        if self._module is None:
            self._load()
        assert self._module is not None
        return self._module

    def model_inputs(
        self, positions_nm: np.ndarray, box_nm: np.ndarray | None, requires_grad: bool = False
    ) -> ModelInputs:
        """What the model is given for particle positions [N + M, 3] nm (ML atoms, then MM charges).

        The region made whole, and the whole MM molecules within the embedding cutoff imaged next to it
        with switched charges; ``box_nm`` [3, 3] nm or None. With ``requires_grad`` the region and the
        candidate MM positions are leaves whose gradients give the forces.
        """
        self.module  # noqa: B018 - loads the model and the tensors the selection uses
        box = None if box_nm is None else np.asarray(box_nm, dtype=np.float64)
        region, subset, local, images = local_environment(
            np.asarray(positions_nm, dtype=np.float64),
            len(self.ml_atoms),
            self._anchors(),
            self._molecules_np,
            box,
            self.cutoff_nm,
        )
        region_t = torch.from_numpy(region).requires_grad_(requires_grad)
        local_t = torch.from_numpy(local).requires_grad_(requires_grad)
        mm_positions, mm_charges, kept = self._select(region_t, local_t, subset, box, images)
        return ModelInputs(region_t, local_t, subset, mm_positions, mm_charges, subset[kept.numpy()])

    def _select(
        self,
        region: torch.Tensor,
        local: torch.Tensor,
        subset: np.ndarray,
        box: np.ndarray | None,
        images: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole MM molecules within the embedding cutoff, imaged next to the region, charges switched.

        ``local`` holds the candidate MM atoms ``subset`` (:func:`local_environment`), molecules whole, and
        ``images`` their images next to the region when known; returns imaged positions, switched charges and
        the kept rows of ``local``.
        """
        if len(subset) == 0:
            return local.reshape(0, 3), self._tensors["mm_charges"][:0], torch.zeros(0, dtype=torch.long)
        index = torch.from_numpy(subset)
        return embedding_environment(
            region,
            local,
            self._tensors["mm_charges"].index_select(0, index),
            self._tensors["mm_molecules"].index_select(0, index),
            None if box is None else torch.from_numpy(box),
            self.cutoff_nm,
            self.switch_width_nm,
            None if images is None else torch.from_numpy(images),
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


EXPORTED_METHODS = ("ensemble_energies", "ensemble_mean_std", "charges")
"""Methods of the deployed-model contract kept by :func:`inference_module`."""


def inference_module(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The callback's private copy of a loaded model, made cheaper to differentiate: parameters stop
    requiring gradients (only positions are differentiated) and the module is frozen (weights inlined as
    constants, ``torch.jit.freeze``), keeping the contract's exported methods. Same energies and forces
    (to round-off); about 5% less time per call. A module that cannot be frozen is used unfrozen."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        return torch.jit.freeze(module.eval(), preserved_attrs=list(EXPORTED_METHODS))
    except RuntimeError as err:  # freezing is an optimisation only
        logger.debug("model not frozen (%s); using it as loaded", err)
        return module


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


def local_environment(
    positions: np.ndarray,
    n_region: int,
    anchors: np.ndarray,
    molecules: np.ndarray,
    box: np.ndarray | None,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The region and the MM molecules that may see it, each made whole: what an embedding callback needs.

    Parameters
    ----------
    positions : numpy.ndarray, shape (N + M, 3)
        Region atoms then MM atoms, nm (possibly wrapped atom by atom).
    n_region : int
        N.
    anchors, molecules : numpy.ndarray, shape (M,)
        :func:`molecule_anchors` and the molecule index (from 0) of each MM atom.
    box : numpy.ndarray, shape (3, 3), or None
        Periodic box (rows), nm.
    cutoff : float
        Group cutoff of the embedding, nm.

    Returns
    -------
    region : numpy.ndarray, shape (N, 3)
        Region made whole (minimum image relative to its first atom), nm.
    subset : numpy.ndarray, shape (K,)
        Sorted indices (into the M MM atoms) of every atom of each molecule that may be within ``cutoff``
        (:func:`biomol_nnp.models.environment.candidate_atoms`, one O(M) pass).
    local : numpy.ndarray, shape (K, 3)
        Their positions with each molecule whole (:func:`whole_molecules`), nm.
    images : numpy.ndarray, shape (K, 3), or None
        Each candidate atom's image next to the region, nm (``mm_images`` of
        :func:`biomol_nnp.models.environment.embedding_environment`); None without a box.
    """
    region = np.array(positions[:n_region], dtype=np.float64)
    mm = positions[n_region:]
    if box is not None:
        region = region[0] + minimum_image(region - region[0], box)
    subset, images = nearby_candidates(region, mm, molecules, box, cutoff)
    local = np.array(mm[subset], dtype=np.float64)
    if box is not None and len(subset):  # whole molecules are in the subset, so are their anchors
        local = whole_molecules(local, np.searchsorted(subset, anchors[subset]), box)
    return region, subset, local, images


def force_callback(force: openmm.PythonForce) -> Any:
    """A copy of the computation a ``PythonForce`` runs (e.g. its :class:`ModelForceCallback`).

    ``PythonForce.getPickledFunction`` returns a SWIG pointer in OpenMM 8.6, so the pickle is read from the
    force's XML. Unpickling runs code: use it on forces built by this package only.
    """
    import pickle
    import re

    found = re.search(r'function="([0-9a-fA-F]+)"', openmm.XmlSerializer.serialize(force))
    if found is None:
        raise InputError(f"force {force.getName()!r} has no pickled computation in its XML; is it a PythonForce?")
    return pickle.loads(bytes.fromhex(found.group(1)))  # noqa: S301  (our own force)


def make_force(callback: ModelForceCallback, force_group: int = 0, name: str = NNP_FORCE_NAME) -> openmm.PythonForce:
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
