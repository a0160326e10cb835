"""Electrostatic embedding energy of an ML region in the field of MM point charges.

E_emb = k_e sum_a q_a phi_B(r_a) - 1/2 sum_a alpha_a |E_B(r_a)|^2, where phi_B and E_B are the
potential and field of the MM charges, computed with

- a damped Coulomb kernel erf(r/a)/r so a close MM charge cannot blow up the energy,
- minimum-image displacements when a periodic box is given.

Which MM charges enter, and with what switching weight, is decided per molecule by
`environment.py` (a group cutoff keeps neutral molecules neutral).

Units: nm, e, kJ/mol; alpha in e^2 nm^2 / (kJ/mol), so alpha |E|^2 is in kJ/mol.
All tensors are batched: region [B, N, 3], MM [B, M, 3]; padding MM charges are zero.

>>> import torch
>>> kernel = EmbeddingKernel(damping=0.03)
>>> potential, field = kernel(torch.zeros(1, 1, 3, dtype=torch.float64),
...     torch.tensor([[[0.5, 0.0, 0.0]]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64),
...     torch.zeros(0, 3, dtype=torch.float64))
>>> round(float(potential), 3)  # k_e * 1 e / 0.5 nm
277.871
"""

import math

import torch

from biomol_nnp.units import ELECTROSTATIC_CONSTANT


def minimum_image(displacements: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Wrap displacements [..., 3] into the minimum image of a triclinic box [3, 3] in OpenMM's reduced form."""
    out = displacements
    for axis in (2, 1, 0):
        vector = box[axis]
        shift = torch.round(out[..., axis] / vector[axis])
        out = out - shift.unsqueeze(-1) * vector
    return out


DAMPING_RANGE = 7.0
"""Pairs farther than this many damping lengths use plain 1/r: erfc(7) = 4e-23 and the Gaussian term of the
field is 5e-21 relative, both below double round-off."""


class EmbeddingKernel(torch.nn.Module):
    """Potential [B, N] (kJ/mol/e) and field [B, N, 3] (kJ/mol/nm/e) of MM charges at region atoms.

    Every given charge contributes (no cutoff here: callers pass whole molecules within the group
    cutoff with switched charges, see `environment.py`); ``box`` of shape [3, 3] applies the minimum
    image, an empty box [0, 3] means explicit coordinates.
    """

    def __init__(self, damping: float) -> None:
        super().__init__()
        self.damping = damping
        self.coulomb = ELECTROSTATIC_CONSTANT
        self.short_range = DAMPING_RANGE * damping

    def forward(
        self, positions: torch.Tensor, mm_positions: torch.Tensor, mm_charges: torch.Tensor, box: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        charges = self.coulomb * mm_charges.unsqueeze(1)  # [B, 1, M]
        if box.shape[0] == 3 or positions.dtype != torch.float64:
            vectors = positions.unsqueeze(2) - mm_positions.unsqueeze(1)  # [B, N, M, 3]
            if box.shape[0] == 3:
                vectors = minimum_image(vectors, box)
            squared = (vectors * vectors).sum(-1)
            inverse = torch.rsqrt(squared.clamp(min=1e-12))
            # plain Coulomb for every pair; field = -grad_r phi = sum_b q_b (r_a - r_b) / r^3
            scaled = charges * inverse
            potential = scaled.sum(-1)
            field = torch.einsum("bnm,bnmk->bnk", scaled * inverse * inverse, vectors)
            close = (squared.detach() < self.short_range * self.short_range).nonzero()
        else:
            potential, field, close = self._dense_float64(positions, mm_positions, charges.squeeze(1))
        return self._damping_correction(positions, mm_positions, charges, close, potential, field, box)

    def _dense_float64(
        self, positions: torch.Tensor, mm_positions: torch.Tensor, charges: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Plain-Coulomb potential [B, N] and field [B, N, 3] and the close pairs [C, 3], float64, no box.

        Few passes over the [B, N, M] pairs, each cheap to differentiate: the squared distances are one matrix
        product of augmented coordinates (x, |x|^2, 1) . (-2y, 1, |y|^2), relative to the first region atom so
        the |r|^2 terms stay small against r_ab^2; the potential is 1/r times the charges and the field is
        x sum_b q_b / r^3 - sum_b q_b y_b / r^3, both matrix products. No [B, N, M, 3] tensor is formed.
        """
        origin = positions[:, :1]
        x, y = positions - origin, mm_positions - origin
        left = torch.cat([x, (x * x).sum(-1, keepdim=True), torch.ones_like(x[..., :1])], -1)
        right = torch.cat([-2.0 * y, torch.ones_like(y[..., :1]), (y * y).sum(-1, keepdim=True)], -1)
        squared = left @ right.transpose(1, 2)
        plain = squared.detach()
        nearest = plain.amin(1)  # [B, M]: MM atoms near no region atom need no damping (most of them)
        b, m = (nearest < self.short_range * self.short_range).nonzero().unbind(1)
        candidate, a = (plain[b, :, m] < self.short_range * self.short_range).nonzero().unbind(1)
        close = torch.stack([b[candidate], a, m[candidate]], dim=1)
        if bool((nearest < 1e-12).any()):  # coincident atoms: clamp as the other path does
            squared = squared + (plain.clamp(min=1e-12) - plain)
        inverse = torch.rsqrt(squared)
        charges = charges.unsqueeze(-1)  # [B, M, 1]
        potential = (inverse @ charges).squeeze(-1)
        moments = inverse.pow(3) @ torch.cat([charges, charges * y], -1)  # [B, N, 4]: sum q/r^3, sum q y/r^3
        return potential, x * moments[..., :1] - moments[..., 1:], close

    def _damping_correction(
        self,
        positions: torch.Tensor,
        mm_positions: torch.Tensor,
        charges: torch.Tensor,
        close: torch.Tensor,
        potential: torch.Tensor,
        field: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """erf damping for the ``close`` pairs [C, 3] (b, a, m), where it differs from 1/r above round-off."""
        if close.shape[0] == 0:
            return potential, field
        b, a, m = close[:, 0], close[:, 1], close[:, 2]
        vectors = positions[b, a] - mm_positions[b, m]
        if box.shape[0] == 3:
            vectors = minimum_image(vectors, box)
        r = torch.linalg.norm(vectors, dim=-1).clamp(min=1e-6)
        q = charges[b, 0, m]
        erfc = torch.erfc(r / self.damping) / r
        slope = (2.0 / math.sqrt(math.pi) / self.damping) * torch.exp(-((r / self.damping) ** 2)) + erfc
        row = b * positions.shape[1] + a
        flat_potential = potential.reshape(-1).index_add(0, row, -q * erfc)
        correction = -(q * slope / (r * r)).unsqueeze(-1) * vectors
        flat_field = field.reshape(-1, 3).index_add(0, row, correction)
        return flat_potential.reshape(potential.shape), flat_field.reshape(field.shape)


def embedding_energy(
    charges: torch.Tensor, polarizabilities: torch.Tensor, potential: torch.Tensor, field: torch.Tensor
) -> torch.Tensor:
    """Embedding energy [B] kJ/mol from charges [B, N] e, polarisabilities [B, N], potential [B, N], field [B, N, 3]."""
    first_order = (charges * potential).sum(-1)
    induced = 0.5 * (polarizabilities * (field * field).sum(-1)).sum(-1)
    return first_order - induced
