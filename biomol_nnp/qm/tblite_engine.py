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
from biomol_nnp.qm.engine import EngineBase, EngineInputs, QMResult, result_from_atomic_units
from biomol_nnp.units import NM_TO_BOHR

logger = logging.getLogger(__name__)

BOLTZMANN_HARTREE_PER_K = 1.380649e-23 / 4.3597447222071e-18
"""Boltzmann constant in Hartree/K (SI 2019 exact k_B over the CODATA 2018 Hartree energy); tblite
takes the electronic temperature in Hartree."""

MAX_ATOMIC_NUMBER = 86
_INSTALL_HINT = "pip install tblite (or conda install -c conda-forge tblite-python)"


class TBLiteEngine(EngineBase):
    """GFN2-xTB energies, forces, Mulliken charges and dipoles through tblite (no point charges).

    ``compute`` (:meth:`EngineBase.compute`) refuses point charges (``InputError``) and raises
    :class:`~biomol_nnp.exceptions.QMCalculationError` when tblite refuses the structure or the SCC
    does not converge.

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
    distribution = "tblite"
    input_label = "GFN2-xTB (tblite)"
    max_atomic_number = MAX_ATOMIC_NUMBER
    supports_point_charges = False

    def __init__(self, settings: LabelSettings | None = None) -> None:
        self.settings = settings if settings is not None else LabelSettings()

    def _compute(self, x: EngineInputs) -> QMResult:
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
            raise QMCalculationError(f"{self.input_label} failed: {' '.join(str(err).split())}") from err
        return result_from_atomic_units(energy, gradient, np.zeros((0, 3)), charges, dipole, self.input_label)
