"""Ensemble disagreement of a deployed model: energy spread and the largest per-atom force spread.

The deployed model exports ``ensemble_energies(...) -> [K]`` (DESIGN.md, model-file contract). One call
evaluates every member from one descriptor pass; member forces come from K backward passes through the
same graph (``retain_graph``), so the cost is one forward pass plus K gradients.

Definitions, for members k = 1..K with energies E_k (kJ/mol) and forces F_k,i on atom i (kJ/mol/nm):

- ``energy_std = sqrt(mean_k (E_k - <E>)^2)`` (population standard deviation, as ``ensemble_mean_std``);
- ``max_force_std = max_i sqrt(mean_k |F_k,i - <F_i>|^2)`` over the region atoms and the MM atoms given
  (an MM atom's force is its embedding force).

>>> energy_std, max_force_std = ensemble_uncertainty("model.pt", positions, [6, 1, 1, 1], 0.0,
...     mm_positions, mm_charges, None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from biomol_nnp.exceptions import InputError

ModelLike = Any
"""A loaded TorchScript model (``torch.jit.ScriptModule``) or the path of a ``model.pt`` file."""


def _as_tensor(values: Any, dtype: torch.dtype, name: str, shape_tail: tuple[int, ...]) -> torch.Tensor:
    """``values`` as a detached tensor of ``dtype``; the trailing shape must be ``shape_tail``."""
    if hasattr(values, "value_in_unit"):
        raise InputError(f"{name} is an openmm Quantity; pass a bare array in nm / e (OpenMM units)")
    tensor = torch.as_tensor(np.asarray(values), dtype=dtype).detach().clone()
    if shape_tail and tuple(tensor.shape[-len(shape_tail) :]) != shape_tail:
        raise InputError(f"{name} has shape {tuple(tensor.shape)}; expected (n, {', '.join(map(str, shape_tail))})")
    return tensor


def _load(model: ModelLike) -> Any:
    if isinstance(model, str | os.PathLike):
        from biomol_nnp.models.export import load_model

        module, _ = load_model(model)
        return module
    if not hasattr(model, "ensemble_energies"):
        raise InputError(
            f"model of type {type(model).__name__} has no ensemble_energies method; "
            "give a deployed model (model.pt) or the module torch.jit.load returns"
        )
    return model


def member_energies_forces(
    model: ModelLike,
    positions_region: Any,
    atomic_numbers: Sequence[int] | Any,
    total_charge: float,
    mm_positions: Any = None,
    mm_charges: Any = None,
    box: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Energy ``[K]`` (kJ/mol) and forces ``[K, N + M, 3]`` (kJ/mol/nm) of every ensemble member.

    Parameters are those of :func:`ensemble_uncertainty`. Force rows are the N region atoms, then the M
    MM atoms.
    """
    module = _load(model)
    region = _as_tensor(positions_region, torch.float64, "positions_region", (3,))
    n_region = region.shape[0]
    numbers = torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.int64)
    if numbers.shape != (n_region,):
        raise InputError(
            f"atomic_numbers has shape {tuple(numbers.shape)} but positions_region has {n_region} atoms; "
            "give one atomic number per region atom"
        )
    mm = (
        torch.zeros((0, 3), dtype=torch.float64)
        if mm_positions is None
        else _as_tensor(mm_positions, torch.float64, "mm_positions", (3,))
    )
    charges = (
        torch.zeros(0, dtype=torch.float64)
        if mm_charges is None
        else _as_tensor(mm_charges, torch.float64, "mm_charges", ())
    )
    if charges.shape != (mm.shape[0],):
        raise InputError(
            f"mm_charges has shape {tuple(charges.shape)} but mm_positions has {mm.shape[0]} atoms; "
            "give one charge (e) per MM atom"
        )
    cell = torch.zeros((0, 3), dtype=torch.float64) if box is None else _as_tensor(box, torch.float64, "box", (3,))
    everything = torch.cat([region, mm]).requires_grad_(True)
    energies = module.ensemble_energies(
        everything[:n_region],
        numbers,
        torch.tensor(float(total_charge), dtype=torch.float64),
        everything[n_region:],
        charges,
        cell,
    )
    forces = []
    for k in range(energies.shape[0]):
        (gradient,) = torch.autograd.grad(
            energies[k], everything, retain_graph=k + 1 < energies.shape[0], allow_unused=True
        )
        forces.append(torch.zeros_like(everything) if gradient is None else -gradient)
    return energies.detach().numpy().astype(np.float64), torch.stack(forces).detach().numpy()


