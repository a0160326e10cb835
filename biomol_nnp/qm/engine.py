"""The QM engine interface, its result type, shared input checks and the registry of methods.

Every engine takes and returns OpenMM units (nm, kJ/mol, kJ/mol/nm, e, e*nm); Bohr and Hartree
exist only inside the engine modules, converted once with the constants of :mod:`biomol_nnp.units`
(results by :func:`result_from_atomic_units`). The built-in engines derive from :class:`EngineBase`,
whose ``compute`` checks the inputs (:func:`validate_inputs`) before the engine's ``_compute``.

>>> sorted(available_methods())
['DFT', 'GFN2-xTB', 'GFN2-xTB-tblite', 'MM']
>>> engine = create_engine(LabelSettings(method="GFN2-xTB"))  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError, QMCalculationError
from biomol_nnp.units import BOHR_TO_NM, HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM, HARTREE_TO_KJ_PER_MOL

logger = logging.getLogger(__name__)


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
        Partial charges of the QM atoms (Mulliken for xtb and DFT), e.
    dipole : numpy.ndarray, shape (3,)
        Dipole moment of the QM region about the coordinate origin, e*nm.

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


@runtime_checkable
class QMEngine(Protocol):
    """What every labeling engine provides.

    Attributes
    ----------
    method : str
        Level of theory written into label records, e.g. ``"GFN2-xTB"`` or ``"B3LYP-D3BJ"``.
    basis : str
        Basis set (empty for xtb and MM).
    engine_name : str
        Program that computes it, e.g. ``"xtb-python"``, ``"tblite"``, ``"pyscf"``, ``"openmm"``.
    engine_version : str
        Version of that program.
    supports_point_charges : bool
        Whether :meth:`compute` accepts MM point charges.

    Examples
    --------
    >>> isinstance(create_engine(LabelSettings()), QMEngine)  # doctest: +SKIP
    True
    """

    @property
    def method(self) -> str: ...

    @property
    def basis(self) -> str: ...

    @property
    def engine_name(self) -> str: ...

    @property
    def engine_version(self) -> str: ...

    @property
    def supports_point_charges(self) -> bool: ...

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
        """Single point of the region (N atoms) in the field of M point charges (M may be 0).

        Parameters
        ----------
        atomic_numbers : numpy.ndarray, shape (N,)
        positions : numpy.ndarray, shape (N, 3)
            nm.
        total_charge : int
            Net charge of the region, e.
        multiplicity : int
            Spin multiplicity 2S+1.
        mm_positions : numpy.ndarray, shape (M, 3), optional
            nm.
        mm_charges : numpy.ndarray, shape (M,), optional
            e.
        mm_numbers : numpy.ndarray, shape (M,), optional
            Elements of the MM atoms carrying the charges.

        Returns
        -------
        QMResult
        """
        ...


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


def as_checked_array(name: str, value: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """``value`` as an array of ``shape`` and ``dtype`` (zeros when None); refuses NaN and wrong shapes."""
    array: np.ndarray = np.zeros(shape, dtype=dtype) if value is None else np.asarray(value, dtype=dtype)
    if array.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def check_elements(name: str, values: np.ndarray, max_atomic_number: int, method: str) -> np.ndarray:
    """Atomic numbers as int32, refusing any outside ``1..max_atomic_number`` (naming ``method``)."""
    numbers = np.asarray(values, dtype=np.int32).reshape(-1)
    if numbers.size and (numbers.min() < 1 or numbers.max() > max_atomic_number):
        found = sorted(set(numbers.tolist()))
        raise InputError(f"{name} must be atomic numbers in 1..{max_atomic_number} for {method}, got {found}")
    return numbers


@dataclass(frozen=True)
class EngineInputs:
    """Validated inputs of one single point (OpenMM units); built by :func:`validate_inputs`."""

    numbers: np.ndarray
    positions: np.ndarray
    total_charge: int
    multiplicity: int
    mm_positions: np.ndarray
    mm_charges: np.ndarray
    mm_numbers: np.ndarray

    @property
    def n_mm(self) -> int:
        """Number of point charges M."""
        return int(self.mm_charges.size)


def validate_inputs(
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    total_charge: int,
    multiplicity: int,
    mm_positions: np.ndarray | None,
    mm_charges: np.ndarray | None,
    mm_numbers: np.ndarray | None,
    *,
    method: str,
    max_atomic_number: int,
    require_mm_numbers: bool = False,
    supports_point_charges: bool = True,
    min_distance_nm: float | None = None,
) -> EngineInputs:
    """Check shapes, elements, charge and multiplicity before any calculation.

    Parameters
    ----------
    min_distance_nm : float, optional
        Refuse two region atoms closer than this, nm (overlapping atoms).

    Raises
    ------
    InputError
        Bad shapes, NaN, unknown elements, an impossible charge/multiplicity, overlapping atoms,
        or point charges given to an engine that cannot use them.
    """
    numbers = check_elements("atomic_numbers", atomic_numbers, max_atomic_number, method)
    if numbers.size == 0:
        raise InputError("atomic_numbers is empty; give at least one QM atom")
    xyz = as_checked_array("positions", positions, (numbers.size, 3), np.float64)
    check_charge_multiplicity(numbers, total_charge, multiplicity)
    if min_distance_nm is not None and numbers.size > 1:
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1) + np.eye(numbers.size) * 1e9
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        if d[i, j] < min_distance_nm:
            raise InputError(
                f"atoms {min(i, j)} and {max(i, j)} overlap ({d[i, j]:.4f} nm apart, minimum {min_distance_nm} nm); "
                "check the configuration"
            )
    if (mm_positions is None) != (mm_charges is None):
        raise InputError("mm_positions and mm_charges must be given together")
    n_mm = 0 if mm_positions is None else int(np.asarray(mm_positions).reshape(-1, 3).shape[0])
    if n_mm and not supports_point_charges:
        raise InputError(
            f"{method} cannot take MM point charges ({n_mm} given); use method 'GFN2-xTB' (xtb-python) or "
            "'DFT' for embedded labels"
        )
    mm_xyz = as_checked_array("mm_positions", mm_positions, (n_mm, 3), np.float64)
    mm_q = as_checked_array("mm_charges", mm_charges, (n_mm,), np.float64)
    if mm_numbers is None and n_mm > 0 and require_mm_numbers:
        raise InputError(
            "mm_numbers is required with point charges: xtb damps each charge according to "
            "its element; pass the elements of the MM atoms"
        )
    mm_z = check_elements("mm_numbers", np.ones(n_mm) if mm_numbers is None else mm_numbers, max_atomic_number, method)
    if mm_z.shape != (n_mm,):
        raise InputError(f"mm_numbers must have shape {(n_mm,)}, got {mm_z.shape}")
    return EngineInputs(numbers, xyz, int(total_charge), int(multiplicity), mm_xyz, mm_q, mm_z)


def package_version(distribution: str) -> str:
    """Installed version of a Python distribution, or ``"unknown"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


