"""Analytic toy deployed models that follow the model-file contract exactly (test oracles).

The toy model's energy, in kJ/mol, for ML region A and MM charges B::

    E = sum_{i<j in A} eps_i eps_j exp(-(r_ij/s)^2) sw(r_ij; rc)
        + K sum_{a in A} q_a sum_{B} q_B erf(r_aB/d)/r_aB sw(r_aB; rc_emb)

with ``sw(r; rc) = (1 - (r/rc)^2)^2`` for ``r < rc`` (0 beyond), ``K`` the Coulomb constant in
kJ/mol nm e^-2 and ``q_a`` fixed per-element charges shifted uniformly to sum to ``total_charge``.
Distances use the minimum image when a box ``[3,3]`` (OpenMM reduced form) is given.
Ensemble member ``k`` scales the pair term by ``1 + 0.01 k``; ``forward`` returns the ensemble mean.

>>> path = make_toy_model(tmp_path / "toy.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from biomol_nnp.models.export import build_metadata, save_model
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

TOY_CHARGES = {1: 0.1, 6: -0.05, 7: -0.3, 8: -0.4, 16: -0.2}
"""Per-element base charges of the toy model, e."""

TOY_EPSILONS = {1: 2.0, 6: 5.0, 7: 4.0, 8: 3.5, 16: 6.0}
"""Per-element pair strengths of the toy model, (kJ/mol)^0.5."""


def _minimum_image(delta: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Minimum-image displacement ``delta [..., 3]`` nm in a reduced triclinic ``box [3,3]`` nm."""
    delta = delta - box[2] * torch.round(delta[..., 2:3] / box[2, 2])
    delta = delta - box[1] * torch.round(delta[..., 1:2] / box[1, 1])
    delta = delta - box[0] * torch.round(delta[..., 0:1] / box[0, 0])
    return delta


