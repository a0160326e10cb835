"""Energy and forces of a deployed model as a plain function of positions.

Used wherever a caller needs an energy callable (torsion scans for the force-field refit,
geometry optimisation, analysis) rather than an OpenMM System.

>>> calculator = ModelCalculator("model.pt", atomic_numbers=[8, 1, 1])  # doctest: +SKIP
>>> energy, forces = calculator(positions_nm)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from biomol_nnp.models.export import check_elements, load_model


class ModelCalculator:
    """Callable ``positions [N, 3] nm -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)`` of a region in vacuum.

    Parameters
    ----------
    model_path
        A deployed ``model.pt``.
    atomic_numbers
        Atomic numbers of the region, [N].
    total_charge
        Total charge of the region, e.
    mm_positions, mm_charges
        Optional fixed MM environment, [M, 3] nm and [M] e.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        atomic_numbers: Sequence[int],
        total_charge: float = 0.0,
        mm_positions: np.ndarray | None = None,
        mm_charges: np.ndarray | None = None,
    ) -> None:
        self.model, self.metadata = load_model(model_path)
        check_elements(self.metadata, list(atomic_numbers))
        self.atomic_numbers = torch.tensor(list(atomic_numbers), dtype=torch.long)
        self.total_charge = torch.tensor(float(total_charge), dtype=torch.float64)
        self.mm_positions = torch.as_tensor(
            np.zeros((0, 3)) if mm_positions is None else mm_positions, dtype=torch.float64
        )
        self.mm_charges = torch.as_tensor(np.zeros(0) if mm_charges is None else mm_charges, dtype=torch.float64)
        self.box = torch.zeros(0, 3, dtype=torch.float64)

    def __call__(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(np.asarray(positions, dtype=np.float64)).requires_grad_(True)
        energy = self.model(x, self.atomic_numbers, self.total_charge, self.mm_positions, self.mm_charges, self.box)
        (gradient,) = torch.autograd.grad(energy, x)
        return float(energy), -gradient.numpy()
