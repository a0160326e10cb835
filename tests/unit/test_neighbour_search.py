"""The linear-cost neighbour search selects exactly what the brute-force all-pairs selection selects.

Reference: :func:`biomol_nnp.models.environment.embedding_environment` over every MM atom (region x all-MM
minimum-image distances). Under test: :func:`candidate_atoms` (one O(M) pass against spheres covering the
region) followed by the same function on the candidates only, as the OpenMM callbacks run it
(:func:`biomol_nnp.openmm.backend.local_environment`, atom-wise wrapped input). Random periodic systems
with rectangular and triclinic (OpenMM reduced) boxes, compact and elongated regions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomol_nnp.models.environment import box_width, candidate_atoms, covering_spheres, embedding_environment
from biomol_nnp.openmm.backend import ModelForceCallback, local_environment, molecule_anchors
from biomol_nnp.qm.sampling import minimum_image
from tests.toy_models import make_toy_model

CUTOFF = 1.0
SWITCH = 0.1


def reduced_box(rng: np.random.Generator, edge: float, triclinic: bool) -> np.ndarray:
    """A random box in OpenMM's reduced form (a along x, b in xy, |b_x| <= a_x/2, ...), nm."""
    box = np.diag(edge * rng.uniform(0.95, 1.05, size=3))
    if triclinic:
        box[1, 0] = rng.uniform(-0.5, 0.5) * box[0, 0]
        box[2, 0] = rng.uniform(-0.5, 0.5) * box[0, 0]
        box[2, 1] = rng.uniform(-0.5, 0.5) * box[1, 1]
    return box


def random_system(rng: np.random.Generator, box: np.ndarray, n_molecules: int, elongated: bool):
    """Region [N,3] (whole), MM positions whole [M,3] and wrapped atom by atom, charges [M], molecules [M]."""
    if elongated:  # a chain of residues 2.2 nm long
        region = np.stack([np.linspace(0.0, 2.2, 24), rng.normal(0, 0.1, 24), rng.normal(0, 0.1, 24)], axis=1)
    else:
        region = rng.normal(0.0, 0.2, size=(20, 3))
    region += rng.uniform(0, 1, 3) @ box  # anywhere in the box, possibly sticking out of it
    sizes = rng.integers(1, 5, size=n_molecules)  # ions to four-atom molecules
    molecules = np.repeat(np.arange(n_molecules), sizes)
    anchors = rng.uniform(0, 1, size=(n_molecules, 3)) @ box
    whole = anchors[molecules] + rng.normal(0.0, 0.08, size=(len(molecules), 3))
    charges = rng.normal(0.0, 0.5, size=len(molecules))
    fractions = np.floor(np.linalg.solve(box.T, whole.T).T)  # wrap every atom into the cell on its own
    wrapped = whole - fractions @ box
    return region, whole, wrapped, charges, molecules


def brute_force(region, whole, charges, molecules, box):
    positions, switched, kept = embedding_environment(
        torch.from_numpy(region),
        torch.from_numpy(whole),
        torch.from_numpy(charges),
        torch.from_numpy(molecules),
        None if box is None else torch.from_numpy(box),
        CUTOFF,
        SWITCH,
    )
    return positions.numpy(), switched.numpy(), kept.numpy()


def searched(region, positions, charges, molecules, box):
    """The callbacks' path: region + wrapped MM atoms -> candidates, whole molecules -> selection."""
    stacked = np.concatenate([region, positions])
    whole_region, subset, local, images = local_environment(
        stacked, len(region), molecule_anchors(molecules), molecules, box, CUTOFF
    )
    assert (images is None) == (box is None)
    imaged, switched, kept = embedding_environment(
        torch.from_numpy(whole_region),
        torch.from_numpy(local),
        torch.from_numpy(charges[subset]),
        torch.from_numpy(molecules[subset]),
        None if box is None else torch.from_numpy(box),
        CUTOFF,
        SWITCH,
        None if images is None else torch.from_numpy(images),
    )
    return whole_region, imaged.numpy(), switched.numpy(), subset[kept.numpy()], subset


