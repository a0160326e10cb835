"""GFN2-xTB single points through xtb-python, with optional MM point charges.

This module is the only place where QM units (Bohr, Hartree) appear: everything that goes in and
comes out is in OpenMM units (nm, kJ/mol, kJ/mol/nm, e).

The gradient on the external point charges is computed by libxtb but not exposed by the cffi
module of xtb-python; it is read with ``xtb_getPCGradient`` from the bundled shared library
through :mod:`ctypes`.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import QMCalculationError
from biomol_nnp.qm.engine import (
    EngineBase,
    EngineInputs,
    QMResult,
    check_charge_multiplicity,
    result_from_atomic_units,
)
from biomol_nnp.units import NM_TO_BOHR

logger = logging.getLogger(__name__)

__all__ = ["MAX_ATOMIC_NUMBER", "QMResult", "XTBEngine", "check_charge_multiplicity", "set_xtb_threads"]


MAX_ATOMIC_NUMBER = 86
"""Heaviest element parametrised in GFN2-xTB (radon)."""

_INSTALL_HINT = "install xtb-python (conda install -c conda-forge xtb-python, or pip install xtb)"


def _bundled_libs_dir() -> str:
    """Folder of the shared libraries bundled with the xtb-python wheel (``xtb.libs``)."""
    import xtb

    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(xtb.__file__))), "xtb.libs")


@lru_cache(maxsize=1)
def _thread_setters() -> tuple[Callable[[int], None], ...]:
    """``omp_set_num_threads`` / ``openblas_set_num_threads`` of the libraries xtb runs on."""
    setters = []
    for pattern, name in (
        ("libgomp*.so*", "omp_set_num_threads"),
        ("libopenblas*.so*", "openblas_set_num_threads"),
    ):
        for path in sorted(glob.glob(os.path.join(_bundled_libs_dir(), pattern))):
            try:
                func = getattr(ctypes.CDLL(path), name)
            except (OSError, AttributeError):
                continue
            func.argtypes = [ctypes.c_int]
            func.restype = None
            setters.append(func)
    if not setters:
        logger.debug("no bundled OpenMP/OpenBLAS found next to xtb; thread count left to OMP_NUM_THREADS")
    return tuple(setters)


def set_xtb_threads(threads: int) -> None:
    """Set the OpenMP and OpenBLAS threads that xtb uses in the calling thread.

    With more threads than free cores, OpenMP threads spin against each other and a 20 ms
    calculation can take 300 ms; when many calculations run in parallel, use 1.

    Parameters
    ----------
    threads : int
        Number of threads (>= 1).
    """
    for setter in _thread_setters():
        setter(int(threads))


@lru_cache(maxsize=1)
def _pc_gradient_function() -> Callable[..., None]:
    """Return ``xtb_getPCGradient`` of the libxtb bundled with xtb-python."""
    libs_dir = _bundled_libs_dir()
    # The wheel bundles libxtb in xtb.libs; the cffi extension has already loaded that same file,
    # so dlopen returns the instance whose environment and result pointers we pass.
    candidates = sorted(glob.glob(os.path.join(libs_dir, "libxtb*.so*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            func = lib.xtb_getPCGradient
        except (OSError, AttributeError):
            continue
        func.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        func.restype = None
        return func  # type: ignore[no-any-return]
    raise QMCalculationError(
        f"cannot find xtb_getPCGradient in the xtb shared library (looked in {libs_dir!r}); "
        "forces on MM point charges need the libxtb shipped with the xtb-python wheel"
    )


class XTBEngine(EngineBase):
    """GFN2-xTB energies, forces, charges and dipoles, optionally in the field of MM point charges.

    ``compute`` (:meth:`EngineBase.compute`) gives xtb ``uhf = multiplicity - 1`` unpaired electrons
    and needs ``mm_numbers`` with point charges: xtb damps each charge according to its element. It
    raises :class:`~biomol_nnp.exceptions.QMCalculationError` when xtb refuses the structure or the
    SCC does not converge.

    Parameters
    ----------
    settings : LabelSettings
        QM settings (accuracy, SCC iterations, electronic temperature).

    Examples
    --------
    >>> import numpy as np
    >>> engine = XTBEngine(LabelSettings())
    >>> water = np.array([[0.0, 0.0, -0.0389], [0.0763, 0.0, 0.0195], [-0.0763, 0.0, 0.0195]])
    >>> result = engine.compute(np.array([8, 1, 1]), water)  # doctest: +SKIP
    >>> result.forces.shape  # doctest: +SKIP
    (3, 3)
    """

    method = "GFN2-xTB"
    basis = ""
    engine_name = "xtb-python"
    distribution = "xtb"
    max_atomic_number = MAX_ATOMIC_NUMBER
    require_mm_numbers = True

    def __init__(self, settings: LabelSettings | None = None) -> None:
        self.settings = settings if settings is not None else LabelSettings.model_validate({})

    def _compute(self, x: EngineInputs) -> QMResult:
        try:
            from xtb.interface import Calculator, Param, XTBException
            from xtb.libxtb import VERBOSITY_MUTED, ffi
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise QMCalculationError(f"GFN2-xTB labels need xtb-python: {_INSTALL_HINT}") from err

        n_mm = x.n_mm
        set_xtb_threads(self.settings.threads)
        try:
            calc = Calculator(
                Param.GFN2xTB, x.numbers, x.positions * NM_TO_BOHR, charge=float(x.total_charge), uhf=x.multiplicity - 1
            )
            calc.set_verbosity(VERBOSITY_MUTED)
            calc.set_accuracy(self.settings.accuracy)
            calc.set_max_iterations(self.settings.max_iterations)
            calc.set_electronic_temperature(self.settings.electronic_temperature_k)
            if n_mm:
                calc.set_external_charges(x.mm_numbers, x.mm_charges, np.ascontiguousarray(x.mm_positions * NM_TO_BOHR))
            res = calc.singlepoint()
            energy = res.get_energy()
            gradient = res.get_gradient()
            charges = res.get_charges()
            dipole = res.get_dipole()
            pc_gradient = np.zeros((n_mm, 3), dtype=np.float64)
            if n_mm:
                get_pc_gradient = _pc_gradient_function()
                get_pc_gradient(
                    int(ffi.cast("uintptr_t", calc._env)),
                    int(ffi.cast("uintptr_t", res._res)),
                    pc_gradient.ctypes.data,
                )
                if calc.check() != 0:
                    raise XTBException(calc.get_error("Could not read the point-charge gradient"))
        except XTBException as err:
            reason = " ".join(str(err).split())
            raise QMCalculationError(f"GFN2-xTB failed: {reason}") from err
        return result_from_atomic_units(energy, gradient, pc_gradient, charges, dipole, "GFN2-xTB")
