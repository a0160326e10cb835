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
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError, QMCalculationError
from biomol_nnp.units import (
    BOHR_TO_NM,
    HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
    HARTREE_TO_KJ_PER_MOL,
    NM_TO_BOHR,
)

logger = logging.getLogger(__name__)

MAX_ATOMIC_NUMBER = 86
"""Heaviest element parametrised in GFN2-xTB (radon)."""

_INSTALL_HINT = "install xtb-python (conda install -c conda-forge xtb-python, or pip install xtb)"


@dataclass(frozen=True)
class QMResult:
    """Result of one QM single point, in OpenMM units.

    Attributes
    ----------
    energy : float
        Total energy, kJ/mol (including the interaction with the point charges, if any).
    forces : numpy.ndarray, shape (N, 3)
        Forces on the QM atoms, kJ/mol/nm.
    mm_forces : numpy.ndarray, shape (M, 3)
        Forces on the MM point charges, kJ/mol/nm; shape (0, 3) without point charges.
    charges : numpy.ndarray, shape (N,)
        Mulliken partial charges of the QM atoms, e.
    dipole : numpy.ndarray, shape (3,)
        Dipole moment of the QM region, e*nm.

    Examples
    --------
    >>> import numpy as np
    >>> r = QMResult(0.0, np.zeros((1, 3)), np.zeros((0, 3)), np.zeros(1), np.zeros(3))
    >>> r.mm_forces.shape
    (0, 3)
    """

    energy: float
    forces: np.ndarray
    mm_forces: np.ndarray
    charges: np.ndarray
    dipole: np.ndarray


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


def check_charge_multiplicity(atomic_numbers: np.ndarray, total_charge: int, multiplicity: int) -> int:
    """Check that a charge and spin multiplicity are possible and return the electron count.

    Parameters
    ----------
    atomic_numbers : numpy.ndarray, shape (N,)
        Atomic numbers of the QM atoms.
    total_charge : int
        Net charge of the QM region, e.
    multiplicity : int
        Spin multiplicity 2S+1.

    Returns
    -------
    int
        Number of electrons.

    Raises
    ------
    InputError
        When the multiplicity is below 1, the charge leaves no electrons or too few for the
        multiplicity, or the electron count parity does not match the multiplicity.

    Examples
    --------
    >>> check_charge_multiplicity(np.array([8, 1, 1]), 0, 1)
    10
    """
    if int(multiplicity) != multiplicity or multiplicity < 1:
        raise InputError(f"multiplicity must be an integer >= 1 (2S+1), got {multiplicity!r}")
    if int(total_charge) != total_charge:
        raise InputError(f"total_charge must be an integer, got {total_charge!r}")
    n_electrons = int(np.sum(atomic_numbers)) - int(total_charge)
    unpaired = int(multiplicity) - 1
    if n_electrons < 0 or n_electrons < unpaired:
        raise InputError(
            f"total_charge={total_charge} with multiplicity={multiplicity} is impossible: it leaves "
            f"{n_electrons} electrons for {unpaired} unpaired ones; check the region's charge"
        )
    if n_electrons % 2 != unpaired % 2:
        parity = "odd" if n_electrons % 2 else "even"
        allowed = "2, 4, ..." if n_electrons % 2 else "1, 3, ..."
        raise InputError(
            f"total_charge={total_charge} with multiplicity={multiplicity} is impossible: the region has "
            f"an {parity} number of electrons ({n_electrons}), so the multiplicity must be one of {allowed}; "
            "check the region's total charge (link atoms, protonation states)"
        )
    return n_electrons


