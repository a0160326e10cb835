"""An "engine" that evaluates an OpenMM System: MM baselines for delta targets, and test oracles.

What it computes, exactly:

- ``energy`` and ``forces``: the potential energy and forces of the System (all its forces) at the
  region positions, on the chosen OpenMM platform (``Reference`` by default: double precision).
- with point charges: plus the bare Coulomb sum ``k_e sum_a sum_j q_a q_j / r_aj`` between the
  region's NonbondedForce charges ``q_a`` and the point charges ``q_j``, evaluated directly in
  numpy (no cutoff, no exclusions, no Lennard-Jones, no PME); ``mm_forces`` are its forces on the
  point charges. That is the classical (fixed-charge, mechanical) embedding of the region.
- ``charges``: the NonbondedForce charges of the region (fixed; they do not respond to the field).
- ``dipole``: ``sum_a q_a r_a`` about the coordinate origin.

The System must have one particle per region atom; ``total_charge`` must equal its charges' sum.

>>> engine = MMEngine(system)  # doctest: +SKIP
>>> engine.compute(numbers, positions).energy  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.qm.engine import EngineBase, EngineInputs, QMResult
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

logger = logging.getLogger(__name__)

MAX_ATOMIC_NUMBER = 118
CHARGE_TOLERANCE = 1e-3
"""Largest accepted difference between ``total_charge`` and the System's charge sum, e."""


class MMEngine(EngineBase):
    """Energy and forces of an OpenMM System, with a direct Coulomb sum for MM point charges.

    ``compute`` (:meth:`EngineBase.compute`) raises ``InputError`` also for a particle count that
    differs from the System's, or a ``total_charge`` that is not the sum of the System's charges.

    Parameters
    ----------
    system : openmm.System or str
        The System of the region (one particle per region atom), or its XML serialization.
    platform : {"Reference", "CPU"}
        OpenMM platform.

    Examples
    --------
    >>> import openmm
    >>> system = openmm.System(); _ = system.addParticle(1.0)
    >>> MMEngine(system).compute(np.array([1]), np.zeros((1, 3)), multiplicity=2).energy
    0.0
    """

    method = "MM"
    basis = ""
    engine_name = "openmm"
    max_atomic_number = MAX_ATOMIC_NUMBER

    def __init__(self, system: Any, platform: str = "Reference") -> None:
        import openmm

        self._xml = system if isinstance(system, str) else openmm.XmlSerializer.serialize(system)
        self.platform = platform
        self._context: Any = None
        self._charges: np.ndarray | None = None

    @classmethod
    def from_settings(cls, settings: LabelSettings) -> MMEngine:
        """The engine of ``settings.mm_system_xml`` (a System serialized with ``openmm.XmlSerializer``)."""
        path = settings.mm_system_xml
        if path is None:
            raise ConfigError(
                "method 'MM' needs LabelSettings.mm_system_xml: the serialized OpenMM System of the region "
                "(openmm.XmlSerializer.serialize(system))"
            )
        if not Path(path).is_file():
            raise ConfigError(f"mm_system_xml {str(path)!r} does not exist; give the XML file of the System")
        return cls(Path(path).read_text())

    @property
    def engine_version(self) -> str:
        """OpenMM version."""
        import openmm

        return str(openmm.__version__)

    def __getstate__(self) -> dict[str, Any]:
        # an OpenMM Context cannot be pickled; a worker process builds its own
        return {"_xml": self._xml, "platform": self.platform, "_context": None, "_charges": None}

    def _ensure_context(self) -> Any:
        if self._context is None:
            import openmm

            system = openmm.XmlSerializer.deserialize(self._xml)
            integrator = openmm.VerletIntegrator(0.001)
            platform = openmm.Platform.getPlatformByName(self.platform)
            self._context = openmm.Context(system, integrator, platform)
            self._integrator = integrator
            charges = np.zeros(system.getNumParticles())
            for force in system.getForces():
                if isinstance(force, openmm.NonbondedForce):
                    for i in range(system.getNumParticles()):
                        charges[i] = force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
            self._charges = charges
        return self._context

    def _compute(self, x: EngineInputs) -> QMResult:
        from openmm import unit

        context = self._ensure_context()
        q = self._charges if self._charges is not None else np.zeros(0)
        n = x.numbers.size
        if n != q.size:
            raise InputError(f"the MM System has {q.size} particles but the region has {n} atoms; give its System")
        if abs(q.sum() - x.total_charge) > CHARGE_TOLERANCE:
            raise InputError(
                f"total_charge={x.total_charge} but the System's charges sum to {q.sum():.4f} e; "
                "give the region's net charge"
            )
        context.setPositions(x.positions)
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        mm_forces = np.zeros((x.n_mm, 3))
        if x.n_mm:
            d = x.positions[:, None, :] - x.mm_positions[None, :, :]  # (N, M, 3) nm
            r = np.linalg.norm(d, axis=-1)
            if r.min() < 1e-6:
                raise InputError("a point charge sits on a region atom (distance < 1e-6 nm); move it")
            qq = ELECTROSTATIC_CONSTANT * q[:, None] * x.mm_charges[None, :]
            energy += float(np.sum(qq / r))
            pair = (qq / r**3)[..., None] * d  # force on the region atom from each charge
            forces = forces + pair.sum(axis=1)
            mm_forces = -pair.sum(axis=0)
        return QMResult(
            energy=float(energy),
            forces=forces,
            mm_forces=mm_forces,
            charges=q.copy(),
            dipole=(q[:, None] * x.positions).sum(axis=0),
        )
