"""The MM environment an embedded region sees: whole molecules within a cutoff, smoothly switched.

Electrostatic embedding with an atom-by-atom cutoff breaks neutral molecules into artificial
monopoles near the cutoff (measured on solvated alanine dipeptide: hundreds of kJ/mol of error
against GFN2-xTB with the same point charges). Here the cutoff acts on whole molecules (charge
groups): a molecule is included when its closest atom is within ``cutoff`` of the closest region
atom, and all of its charges are scaled by the same smooth switch ``S(d_min)`` (1 below
``cutoff - switch_width``, 0 at ``cutoff``, quintic in between), so a neutral molecule stays neutral,
the energy is continuous as molecules enter or leave, and the forces from the switch come from the
same autograd. Each selected molecule is translated by the lattice vector that brings its atoms to
their minimum image next to the region, exactly as the labelled point charges were placed
(`biomol_nnp.qm.sampling.select_point_charges`), so the model needs no box.

Neighbour search: :func:`embedding_environment` compares every candidate MM atom with every region
atom. :func:`candidate_atoms` first keeps, in one O(A) numpy pass, the molecules with an atom inside
spheres that cover the region (radius grown by the cutoff); only those (a number set by the cutoff
volume, not by the system size) go to :func:`embedding_environment`, which then selects exactly the
same molecules, with the same images and weights, as on all MM atoms. A cell list would not be
cheaper: binning every atom is itself an O(A) pass, and the region is a few compact spheres.

>>> import torch
>>> region = torch.zeros(1, 3, dtype=torch.float64)
>>> water = torch.tensor([[0.5, 0.0, 0.0], [0.55, 0.08, 0.0], [0.55, -0.08, 0.0]], dtype=torch.float64)
>>> positions, charges, kept = embedding_environment(region, water, torch.tensor([-0.8, 0.4, 0.4],
...     dtype=torch.float64), torch.tensor([0, 0, 0]), None, cutoff=1.0, switch_width=0.1)
>>> charges.tolist()
[-0.8, 0.4, 0.4]
"""

import numpy as np
import torch

from biomol_nnp.models.embedding import minimum_image
from biomol_nnp.qm.sampling import minimum_image as minimum_image_np

COVER_RADIUS_NM = 0.4
"""Largest radius of the spheres that cover the region in :func:`covering_spheres`, nm."""


def molecule_switch(distances: torch.Tensor, cutoff: float, switch_width: float) -> torch.Tensor:
    """Quintic switch: 1 below ``cutoff - switch_width``, 0 beyond ``cutoff``, C2-smooth in between."""
    x = ((distances - (cutoff - switch_width)) / switch_width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)