@pytest.mark.parametrize("triclinic", [False, True], ids=["rectangular", "triclinic"])
@pytest.mark.parametrize("elongated", [False, True], ids=["compact", "elongated"])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_selection_as_brute_force(seed, triclinic, elongated):
    rng = np.random.default_rng(seed)
    box = reduced_box(rng, 7.0, triclinic)
    region, whole, wrapped, charges, molecules = random_system(rng, box, 2500, elongated)
    reference = brute_force(region, whole, charges, molecules, box)
    whole_region, imaged, switched, kept, subset = searched(region, wrapped, charges, molecules, box)
    np.testing.assert_allclose(whole_region, region, atol=1e-12)  # the region was whole: unchanged
    np.testing.assert_array_equal(kept, reference[2])
    np.testing.assert_allclose(switched, reference[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(imaged, reference[0], rtol=0, atol=1e-9)
    assert 0 < len(reference[2]) and np.any((switched != 0) & (switched != charges[kept]))  # shell exercised
    assert len(subset) < 0.5 * len(whole)  # the expensive step saw a fraction of the system


@pytest.mark.parametrize("triclinic", [False, True], ids=["rectangular", "triclinic"])
def test_small_box_fallback_matches_brute_force(triclinic):
    """Cutoff + region extent above half the box width (every atom a candidate, pairs imaged one by one)."""
    rng = np.random.default_rng(4)
    box = reduced_box(rng, 2.6, triclinic)
    region, whole, wrapped, charges, molecules = random_system(rng, box, 350, elongated=False)
    reference = brute_force(region, whole, charges, molecules, box)
    _, imaged, switched, kept, subset = searched(region, wrapped, charges, molecules, box)
    # triclinic: every atom a candidate; rectangular: only atoms whose minimum image is within reach
    assert len(subset) == len(whole) if triclinic else len(subset) < len(whole)
    np.testing.assert_array_equal(kept, reference[2])
    np.testing.assert_allclose(switched, reference[1], atol=1e-12)
    np.testing.assert_allclose(imaged, reference[0], atol=1e-9)


def test_non_periodic_selection_matches():
    rng = np.random.default_rng(5)
    region, whole, _, charges, molecules = random_system(rng, np.eye(3) * 5.0, 1500, elongated=False)
    reference = brute_force(region, whole, charges, molecules, None)
    _, imaged, switched, kept, _ = searched(region, whole, charges, molecules, None)
    np.testing.assert_array_equal(kept, reference[2])
    np.testing.assert_allclose(switched, reference[1], atol=1e-12)
    np.testing.assert_allclose(imaged, reference[0], atol=1e-12)


def test_candidates_do_not_grow_with_the_system():
    """At fixed density, a 27x larger box gives the same candidates around the same region."""
    rng = np.random.default_rng(3)
    small = np.eye(3) * 4.0
    region, whole, _, _, molecules = random_system(rng, small, 2000, elongated=False)
    big = small * 3.0
    replicas = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)]) * 4.0
    big_positions = (whole[None, :, :] + replicas[:, None, :]).reshape(-1, 3)
    big_molecules = (molecules[None, :] + 2000 * np.arange(27)[:, None]).reshape(-1)
    near_small = candidate_atoms(region % 4.0, whole, molecules, small, CUTOFF)
    near_big = candidate_atoms(region % 4.0 + 4.0, big_positions, big_molecules, big, CUTOFF)
    assert len(near_big) == len(near_small) < len(whole)


def test_region_too_large_for_the_box_falls_back_to_all_atoms():
    box = np.eye(3) * 2.5
    region = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    positions = np.random.default_rng(0).uniform(0, 2.5, size=(50, 3))
    assert box_width(box) == pytest.approx(2.5)
    triclinic = box + np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(candidate_atoms(region, positions, np.arange(50), triclinic, CUTOFF), np.arange(50))
    # rectangular: every atom with an image within the cutoff of a region atom, and none beyond the reach of the
    # centroid (cutoff + 0.45 nm: the covering sphere of radius 0.3 nm is centred 0.15 nm from the centroid)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ box
    images = positions[:, None, :] + shifts[None, :, :]
    to_region = np.linalg.norm(images[:, :, None, :] - region[None, None, :, :], axis=-1)
    needed = set(np.flatnonzero((to_region < CUTOFF).any(axis=(1, 2))))
    reachable = set(np.flatnonzero((np.linalg.norm(images - region.mean(axis=0), axis=-1) < CUTOFF + 0.45).any(1)))
    candidates = set(candidate_atoms(region, positions, np.arange(50), box, CUTOFF))
    assert needed <= candidates <= reachable
    assert len(candidates) < 50


