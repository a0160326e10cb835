"""Kohn-Sham DFT (or Hartree-Fock) through PySCF, optionally in the field of MM point charges.

Default level: B3LYP-D3(BJ)/def2-SVP with density fitting (``DFTSettings``). Dispersion comes from
pyscf-dispersion (``mf.disp``); point charges from :func:`pyscf.qmmm.mm_charge` (bare point
charges, no Gaussian smearing). Forces on the point charges are the ``grad_hcore_mm`` (electrons)
plus ``grad_nuc_mm`` (nuclei) terms of PySCF's QM/MM gradient. Charges are Mulliken charges;
the dipole is PySCF's (electrons + nuclei) about the coordinate origin. Functional ``"HF"`` runs
Hartree-Fock. Restricted for singlets, unrestricted otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from biomol_nnp.config import DFTSettings, LabelSettings
from biomol_nnp.exceptions import QMCalculationError
from biomol_nnp.qm.engine import EngineBase, EngineInputs, QMResult, result_from_atomic_units
from biomol_nnp.units import NM_TO_BOHR

logger = logging.getLogger(__name__)

MAX_ATOMIC_NUMBER = 86
MIN_DISTANCE_NM = 0.03
"""Region atoms closer than this are refused as overlapping, nm."""
_INSTALL_HINT = "pip install pyscf pyscf-dispersion"


class DFTEngine(EngineBase):
    """DFT energies, forces (on atoms and point charges), Mulliken charges and dipoles with PySCF.

    ``compute`` (:meth:`EngineBase.compute`) does not use ``mm_numbers``; it refuses overlapping
    atoms (``InputError``) and raises :class:`~biomol_nnp.exceptions.QMCalculationError` when the
    SCF does not converge or PySCF fails (e.g. a basis that lacks an element).

    Parameters
    ----------
    settings : LabelSettings
        ``settings.dft`` holds functional, basis, dispersion, density fitting and SCF thresholds;
        ``settings.threads`` the threads PySCF may use.

    Examples
    --------
    >>> import numpy as np
    >>> from biomol_nnp.config import DFTSettings
    >>> dft = DFTSettings(functional="HF", basis="sto-3g", dispersion="none", density_fitting=False)
    >>> engine = DFTEngine(LabelSettings(method="DFT", dft=dft))
    >>> engine.method, engine.basis
    ('HF', 'sto-3g')
    >>> water = np.array([[0.0, 0.0, -0.0066], [0.0759, 0.0, 0.0521], [-0.0759, 0.0, 0.0521]])
    >>> engine.compute(np.array([8, 1, 1]), water).charges.sum()  # doctest: +SKIP
    0.0
    """

    engine_name = "pyscf"
    distribution = "pyscf"
    max_atomic_number = MAX_ATOMIC_NUMBER
    min_distance_nm = MIN_DISTANCE_NM

    def __init__(self, settings: LabelSettings | None = None) -> None:
        self.settings = settings if settings is not None else LabelSettings(method="DFT")

    @property
    def dft(self) -> DFTSettings:
        """The DFT settings."""
        return self.settings.dft

    @property
    def method(self) -> str:
        """Functional with its dispersion suffix, e.g. ``"B3LYP-D3BJ"``."""
        suffix = "" if self.dft.dispersion == "none" else f"-{self.dft.dispersion.upper()}"
        return f"{self.dft.functional}{suffix}"

    @property
    def basis(self) -> str:
        """Basis set, plus ``"(RI)"`` with density fitting."""
        return self.dft.basis + (" (RI)" if self.dft.density_fitting else "")

    def _compute(self, x: EngineInputs) -> QMResult:
        try:
            from pyscf import lib
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise QMCalculationError(f"method 'DFT' needs PySCF: {_INSTALL_HINT}") from err
        previous = lib.num_threads()
        lib.num_threads(self.settings.threads)
        try:
            return self._run(x)
        except QMCalculationError:
            raise
        except (RuntimeError, ValueError, KeyError, np.linalg.LinAlgError) as err:
            raise QMCalculationError(f"{self.method}/{self.dft.basis} failed: {type(err).__name__}: {err}") from err
        finally:
            lib.num_threads(previous)

    def _build(self, numbers: np.ndarray, xyz: np.ndarray, charge: int, multiplicity: int) -> Any:
        from pyscf import dft, gto, scf

        mol = gto.Mole()
        mol.atom = [(int(z), tuple(p)) for z, p in zip(numbers, xyz * NM_TO_BOHR, strict=True)]
        mol.unit = "Bohr"
        mol.basis = self.dft.basis
        mol.charge = charge
        mol.spin = multiplicity - 1
        mol.verbose = 0
        mol.max_memory = self.dft.max_memory_mb
        mol.build()
        restricted = multiplicity == 1
        if self.dft.functional.upper() == "HF":
            mf = scf.RHF(mol) if restricted else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if restricted else dft.UKS(mol)
            mf.xc = self.dft.functional
            mf.grids.level = self.dft.grid_level
        if self.dft.dispersion != "none":
            mf.disp = self.dft.dispersion
        mf.conv_tol = self.dft.conv_tol
        mf.max_cycle = self.dft.max_cycle
        mf.max_memory = self.dft.max_memory_mb
        if self.dft.density_fitting:
            mf = mf.density_fit()
        return mf

    def _run(self, x: EngineInputs) -> QMResult:
        from pyscf import qmmm

        mf = self._build(x.numbers, x.positions, x.total_charge, x.multiplicity)
        n_mm = x.n_mm
        if n_mm:
            mf = qmmm.mm_charge(mf, x.mm_positions * NM_TO_BOHR, x.mm_charges, unit="Bohr")
        energy = float(mf.kernel())
        if not mf.converged:
            raise QMCalculationError(
                f"{self.method}/{self.dft.basis}: SCF did not converge in {self.dft.max_cycle} cycles; "
                "raise DFTSettings.max_cycle or check the geometry"
            )
        grad = mf.nuc_grad_method()
        gradient = np.asarray(grad.kernel(), dtype=np.float64)
        dm = mf.make_rdm1()
        dm_total = dm if dm.ndim == 2 else dm[0] + dm[1]
        pc_gradient = np.zeros((n_mm, 3))
        if n_mm:
            pc_gradient = np.asarray(grad.grad_hcore_mm(dm_total) + grad.grad_nuc_mm(), dtype=np.float64)
        _, charges = mf.mulliken_pop(verbose=0)
        dipole = np.asarray(mf.dip_moment(unit="AU", verbose=0), dtype=np.float64)
        return result_from_atomic_units(
            energy, gradient, pc_gradient, charges, dipole, f"{self.method}/{self.dft.basis}"
        )