def embedding_environment(
    region_positions: torch.Tensor,
    mm_positions: torch.Tensor,
    mm_charges: torch.Tensor,
    molecule_index: torch.Tensor,
    box: torch.Tensor | None,
    cutoff: float,
    switch_width: float,
    mm_images: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Imaged positions [M', 3] nm, switched charges [M'] e and candidate indices [M'] of the kept atoms.

    Parameters
    ----------
    region_positions
        Region atoms [N, 3] nm, whole (not split across the box).
    mm_positions, mm_charges
        Candidate MM atoms [A, 3] nm and their charges [A] e.
    molecule_index
        Molecule (charge group) of each MM atom [A], integers from 0.
    box
        Periodic box vectors [3, 3] nm (rows, OpenMM reduced form) or None.
    cutoff, switch_width
        Group cutoff and the width of the switch below it, nm.
    mm_images
        Optional [A, 3] nm (with ``box``): each atom at an image near the region (:func:`nearby_candidates`);
        the [A, N] minimum images are then taken only for the pairs outside the reduced cell. Same result.
    """
    with torch.no_grad():  # selection, shifts and weights of the molecules that are fully in or out
        if mm_images is None:
            raw = mm_positions.unsqueeze(1) - region_positions.unsqueeze(0)  # [A, N, 3]
            wrapped = minimum_image(raw, box) if box is not None else raw
            atom_min, nearest = torch.linalg.norm(wrapped, dim=-1).min(dim=1)
            shifts = (wrapped - raw)[torch.arange(len(mm_positions)), nearest]  # a lattice vector per atom
        else:
            atom_min, shifts = _from_images(region_positions.detach(), mm_positions.detach(), mm_images, box)
        molecules = int(molecule_index.max()) + 1 if molecule_index.numel() else 0
        molecule_min = torch.full((molecules,), float("inf"), dtype=atom_min.dtype)
        molecule_min = molecule_min.scatter_reduce(0, molecule_index, atom_min, reduce="amin", include_self=True)
        # all atoms of a molecule take the shift of the molecule's closest atom
        closest_atom = torch.full((molecules,), -1, dtype=torch.long)
        order = torch.argsort(atom_min, descending=True)
        closest_atom[molecule_index[order]] = order  # the last write per molecule is its closest atom
        shifts = shifts[closest_atom[molecule_index]]
        keep = (molecule_min[molecule_index] < cutoff).nonzero().squeeze(1)
    imaged = mm_positions.index_select(0, keep) + shifts.index_select(0, keep)
    kept_molecules = molecule_index.index_select(0, keep)
    # only molecules inside the switching shell need the distance with its gradient
    in_shell = molecule_min[kept_molecules] > cutoff - switch_width
    weights = torch.ones(len(keep), dtype=mm_positions.dtype)
    if bool(in_shell.any()):
        shell = in_shell.nonzero().squeeze(1)
        distances = torch.linalg.norm(
            imaged.index_select(0, shell).unsqueeze(1) - region_positions.unsqueeze(0), dim=-1
        )
        shell_atom_min = distances.min(dim=1).values
        shell_molecules = kept_molecules.index_select(0, shell)
        shell_min = torch.full((molecules,), float("inf"), dtype=shell_atom_min.dtype)
        shell_min = shell_min.scatter_reduce(0, shell_molecules, shell_atom_min, reduce="amin", include_self=True)
        weights = weights.index_put((shell,), molecule_switch(shell_min[shell_molecules], cutoff, switch_width))
    return imaged, mm_charges.index_select(0, keep) * weights, keep


def _from_images(
    region: torch.Tensor, mm_positions: torch.Tensor, mm_images: torch.Tensor, box: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest-region-atom distance [A] and lattice shift [A, 3] of each atom, from images near the region.

    The minimum image of a displacement depends only on its lattice coset and returns the coset's member in the
    reduced cell ``|d_k| <= box[k, k] / 2``; a pair already there needs no rounding, so only the others are imaged.
    """
    if box is None:
        raise ValueError("mm_images needs the periodic box")
    pairs = mm_images.unsqueeze(1) - region.unsqueeze(0)  # [A, N, 3]
    outside = (pairs.abs() > 0.5 * torch.diagonal(box)).any(dim=-1)
    if bool(outside.any()):
        pairs = pairs.clone()
        pairs[outside] = minimum_image(pairs[outside], box)
    atom_min, nearest = torch.linalg.norm(pairs, dim=-1).min(dim=1)
    rows = torch.arange(len(mm_positions))
    return atom_min, pairs[rows, nearest] + region[nearest] - mm_positions


def covering_spheres(region: np.ndarray, radius_nm: float = COVER_RADIUS_NM) -> tuple[np.ndarray, np.ndarray]:
    """Centres [S, 3] nm (region atoms) and radii [S] nm of spheres that together contain every region atom.

    Greedy farthest-point cover: a new centre is the region atom farthest from the existing ones until every
    atom is within ``radius_nm`` of a centre; each radius is then that of its assigned atoms.

    >>> centres, radii = covering_spheres(np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    >>> len(centres), radii.tolist()
    (2, [0.1, 0.0])
    """
    region = np.asarray(region, dtype=np.float64)
    chosen = [0]
    distance = np.linalg.norm(region - region[0], axis=1)
    while distance.max() > radius_nm:
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(region - region[chosen[-1]], axis=1))
    centres = region[chosen]
    to_centres = np.linalg.norm(region[:, None, :] - centres[None, :, :], axis=-1)  # [N, S]
    owner = to_centres.argmin(axis=1)
    radii = np.zeros(len(centres))
    np.maximum.at(radii, owner, to_centres[np.arange(len(region)), owner])
    return centres, radii


def box_width(box: np.ndarray) -> float:
    """Smallest distance between opposite faces of the periodic box [3, 3] nm (rows), nm."""
    volume = abs(float(np.linalg.det(box)))
    faces = np.cross(box[[1, 2, 0]], box[[2, 0, 1]])
    return volume / float(np.linalg.norm(faces, axis=1).max())


def nearby_candidates(
    region: np.ndarray,
    mm_positions: np.ndarray,
    molecule_index: np.ndarray,
    box: np.ndarray | None,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted indices [K] of the MM atoms of every molecule that may have an atom within ``cutoff`` of the region,
    and each one's image [K, 3] nm next to the region's centroid (None without a box).

    A superset of the molecules :func:`embedding_environment` keeps, with all their atoms, so calling it on
    these atoms only (with the images as ``mm_images``) gives the same selection, images and weights.
    Cost: one minimum-image displacement per MM atom (to the region's centroid) plus one distance per atom
    and covering sphere.

    Parameters
    ----------
    region : numpy.ndarray, shape (N, 3)
        Region positions, nm, whole.
    mm_positions : numpy.ndarray, shape (A, 3)
        MM atom positions, nm (may be wrapped atom by atom).
    molecule_index : numpy.ndarray, shape (A,)
        Molecule of each MM atom, integers from 0.
    box : numpy.ndarray, shape (3, 3), or None
        Periodic box vectors (rows, OpenMM reduced form), nm.
    cutoff : float
        Group cutoff, nm.

    Notes
    -----
    Under periodic boundaries the pre-filter is exact when the cutoff plus the region's extent around its
    centroid is below half the smallest box width (:func:`box_width`): an atom then has at most one image
    that close, and it lies in the reduced cell where the minimum image finds it. A larger region keeps, in a
    rectangular box, the atoms whose minimum image (there the shortest of all images) is within the reach of
    the centroid (still exact: an atom beyond it has no image within ``cutoff`` of any region atom; the pairs
    whose image is not the nearest are imaged one by one downstream); in a triclinic box it falls back to all
    atoms. The images are the minimum images relative to the centroid (``mm_images`` of
    :func:`embedding_environment`).
    """
    if len(mm_positions) == 0:
        return np.zeros(0, dtype=np.int64), None
    centroid = region.mean(axis=0)
    centres, radii = covering_spheres(region)
    extent = max(
        float(np.linalg.norm(region - centroid, axis=1).max()),
        float((radii + np.linalg.norm(centres - centroid, axis=1)).max()),
    )
    reach = extent + cutoff + 1e-9
    to_centroid = mm_positions - centroid
    small_box = False
    if box is not None:
        to_centroid = minimum_image_np(to_centroid, box)
        small_box = reach >= 0.5 * box_width(box)
        if small_box and np.count_nonzero(box - np.diag(np.diagonal(box))):  # triclinic: every atom
            return np.arange(len(mm_positions)), centroid + to_centroid
    near = np.flatnonzero(np.einsum("ij,ij->i", to_centroid, to_centroid) < reach * reach)
    if len(centres) > 1 and not small_box:  # keep the atoms near one of the covering spheres
        offsets = to_centroid[near, None, :] + (centroid - centres)[None, :, :]
        inside = (np.einsum("ksj,ksj->ks", offsets, offsets) < (radii + cutoff + 1e-9) ** 2).any(axis=1)
        near = near[inside]
    molecules = np.zeros(int(molecule_index.max()) + 1, dtype=bool)
    molecules[molecule_index[near]] = True
    subset = np.flatnonzero(molecules[molecule_index])
    return subset, (centroid + to_centroid[subset] if box is not None else None)


def candidate_atoms(
    region: np.ndarray,
    mm_positions: np.ndarray,
    molecule_index: np.ndarray,
    box: np.ndarray | None,
    cutoff: float,
) -> np.ndarray:
    """The indices of :func:`nearby_candidates` (same arguments)."""
    return nearby_candidates(region, mm_positions, molecule_index, box, cutoff)[0]
