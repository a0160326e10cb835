"""The embedding kernel's softening widths: recovered when known, and GFN2-xTB's point-charge coupling reproduced.

GFN2-xTB couples its atomic charges to external point charges through a softened (Klopman-Ohno) Coulomb
kernel, so the widths fitted before training (`fit_embedding_widths`) must turn the labelled vacuum charges into
the labelled embedding energies far better than a plain Coulomb kernel does, on configurations not fitted.
"""

import dataclasses

import numpy as np
import openmm.unit
import pytest

from biomol_nnp.train.data import TrainingSample
from biomol_nnp.train.initialise import fit_embedding_widths
from biomol_nnp.units import ELECTROSTATIC_CONSTANT
from tests.run_helpers import dipeptide_water_cluster

ELEMENTS = [1, 6, 7, 8]


Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def cluster_frames(count: int, seed: int = 3) -> list[Frame]:
    """Alanine dipeptide and 12 TIP3P waters, every water moved rigidly by up to 0.04 nm and all atoms jittered.

    Returns per frame (atomic numbers, region nm, MM nm, MM charges e, MM atomic numbers).
    """
    topology, system, positions, region = dipeptide_water_cluster(n_waters=12)
    nonbonded = next(f for f in system.getForces() if f.__class__.__name__ == "NonbondedForce")
    charges = np.array([nonbonded.getParticleParameters(i)[0]._value for i in range(system.getNumParticles())])
    numbers = np.array([a.element.atomic_number for a in topology.atoms()])
    xyz = np.array(positions.value_in_unit(openmm.unit.nanometer))
    waters = [[a.index for a in r.atoms()] for r in topology.residues() if r.name == "HOH"]
    mm = [i for water in waters for i in water]
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        moved = xyz + rng.normal(0.0, 0.003, xyz.shape)
        for water in waters:
            moved[water] += rng.uniform(-0.04, 0.04, 3)
        frames.append((numbers[region], moved[region], moved[mm], charges[mm], numbers[mm]))
    return frames


def sample(numbers, positions, mm_positions, mm_charges, charges, embedding_energy) -> TrainingSample:
    return TrainingSample(
        atomic_numbers=numbers,
        positions=positions,
        total_charge=0.0,
        energy=0.0,
        forces=np.zeros_like(positions),
        charges=charges,
        mm_positions=mm_positions,
        mm_charges=mm_charges,
        embedding_energy=embedding_energy,
        trajectory_id=0,
        source="test",
    )


def softened_energy(s: TrainingSample, widths: np.ndarray) -> float:
    species = np.searchsorted(ELEMENTS, s.atomic_numbers)
    w = np.where(s.mm_charges[None] < 0, widths[species, 1:2], widths[species, 0:1])
    squared = ((s.positions[:, None] - s.mm_positions[None]) ** 2).sum(-1)
    return float((ELECTROSTATIC_CONSTANT * s.charges[:, None] * s.mm_charges[None] / np.sqrt(squared + w * w)).sum())


def test_fit_recovers_the_widths_that_made_the_energies():
    known = np.array([[0.13, 0.11], [0.26, 0.24], [0.30, 0.28], [0.09, 0.08]])
    rng = np.random.default_rng(0)
    samples = []
    for numbers, positions, mm_positions, mm_charges, _ in cluster_frames(10):
        blank = sample(numbers, positions, mm_positions, mm_charges, rng.normal(0.0, 0.3, len(numbers)), 0.0)
        samples.append(dataclasses.replace(blank, embedding_energy=softened_energy(blank, known)))
    fitted = fit_embedding_widths(samples, ELEMENTS, np.full((4, 2), 0.03))
    np.testing.assert_allclose(fitted, known, rtol=1e-5)


def test_fewer_embedded_frames_than_the_minimum_keep_the_start_widths():
    frames = cluster_frames(3)
    samples = [sample(*f[:4], np.zeros(len(f[0])), -100.0) for f in frames]
    start = np.full((4, 2), 0.05)
    np.testing.assert_array_equal(fit_embedding_widths(samples, ELEMENTS, start), start)


def test_fitted_widths_reproduce_gfn2_xtb_embedding_energies_on_unseen_frames():
    """Fitted on 16 frames, scored on 8 others: the labelled charges in the fitted kernel recover GFN2-xTB's
    embedding energy to a fraction of the plain-Coulomb error."""
    pytest.importorskip("xtb")
    from biomol_nnp.config import LabelSettings
    from biomol_nnp.qm.xtb_engine import XTBEngine

    engine = XTBEngine(LabelSettings())
    samples = []
    for numbers, positions, mm_positions, mm_charges, mm_numbers in cluster_frames(24, seed=7):
        vacuum = engine.compute(numbers, positions)
        embedded = engine.compute(numbers, positions, 0, 1, mm_positions, mm_charges, mm_numbers)
        samples.append(
            sample(numbers, positions, mm_positions, mm_charges, vacuum.charges, embedded.energy - vacuum.energy)
        )
    fitted = fit_embedding_widths(samples[:16], ELEMENTS, np.full((4, 2), 0.03))

    def error(widths: np.ndarray) -> float:
        return float(np.mean([abs(softened_energy(s, widths) - s.embedding_energy) for s in samples[16:]]))

    plain = error(np.full((4, 2), 1e-6))
    print(f"held-out embedding MAE kJ/mol: fitted {error(fitted):.2f}, plain Coulomb {plain:.2f}")
    assert error(fitted) < 0.35 * plain
