"""Example ``reference.factory`` for ``forcefield-refit``: a deployed biomol_nnp ``model.pt`` as the target.

User-side code, not part of the ``forcefield_refit`` package (which never imports ``biomol_nnp``); copy it
next to your settings file or put this folder on ``PYTHONPATH``, then in the settings::

    reference: {factory: "nnp_reference:model_reference"}

The model path comes from the environment variable ``BIOMOL_NNP_MODEL`` (default ``model.pt`` in the
working directory); the molecule is neutral unless ``BIOMOL_NNP_CHARGE`` says otherwise. The model must
cover every element of the molecule (``ModelCalculator`` checks it and names the missing ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def model_reference(molecule: Any) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``Molecule -> (positions nm -> (energy kJ/mol, forces kJ/mol/nm))`` from the deployed model."""
    from biomol_nnp.models.calculator import ModelCalculator

    numbers = [atom.element.atomic_number for atom in molecule.topology.atoms()]
    return ModelCalculator(
        os.environ.get("BIOMOL_NNP_MODEL", "model.pt"),
        numbers,
        total_charge=float(os.environ.get("BIOMOL_NNP_CHARGE", "0")),
    )
