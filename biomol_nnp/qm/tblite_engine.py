"""GFN2-xTB through tblite, for regions without MM point charges.

tblite has no external point-charge interaction, so this engine refuses point charges (use
:class:`~biomol_nnp.qm.xtb_engine.XTBEngine` for embedded labels). Vacuum energies and forces
agree with xtb-python to SCC convergence (tested).
"""

from __future__ import annotations

import logging

import numpy as np

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import QMCalculationError
from biomol_nnp.qm.engine import QMResult, validate_inputs
from biomol_nnp.units import (
    BOHR_TO_NM,
    HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
    HARTREE_TO_KJ_PER_MOL,
    NM_TO_BOHR,
)

logger = logging.getLogger(__name__)

BOLTZMANN_HARTREE_PER_K = 1.380649e-23 / 4.3597447222071e-18
"""Boltzmann constant in Hartree/K (SI 2019 exact k_B over the CODATA 2018 Hartree energy); tblite
takes the electronic temperature in Hartree."""

MAX_ATOMIC_NUMBER = 86
_INSTALL_HINT = "pip install tblite (or conda install -c conda-forge tblite-python)"


class TBLiteEngine:
    """GFN2-xTB energies, forces, Mulliken charges and dipoles through tblite (no point charges).

    Parameters
    ----------
    settings : LabelSettings
        Accuracy, SCC iterations, electronic temperature (K) and threads.

    Examples
    --------
    >>> import numpy as np
    >>> water = np.array([[0.0, 0.0, -0.0066], [0.0759, 0.0, 0.0521], [-0.0759, 0.0, 0.0521]])
    >>> TBLiteEngine().compute(np.array([8, 1, 1]), water).forces.shape  # doctest: +SKIP
    (3, 3)
    """

    method = "GFN2-xTB"
    basis = ""
    engine_name = "tblite"
    supports_point_charges = False

    def __init__(self, settings: LabelSettings | None = None) -> None:
        self.settings = settings if settings is not None else LabelSettings()

    @property
    def engine_version(self) -> str:
        """Version of the tblite distribution."""
        from biomol_nnp.qm.xtb_engine import _package_version

        return _package_version("tblite")

    def compute(
        self,
        atomic_numbers: np.ndarray,
        positions: np.ndarray,
        total_charge: int = 0,
        multiplicity: int = 1,
        mm_positions: np.ndarray | None = None,
        mm_charges: np.ndarray | None = None,
        mm_numbers: np.ndarray | None = None,
    ) -> QMResult:
        """Single point of the region in vacuum (see :class:`~biomol_nnp.qm.engine.QMEngine`).

        Raises
        ------
        InputError
            Bad shapes, unknown elements, impossible charge/multiplicity, or point charges given.
        QMCalculationError
            tblite refused the structure or the SCC did not converge.
        """
        x = validate_inputs(
            atomic_numbers,
            positions,
            total_charge,
            multiplicity,
            mm_positions,
            mm_charges,
            mm_numbers,
            method="GFN2-xTB (tblite)",
            max_atomic_number=MAX_ATOMIC_NUMBER,
            supports_point_charges=False,
        )
        try:
            from tblite.exceptions import TBLiteRuntimeError, TBLiteValueError
            from tblite.interface import Calculator
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise QMCalculationError(f"method 'GFN2-xTB-tblite' needs tblite: {_INSTALL_HINT}") from err
        from threadpoolctl import threadpool_limits

        s = self.settings
        try:
            with threadpool_limits(limits=s.threads):
                calc = Calculator(
                    "GFN2-xTB",
                    x.numbers,
                    x.positions * NM_TO_BOHR,
                    charge=float(x.total_charge),
                    uhf=x.multiplicity - 1,
                )
                calc.set("verbosity", 0)
                calc.set("accuracy", s.accuracy)
                calc.set("max-iter", s.max_iterations)
                calc.set("temperature", s.electronic_temperature_k * BOLTZMANN_HARTREE_PER_K)
                res = calc.singlepoint()
                energy = float(res.get("energy"))
                gradient = np.asarray(res.get("gradient"), dtype=np.float64)
                charges = np.asarray(res.get("charges"), dtype=np.float64)
                dipole = np.asarray(res.get("dipole"), dtype=np.float64)
        except (TBLiteRuntimeError, TBLiteValueError) as err:
            raise QMCalculationError(f"GFN2-xTB (tblite) failed: {' '.join(str(err).split())}") from err
        if not (np.isfinite(energy) and np.all(np.isfinite(gradient))):
            raise QMCalculationError("GFN2-xTB (tblite) returned a non-finite energy or gradient")
        return QMResult(
            energy=energy * HARTREE_TO_KJ_PER_MOL,
            forces=-gradient * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
            mm_forces=np.zeros((0, 3)),
            charges=charges.copy(),
            dipole=dipole * BOHR_TO_NM,
        )