def ensemble_uncertainty(
    model: ModelLike,
    positions_region: Any,
    atomic_numbers: Sequence[int] | Any,
    total_charge: float,
    mm_positions: Any = None,
    mm_charges: Any = None,
    box: Any = None,
) -> tuple[float, float]:
    """Ensemble energy standard deviation (kJ/mol) and largest per-atom force standard deviation (kJ/mol/nm).

    Parameters
    ----------
    model : torch.jit.ScriptModule or path-like
        Deployed model (``model.pt``) or the loaded module; must export ``ensemble_energies``.
    positions_region : array, shape (N, 3)
        Region positions, nm (whole, as the force callback passes them).
    atomic_numbers : sequence of int, length N
    total_charge : float
        Region charge, e.
    mm_positions : array, shape (M, 3), optional
        MM point-charge positions, nm (the switched environment the model sees; None or M = 0: vacuum).
    mm_charges : array, shape (M,), optional
        MM charges, e.
    box : array, shape (3, 3), optional
        Periodic box vectors (rows), nm; None without periodic boundaries.

    Returns
    -------
    energy_std : float
        kJ/mol.
    max_force_std : float
        kJ/mol/nm, the maximum over the region atoms and the MM atoms.

    Examples
    --------
    >>> ensemble_uncertainty(module, xyz, [8, 1, 1], 0.0)  # doctest: +SKIP
    (0.41, 12.3)
    """
    energies, forces = member_energies_forces(
        model, positions_region, atomic_numbers, total_charge, mm_positions, mm_charges, box
    )
    energy_std = float(energies.std())
    spread = forces - forces.mean(axis=0, keepdims=True)
    per_atom = np.sqrt((spread**2).sum(axis=2).mean(axis=0))
    return energy_std, float(per_atom.max()) if per_atom.size else 0.0


@dataclasses.dataclass
class MonitorValues:
    """What :class:`ModelMonitor` measures on one frame.

    Attributes
    ----------
    vacuum_energy : float
        Ensemble-mean NNP energy of the region without MM charges, kJ/mol.
    energy_std, max_force_std : float
        As :func:`ensemble_uncertainty`, kJ/mol and kJ/mol/nm (NaN when not computed).
    region_positions : numpy.ndarray, shape (N, 3)
        Region positions the model saw (whole), nm.
    mm_positions : numpy.ndarray, shape (M, 3)
        Imaged MM point-charge positions, nm.
    mm_charges : numpy.ndarray, shape (M,)
        Switched MM charges, e.
    mm_atoms : numpy.ndarray, shape (M,)
        System indices of those MM atoms.
    """

    vacuum_energy: float
    energy_std: float
    max_force_std: float
    region_positions: np.ndarray
    mm_positions: np.ndarray
    mm_charges: np.ndarray
    mm_atoms: np.ndarray


class ModelMonitor:
    """Evaluate the model of a System's ``PythonForce`` on whole-System positions: vacuum energy and uncertainty.

    Uses the force's own callback (`biomol_nnp.openmm.backend.ModelForceCallback`, unpickled from the
    force), so the region, charges and the switched MM environment are exactly those of the simulation.

    Parameters
    ----------
    system : openmm.System
        NNP/MM System holding one model ``PythonForce``.
    uncertainty : bool
        Also compute the ensemble uncertainty (one forward pass and K gradients).

    Examples
    --------
    >>> monitor = ModelMonitor(system)  # doctest: +SKIP
    >>> monitor.evaluate(positions_nm, box_nm).max_force_std  # doctest: +SKIP
    """

    def __init__(self, system: Any, uncertainty: bool = True) -> None:
        import openmm

        from biomol_nnp.openmm.backend import ModelForceCallback, force_callback

        callbacks = [force_callback(force) for force in system.getForces() if isinstance(force, openmm.PythonForce)]
        models = [c for c in callbacks if isinstance(c, ModelForceCallback)]
        if len(models) != 1:
            raise InputError(
                f"the System has {len(models)} model forces (PythonForce with a biomol-nnp model); the monitor "
                "needs exactly one: build the System with MLPotential('biomol-nnp')"
            )
        self.callback = models[0]
        self.uncertainty = bool(uncertainty)
        self.last: tuple[int, MonitorValues] | None = None

    def evaluate(self, positions_nm: np.ndarray, box_nm: np.ndarray | None) -> MonitorValues:
        """Values for whole-System positions ``[n_atoms, 3]`` nm and box ``[3, 3]`` nm (None: no PBC)."""
        cb = self.callback
        particles = np.asarray(positions_nm, dtype=np.float64)[cb.ml_atoms + cb.mm_atoms]
        with torch.no_grad():
            inputs = cb.model_inputs(particles, box_nm if cb.periodic else None)
            empty = torch.zeros((0, 3), dtype=torch.float64)
            numbers = torch.as_tensor(cb.atomic_numbers, dtype=torch.int64)
            charge = torch.tensor(float(cb.total_charge), dtype=torch.float64)
            vacuum = float(cb.module(inputs.region, numbers, charge, empty, empty[:, 0], empty))
        energy_std = max_force_std = float("nan")
        if self.uncertainty:
            energy_std, max_force_std = ensemble_uncertainty(
                cb.module,
                inputs.region,
                cb.atomic_numbers,
                cb.total_charge,
                inputs.mm_positions,
                inputs.mm_charges,
                None,
            )
        mm_index = np.asarray(cb.mm_atoms, dtype=np.int64)[inputs.mm_index]
        return MonitorValues(
            vacuum,
            energy_std,
            max_force_std,
            inputs.region.detach().numpy().copy(),
            inputs.mm_positions.detach().numpy().copy(),
            inputs.mm_charges.detach().numpy().copy(),
            mm_index,
        )
