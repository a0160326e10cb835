"""REST2 (replica exchange with solute tempering, Wang, Friesner & Berne, J. Phys. Chem. B 115, 9431 (2011)).

Every replica runs at the same temperature T0; replica m sees the potential

    E_m = s E_rr + sqrt(s) E_re + E_ee,        s = beta_m / beta_0 = T0 / T_m <= 1

where r is the region (the "hot" solute: an ML region or any MM atoms) and e the environment, so the
region is effectively at T_m while the water stays at T0 and far fewer replicas are needed than for
temperature replica exchange. :func:`rest2_system` rewrites a System (pure MM, NNP/MM or refitted) with
two global parameters, ``rest2_scale`` = s and ``rest2_sqrt_scale`` = sqrt(s), so
:class:`openmm.app.ReplicaExchangeSampler` changes state by setting context parameters:

- ``NonbondedForce``: the region's charges become sqrt(s) q and its LJ epsilons s eps (parameter offsets on
  zeroed base values), so region-region Coulomb and LJ scale by s and region-environment by sqrt(s)
  (geometric combination of epsilon); exceptions (1-4 pairs) with both atoms in the region scale by s,
  with one by sqrt(s). PME follows the offsets.
- ``PeriodicTorsionForce``: torsions whose two outer atoms are both in the region scale by s, with one
  outer atom by sqrt(s) (PLUMED's partial_tempering rule); they move to a ``CustomTorsionForce``.
  Bonds and angles are not scaled (as in REST2); CMAP terms are not scaled (a warning names them).
- NNP/MM: the model force (``ModelForceCallback`` from :mod:`biomol_nnp.openmm.backend`) becomes
  :class:`Rest2ModelCallback`: ``s E_vac + sqrt(s) E_emb`` with ``E_emb = E(embedded) - E_vac``, so the NNP
  region's internal energy scales by s and its electrostatic embedding by sqrt(s); ML-MM LJ follows
  the NonbondedForce rule above (two model evaluations per step).

At s = 1 the energy equals the original System's.

>>> system = rest2_system(mm_system, region_atoms)  # doctest: +SKIP
>>> states = rest2_states(rest2_scales(300.0, 450.0, 4))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import numpy as np
import openmm
import openmm.unit as u

from biomol_nnp.exceptions import InputError
from biomol_nnp.openmm.backend import ModelForceCallback, force_callback

logger = logging.getLogger(__name__)

SCALE = "rest2_scale"
"""Global parameter s = beta_m / beta_0 (region-region factor)."""
SQRT_SCALE = "rest2_sqrt_scale"
"""Global parameter sqrt(s) (region-environment factor)."""
TORSION_ENERGY = f"(full*{SCALE} + half*{SQRT_SCALE})*k*(1 + cos(periodicity*theta - phase))"
UNSUPPORTED = (openmm.CustomNonbondedForce, openmm.GBSAOBCForce, openmm.CustomGBForce, openmm.AmoebaMultipoleForce)


def rest2_scales(temperature_k: float, max_temperature_k: float, n_replicas: int) -> list[float]:
    """Scales s_m = T0 / T_m for effective temperatures geometric from T0 to ``max_temperature_k``."""
    if n_replicas < 2 or not 0 < temperature_k < max_temperature_k:
        raise InputError(
            f"REST2 ladder T0={temperature_k} K, T_max={max_temperature_k} K, n={n_replicas}: need "
            "0 < T0 < T_max and at least 2 replicas"
        )
    temperatures = np.geomspace(temperature_k, max_temperature_k, n_replicas)
    return [float(temperature_k / t) for t in temperatures]


def rest2_states(scales: Sequence[float]) -> list[dict[str, float]]:
    """ReplicaExchangeSampler states (context parameters) for the REST2 scales ``s`` (0 < s <= 1)."""
    bad = [s for s in scales if not 0.0 < s <= 1.0]
    if bad:
        raise InputError(f"REST2 scales {bad} are not allowed; each s = T0/T_m must be in (0, 1]")
    return [{SCALE: float(s), SQRT_SCALE: math.sqrt(s)} for s in scales]


def set_rest2_scale(context: openmm.Context, scale: float) -> None:
    """Put a Context of a :func:`rest2_system` at scale ``s``."""
    context.setParameter(SCALE, scale)
    context.setParameter(SQRT_SCALE, math.sqrt(scale))


def rest2_system(system: openmm.System, region: Sequence[int]) -> openmm.System:
    """A copy of ``system`` whose region is scaled by the REST2 parameters (see the module docstring).

    Parameters
    ----------
    system : openmm.System
        Pure MM, NNP/MM (``MLPotential('biomol-nnp').createMixedSystem``, without ``interpolate``) or a
        refitted-force-field System.
    region : sequence of int
        Atom indices of the hot region (for NNP/MM: the ML atoms).

    Returns
    -------
    openmm.System
        New System with global parameters ``rest2_scale`` and ``rest2_sqrt_scale`` (default 1).
    """
    atoms = {int(i) for i in region}
    if not atoms or min(atoms) < 0 or max(atoms) >= system.getNumParticles():
        raise InputError(
            f"region has {len(atoms)} atoms with indices {sorted(atoms)[:3]}...; give distinct atom indices "
            f"in [0, {system.getNumParticles()})"
        )
    new = copy.deepcopy(system)
    extra: list[openmm.Force] = []
    for index in reversed(range(new.getNumForces())):
        force = new.getForce(index)
        if isinstance(force, openmm.NonbondedForce):
            _scale_nonbonded(force, atoms)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            extra.extend(_scale_torsions(force, atoms))
        elif isinstance(force, openmm.PythonForce):
            extra.append(_scale_python_force(force, atoms, new))
            new.removeForce(index)  # the System owns (and deletes) the removed force: read it first
        elif isinstance(force, openmm.CMAPTorsionForce):
            _warn_cmap(force, atoms)
        elif isinstance(force, openmm.CustomCVForce) and _contains_python_force(force):
            raise InputError(
                "the System has a model force inside a CustomCVForce (openmm-ml interpolate=True); REST2 needs the "
                "model force itself: create the mixed System with interpolate=False"
            )
        elif isinstance(force, UNSUPPORTED):
            raise InputError(
                f"force {index} ({type(force).__name__}, {force.getName()!r}) is not supported by REST2; supported: "
                "NonbondedForce, PeriodicTorsionForce, the biomol-nnp model force, and any force left unscaled "
                "(bonds, angles, restraints, barostats)"
            )
    for force in extra:
        new.addForce(force)
    logger.info("REST2 System: %d region atoms, %d forces rewritten", len(atoms), len(extra))
    return new


def _scale_nonbonded(force: openmm.NonbondedForce, atoms: set[int]) -> None:
    force.addGlobalParameter(SCALE, 1.0)
    force.addGlobalParameter(SQRT_SCALE, 1.0)
    for i in sorted(atoms):
        charge, sigma, epsilon = force.getParticleParameters(i)
        force.setParticleParameters(i, 0.0, sigma, 0.0)
        if charge.value_in_unit(u.elementary_charge) != 0.0:
            force.addParticleParameterOffset(SQRT_SCALE, i, charge, 0.0, 0.0)
        if epsilon.value_in_unit(u.kilojoule_per_mole) != 0.0:
            force.addParticleParameterOffset(SCALE, i, 0.0, 0.0, epsilon)
    for k in range(force.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = force.getExceptionParameters(k)
        inside = (i in atoms) + (j in atoms)
        if inside == 0 or (
            charge_product.value_in_unit(u.elementary_charge**2) == 0.0
            and epsilon.value_in_unit(u.kilojoule_per_mole) == 0.0
        ):
            continue
        force.setExceptionParameters(k, i, j, 0.0, sigma, 0.0)
        force.addExceptionParameterOffset(SCALE if inside == 2 else SQRT_SCALE, k, charge_product, 0.0, epsilon)


def _scale_torsions(force: openmm.PeriodicTorsionForce, atoms: set[int]) -> list[openmm.Force]:
    custom = openmm.CustomTorsionForce(TORSION_ENERGY)
    custom.setName(f"REST2 {force.getName()}")
    custom.setForceGroup(force.getForceGroup())
    custom.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    custom.addGlobalParameter(SCALE, 1.0)
    custom.addGlobalParameter(SQRT_SCALE, 1.0)
    for name in ("full", "half", "periodicity", "phase", "k"):
        custom.addPerTorsionParameter(name)
    for index in range(force.getNumTorsions()):
        a, b, c, d, periodicity, phase, k = force.getTorsionParameters(index)
        outer = (a in atoms) + (d in atoms)
        k_kj = k.value_in_unit(u.kilojoule_per_mole)
        if outer == 0 or k_kj == 0.0:
            continue
        parameters = [float(outer == 2), float(outer == 1), periodicity, phase.value_in_unit(u.radian), k_kj]
        custom.addTorsion(a, b, c, d, parameters)
        force.setTorsionParameters(index, a, b, c, d, periodicity, phase, 0.0)
    return [custom] if custom.getNumTorsions() else []


def _warn_cmap(force: openmm.CMAPTorsionForce, atoms: set[int]) -> None:
    touching = sum(
        1 for index in range(force.getNumTorsions()) if atoms.intersection(force.getTorsionParameters(index)[1:])
    )
    if touching:
        logger.warning(
            "REST2 leaves %d CMAP terms of the region unscaled (only torsion/nonbonded terms scale)", touching
        )


def _contains_python_force(force: openmm.CustomCVForce) -> bool:
    return any(
        isinstance(force.getCollectiveVariable(i), openmm.PythonForce) for i in range(force.getNumCollectiveVariables())
    )


def _scale_python_force(force: openmm.PythonForce, atoms: set[int], system: openmm.System) -> openmm.PythonForce:
    callback = force_callback(force)
    if not isinstance(callback, ModelForceCallback):
        raise InputError(
            f"PythonForce {force.getName()!r} runs a {type(callback).__name__}; REST2 can scale the biomol-nnp model "
            "force (ModelForceCallback) only; for xTB/MM run temperature replica exchange (kind 'temperature')"
        )
    missing = [i for i in callback.ml_atoms if i not in atoms and not system.isVirtualSite(i)]
    if missing:
        raise InputError(
            f"the REST2 region lacks {len(missing)} ML atoms of the model force (e.g. {missing[:5]}); give the ML "
            "region (all atoms the model describes) as the REST2 region"
        )
    wrapped = Rest2ModelCallback(callback)
    scaled = openmm.PythonForce(wrapped, {SCALE: 1.0, SQRT_SCALE: 1.0})
    scaled.setParticles(callback.particles())
    scaled.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    scaled.setForceGroup(force.getForceGroup())
    scaled.setName(f"REST2 {force.getName()}")
    return scaled


class Rest2ModelCallback:
    """PythonForce computation ``s E_vac + sqrt(s) (E_embedded - E_vac)`` of a biomol-nnp model.

    Parameters
    ----------
    embedded : ModelForceCallback
        The model force of the NNP/MM System (with or without electrostatic embedding). Without
        embedding (mechanical) the energy is ``s E_vac`` and the ML-MM Coulomb is in the NonbondedForce.

    Examples
    --------
    >>> force = openmm.PythonForce(Rest2ModelCallback(callback), {SCALE: 1.0, SQRT_SCALE: 1.0})  # doctest: +SKIP
    """

    def __init__(self, embedded: ModelForceCallback) -> None:
        self.embedded = embedded
        self.n_ml = len(embedded.ml_atoms)
        self.vacuum = ModelForceCallback(
            embedded.model_path,
            embedded.ml_atoms,
            embedded.atomic_numbers,
            embedded.total_charge,
            periodic=embedded.periodic,
            torch_threads=embedded.torch_threads,
            embedding=False,
        )

    def particles(self) -> list[int]:
        """System indices of the particles (ML atoms, then MM charges), as the embedded callback."""
        return self.embedded.particles()

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        parameters = state.getParameters()
        scale, sqrt_scale = float(parameters[SCALE]), float(parameters[SQRT_SCALE])
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if self.embedded.periodic else None
        vacuum_energy, vacuum_forces = self.vacuum.compute(positions[: self.n_ml], box)
        forces = np.zeros_like(positions)
        if not self.embedded.mm_atoms:
            forces[: self.n_ml] = scale * vacuum_forces
            return scale * vacuum_energy, forces
        total_energy, total_forces = self.embedded.compute(positions, box)
        forces[:] = sqrt_scale * total_forces
        forces[: self.n_ml] += (scale - sqrt_scale) * vacuum_forces
        return sqrt_scale * total_energy + (scale - sqrt_scale) * vacuum_energy, forces