def _switch(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Smooth switch ``(1 - (r/rc)^2)^2`` inside the cutoff, 0 beyond; continuous first derivative."""
    x = r / cutoff
    return torch.where(x < 1.0, (1.0 - x * x) ** 2, torch.zeros_like(x))


class ToyModel(torch.nn.Module):
    """Analytic pair + embedding model following the deployed-model contract.

    Parameters
    ----------
    elements : list of int
        Atomic numbers covered (each must be in ``TOY_CHARGES``).
    cutoff_nm : float
        Pair-term cutoff, nm.
    embedding_cutoff_nm : float
        Embedding (MM charge) cutoff, nm.
    width_nm : float
        Gaussian width ``s`` of the pair term, nm.
    damping_nm : float
        Coulomb damping length ``d`` of ``erf(r/d)/r``, nm.
    ensemble_size : int
        Number of ensemble members.

    Examples
    --------
    >>> model = torch.jit.script(ToyModel([1, 6, 7, 8]))
    """

    def __init__(
        self,
        elements: list[int],
        cutoff_nm: float = 0.5,
        embedding_cutoff_nm: float = 1.0,
        width_nm: float = 0.15,
        damping_nm: float = 0.03,
        ensemble_size: int = 3,
    ) -> None:
        super().__init__()
        charge_table = torch.zeros(119, dtype=torch.float64)
        eps_table = torch.zeros(119, dtype=torch.float64)
        for z in elements:
            charge_table[z] = TOY_CHARGES[z]
            eps_table[z] = TOY_EPSILONS[z]
        self.register_buffer("charge_table", charge_table)
        self.register_buffer("eps_table", eps_table)
        self.cutoff = float(cutoff_nm)
        self.embedding_cutoff = float(embedding_cutoff_nm)
        self.width = float(width_nm)
        self.damping = float(damping_nm)
        self.ensemble_size = int(ensemble_size)
        self.coulomb = float(ELECTROSTATIC_CONSTANT)

    def _delta(self, a: torch.Tensor, b: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        delta = a.unsqueeze(1) - b.unsqueeze(0)
        if box.numel() == 9:
            delta = _minimum_image(delta, box.to(torch.float64))
        return delta

    @torch.jit.export
    def charges(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, total_charge: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom charges ``[N]`` e summing to ``total_charge``."""
        base = self.charge_table[atomic_numbers]
        n = base.shape[0]
        return base + (total_charge.to(torch.float64) - base.sum()) / n

    def _pair_energy(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, box: torch.Tensor
    ) -> torch.Tensor:
        n = positions.shape[0]
        index = torch.triu_indices(n, n, 1)
        delta = self._delta(positions, positions, box)[index[0], index[1]]
        r = torch.sqrt((delta * delta).sum(-1))
        eps = self.eps_table[atomic_numbers]
        pair = eps[index[0]] * eps[index[1]] * torch.exp(-((r / self.width) ** 2)) * _switch(r, self.cutoff)
        return pair.sum()

    def _embedding_energy(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> torch.Tensor:
        if mm_positions.shape[0] == 0:
            return torch.zeros((), dtype=torch.float64)
        q = self.charges(positions, atomic_numbers, total_charge)
        delta = self._delta(positions, mm_positions.to(torch.float64), box)
        r = torch.sqrt((delta * delta).sum(-1))
        kernel = torch.erf(r / self.damping) / r * _switch(r, self.embedding_cutoff)
        potential = (kernel * mm_charges.to(torch.float64).unsqueeze(0)).sum(1)
        return self.coulomb * (q * potential).sum()

    @torch.jit.export
    def ensemble_energies(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> torch.Tensor:
        """Energy of each ensemble member ``[K]`` kJ/mol."""
        positions = positions.to(torch.float64)
        pair = self._pair_energy(positions, atomic_numbers, box)
        emb = self._embedding_energy(positions, atomic_numbers, total_charge, mm_positions, mm_charges, box)
        scale = 1.0 + 0.01 * torch.arange(self.ensemble_size, dtype=torch.float64)
        return pair * scale + emb

    @torch.jit.export
    def ensemble_mean_std(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble mean and standard deviation, kJ/mol."""
        energies = self.ensemble_energies(
            positions, atomic_numbers, total_charge, mm_positions, mm_charges, box
        )
        return energies.mean(), energies.std(unbiased=False)

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> torch.Tensor:
        """Ensemble-mean energy ``[]`` kJ/mol."""
        return self.ensemble_energies(
            positions, atomic_numbers, total_charge, mm_positions, mm_charges, box
        ).mean()


def make_toy_model(path: str | os.PathLike, elements: list[int] | None = None, **kwargs: float) -> Path:
    """Write a scripted :class:`ToyModel` with contract metadata to ``path`` and return the path.

    Parameters
    ----------
    path : path-like
        Output file (``model.pt``).
    elements : list of int, optional
        Atomic numbers covered; default ``[1, 6, 7, 8]``.
    **kwargs
        Passed to :class:`ToyModel` (cutoffs in nm, ``ensemble_size``).
    """
    elements = [1, 6, 7, 8] if elements is None else list(elements)
    model = ToyModel(elements, **kwargs)  # type: ignore[arg-type]
    metadata = build_metadata(
        elements=elements,
        cutoff_nm=model.cutoff,
        embedding_cutoff_nm=model.embedding_cutoff,
        ensemble_size=model.ensemble_size,
        qm_method="analytic-toy",
        training_data_hash="0" * 64,
        toy=True,
        damping_nm=model.damping,
    )
    return save_model(torch.jit.script(model), path, metadata)


def toy_energy_reference(
    positions,
    atomic_numbers,
    total_charge,
    mm_positions,
    mm_charges,
    cutoff_nm: float = 0.5,
    embedding_cutoff_nm: float = 1.0,
    width_nm: float = 0.15,
    damping_nm: float = 0.03,
    ensemble_size: int = 3,
) -> float:
    """Plain-Python (no torch, no PBC) evaluation of the toy energy, kJ/mol, for cross-checks."""
    n = len(positions)
    q0 = [TOY_CHARGES[int(z)] for z in atomic_numbers]
    shift = (total_charge - sum(q0)) / n
    q = [c + shift for c in q0]
    mean_scale = sum(1.0 + 0.01 * k for k in range(ensemble_size)) / ensemble_size

    def dist(a, b):
        return math.sqrt(sum((a[i] - b[i]) ** 2 for i in range(3)))

    def sw(r, rc):
        return (1 - (r / rc) ** 2) ** 2 if r < rc else 0.0

    pair = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            r = dist(positions[i], positions[j])
            eps = TOY_EPSILONS[int(atomic_numbers[i])] * TOY_EPSILONS[int(atomic_numbers[j])]
            pair += eps * math.exp(-((r / width_nm) ** 2)) * sw(r, cutoff_nm)
    emb = 0.0
    for a in range(n):
        for b in range(len(mm_positions)):
            r = dist(positions[a], mm_positions[b])
            emb += q[a] * mm_charges[b] * math.erf(r / damping_nm) / r * sw(r, embedding_cutoff_nm)
    return pair * mean_scale + ELECTROSTATIC_CONSTANT * emb