class EngineBase(abc.ABC):
    """The ``compute`` of the built-in engines: input checks, then the engine's own ``_compute``.

    A subclass sets ``method`` and the class attributes below (they are the keyword arguments of
    :func:`validate_inputs`) and implements ``_compute(inputs: EngineInputs) -> QMResult``.

    Attributes
    ----------
    distribution : str
        Python distribution of the program, whose installed version is ``engine_version``.
    max_atomic_number : int
        Heaviest element the method accepts.
    supports_point_charges : bool
        Whether point charges are accepted.
    require_mm_numbers : bool
        Whether point charges need their elements (``mm_numbers``).
    min_distance_nm : float or None
        Refuse region atoms closer than this, nm.
    """

    distribution: str = ""
    max_atomic_number: int = 118
    supports_point_charges: bool = True
    require_mm_numbers: bool = False
    min_distance_nm: float | None = None

    @property
    @abc.abstractmethod
    def method(self) -> str:
        """Level of theory (a subclass sets it, as a class attribute or a property)."""

    @property
    def engine_version(self) -> str:
        """Installed version of ``distribution``, or ``"unknown"``."""
        return package_version(self.distribution)

    @property
    def input_label(self) -> str:
        """Name of the method in input error messages; ``method`` unless a subclass says otherwise."""
        return self.method

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
        """Single point (see :meth:`QMEngine.compute`) after :func:`validate_inputs` with this engine's rules.

        Raises
        ------
        InputError
            Bad shapes, NaN, unknown elements, an impossible charge/multiplicity, overlapping atoms,
            or point charges the engine cannot take (all before any calculation).
        QMCalculationError
            The calculation failed (see the engine).
        """
        inputs = validate_inputs(
            atomic_numbers,
            positions,
            total_charge,
            multiplicity,
            mm_positions,
            mm_charges,
            mm_numbers,
            method=self.input_label,
            max_atomic_number=self.max_atomic_number,
            require_mm_numbers=self.require_mm_numbers,
            supports_point_charges=self.supports_point_charges,
            min_distance_nm=self.min_distance_nm,
        )
        return self._compute(inputs)

    @abc.abstractmethod
    def _compute(self, inputs: EngineInputs) -> QMResult:
        """The engine's single point on checked inputs."""