def _as_array(name: str, value: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    array: np.ndarray = np.zeros(shape, dtype=dtype) if value is None else np.asarray(value, dtype=dtype)
    if array.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def _check_elements(name: str, values: np.ndarray) -> np.ndarray:
    numbers = np.asarray(values, dtype=np.int32).reshape(-1)
    if numbers.size and (numbers.min() < 1 or numbers.max() > MAX_ATOMIC_NUMBER):
        found = sorted(set(numbers.tolist()))
        raise InputError(f"{name} must be atomic numbers in 1..{MAX_ATOMIC_NUMBER} for GFN2-xTB, got {found}")
    return numbers


class XTBEngine:
    """GFN2-xTB energies, forces, charges and dipoles, optionally in the field of MM point charges.

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

    def __init__(self, settings: LabelSettings | None = None) -> None:
        self.settings = settings if settings is not None else LabelSettings.model_validate({})

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
        """Run one single point.

        Parameters
        ----------
        atomic_numbers : numpy.ndarray, shape (N,)
            Atomic numbers of the QM atoms.
        positions : numpy.ndarray, shape (N, 3)
            QM atom positions, nm.
        total_charge : int
            Net charge of the QM region, e.
        multiplicity : int
            Spin multiplicity 2S+1 (xtb gets ``uhf = multiplicity - 1`` unpaired electrons).
        mm_positions : numpy.ndarray, shape (M, 3), optional
            Point-charge positions, nm.
        mm_charges : numpy.ndarray, shape (M,), optional
            Point charges, e.
        mm_numbers : numpy.ndarray, shape (M,), optional
            Element of the MM atom carrying each charge; xtb uses it for the short-range damping.

        Returns
        -------
        QMResult
            Energy (kJ/mol), forces on QM atoms and point charges (kJ/mol/nm), charges (e),
            dipole (e*nm).

        Raises
        ------
        InputError
            Bad shapes, unknown elements or an impossible charge/multiplicity.
        QMCalculationError
            xtb refused the structure or the SCC did not converge.
        """
        numbers = _check_elements("atomic_numbers", atomic_numbers)
        if numbers.size == 0:
            raise InputError("atomic_numbers is empty; give at least one QM atom")
        xyz = _as_array("positions", positions, (numbers.size, 3), np.float64)
        check_charge_multiplicity(numbers, total_charge, multiplicity)
        if (mm_positions is None) != (mm_charges is None):
            raise InputError("mm_positions and mm_charges must be given together")
        n_mm = 0 if mm_positions is None else int(np.asarray(mm_positions).reshape(-1, 3).shape[0])
        mm_xyz = _as_array("mm_positions", mm_positions, (n_mm, 3), np.float64)
        mm_q = _as_array("mm_charges", mm_charges, (n_mm,), np.float64)
        if mm_numbers is None and n_mm > 0:
            raise InputError(
                "mm_numbers is required with point charges: xtb damps each charge according to "
                "its element; pass the elements of the MM atoms"
            )
        mm_z = _check_elements("mm_numbers", np.zeros(0) if mm_numbers is None else mm_numbers)
        if mm_z.shape != (n_mm,):
            raise InputError(f"mm_numbers must have shape {(n_mm,)}, got {mm_z.shape}")
        return self._run(numbers, xyz, int(total_charge), int(multiplicity), mm_xyz, mm_q, mm_z)

    def _run(
        self,
        numbers: np.ndarray,
        xyz: np.ndarray,
        total_charge: int,
        multiplicity: int,
        mm_xyz: np.ndarray,
        mm_q: np.ndarray,
        mm_z: np.ndarray,
    ) -> QMResult:
        try:
            from xtb.interface import Calculator, Param, XTBException
            from xtb.libxtb import VERBOSITY_MUTED, ffi
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise QMCalculationError(f"GFN2-xTB labels need xtb-python: {_INSTALL_HINT}") from err

        n_mm = mm_q.size
        set_xtb_threads(self.settings.threads)
        try:
            calc = Calculator(
                Param.GFN2xTB, numbers, xyz * NM_TO_BOHR, charge=float(total_charge), uhf=multiplicity - 1
            )
            calc.set_verbosity(VERBOSITY_MUTED)
            calc.set_accuracy(self.settings.accuracy)
            calc.set_max_iterations(self.settings.max_iterations)
            calc.set_electronic_temperature(self.settings.electronic_temperature_k)
            if n_mm:
                calc.set_external_charges(mm_z, mm_q, np.ascontiguousarray(mm_xyz * NM_TO_BOHR))
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
        if not (np.isfinite(energy) and np.all(np.isfinite(gradient)) and np.all(np.isfinite(pc_gradient))):
            raise QMCalculationError("GFN2-xTB returned a non-finite energy or gradient")
        return QMResult(
            energy=float(energy) * HARTREE_TO_KJ_PER_MOL,
            forces=-np.asarray(gradient, dtype=np.float64) * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
            mm_forces=-pc_gradient * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
            charges=np.asarray(charges, dtype=np.float64).copy(),
            dipole=np.asarray(dipole, dtype=np.float64) * BOHR_TO_NM,
        )