def test_covering_spheres_contain_every_atom():
    region = np.random.default_rng(1).uniform(0, 2.0, size=(60, 3))
    centres, radii = covering_spheres(region, 0.4)
    distance = np.linalg.norm(region[:, None] - centres[None], axis=-1)
    assert (radii <= 0.4 + 1e-12).all()
    assert (distance <= radii[None] + 1e-12).any(axis=1).all()


def test_triclinic_box_width():
    box = np.array([[3.0, 0.0, 0.0], [1.0, 3.0, 0.0], [1.0, 1.0, 3.0]])
    # the distance between the faces spanned by u and v: |w . n| with n the unit normal of u x v
    widths = []
    for u, v, w in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        normal = np.cross(box[u], box[v])
        widths.append(abs(box[w] @ normal) / np.linalg.norm(normal))
    expected = min(widths)
    assert box_width(box) == pytest.approx(expected)
    assert box_width(box) < 3.0


def test_callback_energy_and_forces_equal_brute_force(tmp_path):
    """Energy and every force of the callback equal those of the model on the all-pairs selection."""
    path = make_toy_model(tmp_path / "toy.pt")
    rng = np.random.default_rng(11)
    box = reduced_box(rng, 4.0, triclinic=True)
    region, whole, wrapped, charges, molecules = random_system(rng, box, 600, elongated=False)
    region = region[:8]
    numbers = [8, 1, 1, 6, 1, 1, 7, 1]
    callback = ModelForceCallback(
        path,
        list(range(8)),
        numbers,
        0.0,
        mm_atoms=list(range(8, 8 + len(whole))),
        mm_charges=charges.tolist(),
        mm_molecules=molecules.tolist(),
        periodic=True,
    )
    energy, forces = callback.compute(np.concatenate([region, wrapped]), box)

    module = torch.jit.load(str(path))
    region_t = torch.from_numpy(region.copy()).requires_grad_(True)
    whole_t = torch.from_numpy(whole.copy()).requires_grad_(True)
    imaged, switched, _ = embedding_environment(
        region_t,
        whole_t,
        torch.from_numpy(charges),
        torch.from_numpy(molecules),
        torch.from_numpy(box),
        callback.cutoff_nm,
        callback.switch_width_nm,
    )
    reference = module(
        region_t, torch.tensor(numbers), torch.tensor(0.0, dtype=torch.float64), imaged, switched, torch.zeros(0, 3)
    )
    grad_region, grad_mm = torch.autograd.grad(reference, (region_t, whole_t))
    assert energy == pytest.approx(float(reference.detach()), rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(forces[:8], -grad_region.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(forces[8:], -grad_mm.numpy(), rtol=1e-9, atol=1e-9)
    assert np.count_nonzero(np.abs(forces[8:]).sum(axis=1)) > 10  # MM atoms feel the region


def test_wrapped_and_whole_input_give_the_same_selection():
    rng = np.random.default_rng(7)
    box = reduced_box(rng, 5.0, triclinic=True)
    region, whole, wrapped, charges, molecules = random_system(rng, box, 1500, elongated=False)
    shifted = region + box[0] - 2 * box[2]  # the region itself given in another cell
    a = searched(shifted, wrapped, charges, molecules, box)
    b = searched(region, whole, charges, molecules, box)
    np.testing.assert_array_equal(a[3], b[3])
    np.testing.assert_allclose(a[2], b[2], atol=1e-12)
    # imaged positions follow the region: same relative geometry
    np.testing.assert_allclose(minimum_image(a[1] - a[0][0], box), minimum_image(b[1] - b[0][0], box), atol=1e-9)