def result_from_atomic_units(
    energy: float,
    gradient: np.ndarray,
    pc_gradient: np.ndarray,
    charges: np.ndarray,
    dipole: np.ndarray,
    what: str,
) -> QMResult:
    """The :class:`QMResult` of a calculation in atomic units (Hartree, Hartree/Bohr, e, e*Bohr).

    Parameters
    ----------
    energy : float
        Hartree.
    gradient, pc_gradient : numpy.ndarray, shape (N, 3) and (M, 3)
        Energy gradients on the region atoms and on the point charges, Hartree/Bohr.
    charges : numpy.ndarray, shape (N,)
        e.
    dipole : numpy.ndarray, shape (3,)
        e*Bohr.
    what : str
        The calculation, for the error message (e.g. ``"GFN2-xTB"``).

    Raises
    ------
    QMCalculationError
        A non-finite energy or gradient.

    Examples
    --------
    >>> result_from_atomic_units(-1.0, np.zeros((1, 3)), np.zeros((0, 3)), np.zeros(1), np.ones(3), "x").dipole
    array([0.05291772, 0.05291772, 0.05291772])
    """
    gradient = np.asarray(gradient, dtype=np.float64)
    pc_gradient = np.asarray(pc_gradient, dtype=np.float64)
    if not (np.isfinite(energy) and np.all(np.isfinite(gradient)) and np.all(np.isfinite(pc_gradient))):
        raise QMCalculationError(f"{what} returned a non-finite energy or gradient")
    return QMResult(
        energy=float(energy) * HARTREE_TO_KJ_PER_MOL,
        forces=-gradient * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
        mm_forces=-pc_gradient * HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM,
        charges=np.asarray(charges, dtype=np.float64).copy(),
        dipole=np.asarray(dipole, dtype=np.float64) * BOHR_TO_NM,
    )


EngineFactory = Callable[[LabelSettings], QMEngine]
_REGISTRY: dict[str, EngineFactory] = {}
_BUILTIN: list[bool] = []


def register_engine(method: str, factory: EngineFactory) -> None:
    """Make ``LabelSettings(method=method)`` build its engine with ``factory(settings)``."""
    _REGISTRY[method] = factory


def available_methods() -> list[str]:
    """Names accepted by :func:`create_engine` (``LabelSettings.method``)."""
    _register_builtin()
    return sorted(_REGISTRY)


def create_engine(settings: LabelSettings | None = None, method: str | None = None) -> QMEngine:
    """Build the engine of ``settings.method`` (or of ``method``, which overrides it).

    Parameters
    ----------
    settings : LabelSettings, optional
        Method and its settings; defaults to GFN2-xTB.
    method : str, optional
        Registered method name; matched case-insensitively.

    Returns
    -------
    QMEngine

    Raises
    ------
    InputError
        For an unknown method; the message lists the valid names.
    """
    _register_builtin()
    settings = settings if settings is not None else LabelSettings()
    name = method if method is not None else settings.method
    matches = {key.lower(): key for key in _REGISTRY}
    if name.lower() not in matches:
        raise InputError(f"unknown QM method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[matches[name.lower()]](settings)


def _register_builtin() -> None:
    if _BUILTIN:
        return
    _BUILTIN.append(True)
    from biomol_nnp.qm.dft_engine import DFTEngine
    from biomol_nnp.qm.mm_engine import MMEngine
    from biomol_nnp.qm.tblite_engine import TBLiteEngine
    from biomol_nnp.qm.xtb_engine import XTBEngine

    builtin: tuple[tuple[str, EngineFactory], ...] = (
        ("GFN2-xTB", XTBEngine),
        ("GFN2-xTB-tblite", TBLiteEngine),
        ("DFT", DFTEngine),
        ("MM", MMEngine.from_settings),
    )
    for name, factory in builtin:
        _REGISTRY.setdefault(name, factory)
