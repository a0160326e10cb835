"""ANI-style atomic environment descriptors (Behler-Parrinello symmetry functions).

Radial terms count neighbours of each element in Gaussian shells; angular terms count
neighbour pairs of each element pair by angle and mean distance. Both are multiplied by a
cosine cutoff that goes smoothly to zero (with zero slope) at the cutoff, so energies and
forces are continuous when atoms enter or leave an environment. The descriptors are invariant
to translation, rotation and permutation of same-element atoms by construction.

Tensors are batched: positions [B, N, 3] nm and element indices [B, N] (index into the model's
element list, -1 for padding atoms, which neither have nor contribute features).

>>> import torch
>>> descriptor = SymmetryFunctions(num_elements=4)
>>> positions = torch.rand(1, 5, 3) * 0.3
>>> species = torch.tensor([[0, 1, 1, 2, 3]])
>>> descriptor(positions, species).shape
torch.Size([1, 5, 384])
"""

import math

import torch

ANGLE_COSINE_SCALE = 0.95
"""cos(theta) is scaled by this factor so acos has a finite derivative at 0 and pi (as in ANI)."""


EXP_ARGUMENT_LIMIT = 80.0
"""Gaussians exp(-x) are evaluated with x clamped to this value (exp(-80) = 1.8e-35, below the round-off of
any sum they enter): libm's exp takes a slow path (10-100x) for arguments that underflow."""


def gaussian(exponent: torch.Tensor, limit: float = 80.0) -> torch.Tensor:
    """exp(-x) for x >= 0 with x clamped at ``limit`` (`EXP_ARGUMENT_LIMIT`; fast and, to round-off, exact)."""
    return torch.exp(-exponent.clamp(max=limit))


def cosine_cutoff(distances: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 cos(pi r / r_c) + 0.5 inside the cutoff, 0 outside; smooth to first order at r_c."""
    inside = distances < cutoff
    value = 0.5 * torch.cos(distances * (math.pi / cutoff)) + 0.5
    return torch.where(inside, value, torch.zeros_like(value))


def pair_geometry(positions: torch.Tensor, species: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Displacements r_j - r_i [B, N, N, 3], distances [B, N, N] and the mask of real distinct pairs [B, N, N].

    Masked entries (padding, the diagonal) get a displacement of (1, 1, 1) nm so the norm stays differentiable.
    """
    vectors = positions.unsqueeze(1) - positions.unsqueeze(2)
    real = species >= 0
    n = positions.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=positions.device).unsqueeze(0)
    mask = real.unsqueeze(1) & real.unsqueeze(2) & ~eye
    safe = torch.where(mask.unsqueeze(-1), vectors, torch.ones_like(vectors))
    return safe, torch.linalg.norm(safe, dim=-1), mask


