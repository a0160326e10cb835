"""Electrostatic embedding energy of an ML region in the field of MM point charges.

E_emb = k_e sum_a q_a phi_B(r_a) - 1/2 sum_a alpha_a |E_B(r_a)|^2, where phi_B and E_B are the
potential and field of the MM charges, computed with

- a softened Coulomb kernel 1/sqrt(r^2 + w^2) (Klopman-Ohno form, as GFN2-xTB couples its atomic charges to
  external point charges), so a close MM charge cannot blow up the energy. The width w is per region element
  and per sign of the MM charge (a cation-like and an anion-like MM site are seen with different widths, as
  xTB's point-charge hardness depends on the MM element); ``widths`` [E, 2] is a buffer fitted to the
  labels before training (`biomol_nnp.train.initialise.fit_embedding_widths`);
- minimum-image displacements when a periodic box is given.

Which MM charges enter, and with what switching weight, is decided per molecule by
`environment.py` (a group cutoff keeps neutral molecules neutral).

Units: nm, e, kJ/mol; alpha in e^2 nm^2 / (kJ/mol), so alpha |E|^2 is in kJ/mol.
All tensors are batched: region [B, N, 3], MM [B, M, 3]; padding MM charges are zero.

>>> import torch
>>> kernel = EmbeddingKernel(num_elements=1, width=0.1).double()
>>> potential, field = kernel(torch.zeros(1, 1, 3, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.long),
...     torch.tensor([[[0.5, 0.0, 0.0]]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64),
...     torch.zeros(0, 3, dtype=torch.float64))
>>> round(float(potential), 3)  # k_e * 1 e / sqrt(0.5^2 + 0.1^2) nm
272.485
"""

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


class EmbeddingKernel(torch.nn.Module):
    """Potential [B, N] (kJ/mol/e) and field [B, N, 3] (kJ/mol/nm/e) of MM charges at region atoms.

    phi_a = k_e sum_b q_b / sqrt(r_ab^2 + w_ab^2) and E_a = -grad_a phi_a, with w_ab = ``widths``[element of a,
    sign of q_b]. Every given charge contributes (no cutoff here: callers pass whole molecules within the group
    cutoff with switched charges, see `environment.py`); ``box`` of shape [3, 3] applies the minimum image, an
    empty box [0, 3] means explicit coordinates.
    """

    widths: torch.Tensor

    def __init__(self, num_elements: int, width: float) -> None:
        super().__init__()
        self.coulomb = ELECTROSTATIC_CONSTANT
        self.register_buffer("widths", torch.full((num_elements, 2), width))

    def squared_widths(self, species: torch.Tensor, mm_charges: torch.Tensor) -> torch.Tensor:
        """w_ab^2 [B, N, M] for region atoms of element index ``species`` [B, N] and MM charges [B, M]."""
        squared = self.widths[species.clamp(min=0)].pow(2)  # [B, N, 2]
        negative = (mm_charges < 0).unsqueeze(1)  # [B, 1, M]
        return torch.where(negative, squared[..., 1:2], squared[..., 0:1])  # columns: positive (or zero), negative

    def forward(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        softening = self.squared_widths(species, mm_charges)
        charges = self.coulomb * mm_charges.unsqueeze(1)  # [B, 1, M]
        if box.shape[0] == 3 or positions.dtype != torch.float64:
            vectors = positions.unsqueeze(2) - mm_positions.unsqueeze(1)  # [B, N, M, 3]
            if box.shape[0] == 3:
                vectors = minimum_image(vectors, box)
            inverse = torch.rsqrt((vectors * vectors).sum(-1) + softening)
            # field = -grad_r phi = sum_b q_b (r_a - r_b) / (r^2 + w^2)^(3/2)
            scaled = charges * inverse
            return scaled.sum(-1), torch.einsum("bnm,bnmk->bnk", scaled * inverse * inverse, vectors)
        return self._dense_float64(positions, mm_positions, charges.squeeze(1), softening)

    def _dense_float64(
        self, positions: torch.Tensor, mm_positions: torch.Tensor, charges: torch.Tensor, softening: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Potential [B, N] and field [B, N, 3], float64, no box, in few passes over the [B, N, M] pairs.

        Each pass is cheap to differentiate: the squared distances are one matrix product of augmented
        coordinates (x, |x|^2, 1) . (-2y, 1, |y|^2), relative to the first region atom so the |r|^2 terms stay
        small against r_ab^2; the potential is the inverse softened distance times the charges and the field is
        x sum_b q_b s_ab^3 - sum_b q_b y_b s_ab^3 (s = 1/sqrt(r^2 + w^2)), both matrix products. No [B, N, M, 3]
        tensor is formed.
        """
        origin = positions[:, :1]
        x, y = positions - origin, mm_positions - origin
        left = torch.cat([x, (x * x).sum(-1, keepdim=True), torch.ones_like(x[..., :1])], -1)
        right = torch.cat([-2.0 * y, torch.ones_like(y[..., :1]), (y * y).sum(-1, keepdim=True)], -1)
        inverse = torch.rsqrt(left @ right.transpose(1, 2) + softening)
        charges = charges.unsqueeze(-1)  # [B, M, 1]
        potential = (inverse @ charges).squeeze(-1)
        moments = inverse.pow(3) @ torch.cat([charges, charges * y], -1)  # [B, N, 4]: sum q s^3, sum q y s^3
        return potential, x * moments[..., :1] - moments[..., 1:]


def embedding_energy(
    charges: torch.Tensor, polarizabilities: torch.Tensor, potential: torch.Tensor, field: torch.Tensor
) -> torch.Tensor:
    """Embedding energy [B] kJ/mol from charges [B, N] e, polarisabilities [B, N], potential [B, N], field [B, N, 3]."""
    first_order = (charges * potential).sum(-1)
    induced = 0.5 * (polarizabilities * (field * field).sum(-1)).sum(-1)
    return first_order - induced