class SymmetryFunctions(torch.nn.Module):
    """Radial and angular symmetry functions resolved by neighbour element.

    Parameters
    ----------
    num_elements
        Number of elements S the model covers.
    radial_cutoff, angular_cutoff
        Cutoffs, nm.
    radial_shifts, angular_shifts
        Numbers of Gaussian centres, spread evenly from 0.08 nm to just below the cutoff.
    radial_eta, angular_eta
        Gaussian width parameters, 1/nm^2.
    angular_sections
        Number of angle centres theta_s in [0, pi).
    zeta
        Angular resolution exponent.
    """

    radial_centres: torch.Tensor
    angular_centres: torch.Tensor
    angle_centres: torch.Tensor
    pair_lookup: torch.Tensor

    def __init__(
        self,
        num_elements: int,
        radial_cutoff: float = 0.52,
        angular_cutoff: float = 0.35,
        radial_shifts: int = 16,
        radial_eta: float = 1600.0,
        angular_shifts: int = 4,
        angular_sections: int = 8,
        angular_eta: float = 800.0,
        zeta: float = 32.0,
    ) -> None:
        super().__init__()
        self.num_elements = num_elements
        self.radial_cutoff = radial_cutoff
        self.angular_cutoff = angular_cutoff
        self.radial_eta = radial_eta
        self.angular_eta = angular_eta
        self.zeta = zeta
        self.cosine_scale = ANGLE_COSINE_SCALE
        start = 0.08
        self.register_buffer("radial_centres", torch.linspace(start, radial_cutoff, radial_shifts + 1)[:-1])
        self.register_buffer("angular_centres", torch.linspace(start, angular_cutoff, angular_shifts + 1)[:-1])
        sections = torch.arange(angular_sections, dtype=torch.float32) + 0.5
        self.register_buffer("angle_centres", sections * (math.pi / angular_sections))
        pairs = torch.triu_indices(num_elements, num_elements)
        lookup = torch.zeros(num_elements, num_elements, dtype=torch.long)
        lookup[pairs[0], pairs[1]] = torch.arange(pairs.shape[1])
        lookup[pairs[1], pairs[0]] = torch.arange(pairs.shape[1])
        self.register_buffer("pair_lookup", lookup)
        self.num_pairs = int(pairs.shape[1])
        self.radial_size = num_elements * radial_shifts
        self.angular_size = self.num_pairs * angular_shifts * angular_sections
        self.size = self.radial_size + self.angular_size

    def forward(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Descriptors [B, N, size] of every atom; rows of padding atoms are zero."""
        real = species >= 0
        safe, distances, pair_mask = pair_geometry(positions, species)  # [B, i, j, 3] = r_j - r_i
        mask = pair_mask.to(positions.dtype)
        radial = self._radial(distances, pair_mask, species)
        angular = self._angular(safe, distances, mask, species)
        features = torch.cat([radial, angular], dim=-1)
        return features * real.unsqueeze(-1).to(positions.dtype)

    def _radial(self, distances: torch.Tensor, mask: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Radial terms [B, N, S * R], summed over the pairs inside the cutoff only (the others are exactly zero)."""
        batch, n = distances.shape[0], distances.shape[1]
        b, i, j = ((distances.detach() < self.radial_cutoff) & mask).nonzero().unbind(1)
        # index_select (backward: index_add) is much cheaper than advanced indexing
        r = distances.reshape(-1).index_select(0, (b * n + i) * n + j)
        shells = gaussian(self.radial_eta * (r.unsqueeze(-1) - self.radial_centres) ** 2)
        terms = 0.25 * shells * cosine_cutoff(r, self.radial_cutoff).unsqueeze(-1)  # [P, R]
        row = (b * n + i) * self.num_elements + species[b, j]
        out = torch.zeros(batch * n * self.num_elements, terms.shape[1], dtype=distances.dtype, device=distances.device)
        return out.index_add(0, row, terms).reshape(batch, n, self.radial_size)

    def _angular(
        self, vectors: torch.Tensor, distances: torch.Tensor, mask: torch.Tensor, species: torch.Tensor
    ) -> torch.Tensor:
        batch, n = distances.shape[0], distances.shape[1]
        # neighbour pairs (b, i, j) inside the angular cutoff, then triplets sharing (b, i)
        close = (distances.detach() < self.angular_cutoff) & (mask > 0)
        pairs = close.nonzero()
        centre = pairs[:, 0] * n + pairs[:, 1]
        # each unordered neighbour pair (j, k) once (first < second); the terms are symmetric in j and k
        same_centre = centre.unsqueeze(0) == centre.unsqueeze(1)
        first, second = torch.triu(same_centre, diagonal=1).nonzero().unbind(1)
        b, i = pairs[first, 0], pairs[first, 1]
        j, k = pairs[first, 2], pairs[second, 2]
        # index_select (backward: index_add) is much cheaper than advanced indexing
        flat_ij, flat_ik = (b * n + i) * n + j, (b * n + i) * n + k
        flat_distances, flat_vectors = distances.reshape(-1), vectors.reshape(-1, 3)
        r_ij = flat_distances.index_select(0, flat_ij)
        r_ik = flat_distances.index_select(0, flat_ik)
        dot = (flat_vectors.index_select(0, flat_ij) * flat_vectors.index_select(0, flat_ik)).sum(-1)
        cosines = self.cosine_scale * dot / (r_ij * r_ik)
        angles = torch.acos(cosines)
        # 2 * 0.5^zeta (in angle_part) over unordered pairs: ANI's 2^(1-zeta) sum_{j<k}
        weight = 2.0 * cosine_cutoff(r_ij, self.angular_cutoff) * cosine_cutoff(r_ik, self.angular_cutoff)
        angle_part = ((1.0 + torch.cos(angles.unsqueeze(-1) - self.angle_centres)) * 0.5) ** self.zeta
        mean_distance = 0.5 * (r_ij + r_ik)
        radial_part = gaussian(self.angular_eta * (mean_distance.unsqueeze(-1) - self.angular_centres) ** 2)
        terms = (weight.unsqueeze(-1) * radial_part).unsqueeze(-1) * angle_part.unsqueeze(-2)
        pair_type = self.pair_lookup[species[b, j], species[b, k]]
        row = (b * n + i) * self.num_pairs + pair_type
        width = terms.shape[1] * terms.shape[2]
        out = torch.zeros(batch * n * self.num_pairs, width, dtype=distances.dtype, device=distances.device)
        out = out.index_add(0, row, terms.reshape(-1, width))
        return out.reshape(batch, n, self.angular_size)
