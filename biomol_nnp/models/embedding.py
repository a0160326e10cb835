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

    def atom_squared_widths(self, species: torch.Tensor) -> torch.Tensor:
        """w^2 [B, N, 2] of region atoms of element index ``species`` [B, N], for positive and negative MM charges."""
        return self.widths[species.clamp(min=0)].pow(2)

    def squared_widths(self, species: torch.Tensor, mm_charges: torch.Tensor) -> torch.Tensor:
        """w_ab^2 [B, N, M] for region atoms of element index ``species`` [B, N] and MM charges [B, M]."""
        squared = self.atom_squared_widths(species)
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
        vectors = positions.unsqueeze(2) - mm_positions.unsqueeze(1)  # [B, N, M, 3]
        if box.shape[0] == 3:
            vectors = minimum_image(vectors, box)
        inverse = torch.rsqrt((vectors * vectors).sum(-1) + self.squared_widths(species, mm_charges))
        # field = -grad_r phi = sum_b q_b (r_a - r_b) / (r^2 + w^2)^(3/2)
        scaled = self.coulomb * mm_charges.unsqueeze(1) * inverse
        return scaled.sum(-1), torch.einsum("bnm,bnmk->bnk", scaled * inverse * inverse, vectors)

    def energies(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
        charges: torch.Tensor,
        polarizabilities: torch.Tensor,
    ) -> torch.Tensor:
        """Embedding energies [K, B] kJ/mol of K members' charges and polarisabilities [K, B, N].

        Float64 without a box (how the OpenMM force calls the model, and float64 training) takes
        `_dense_float64`; otherwise the potential and field come from ``forward`` and autograd differentiates them.
        """
        if box.shape[0] == 3 or positions.dtype != torch.float64:
            potential, field = self.forward(positions, species, mm_positions, mm_charges, box)
            return embedding_energy(charges, polarizabilities, potential, field)
        scaled = self.coulomb * mm_charges
        squared_widths = self.atom_squared_widths(species)
        return self._dense_float64(positions, mm_positions, scaled, squared_widths, charges, polarizabilities)

    def _dense_float64(
        self,
        positions: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        squared_widths: torch.Tensor,
        charges: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """Embedding energies [K, B] with their position gradients written out, float64, no box.

        The [B, N, M] pair work is done once on detached coordinates, mostly in matrix products: r^2 + w^2 from
        augmented coordinates (x, |x|^2, 1, w+^2, w-^2) . (-2y, 1, |y|^2, [Q >= 0], [Q < 0]) relative to the
        first region atom, then with s = 1/sqrt(r^2 + w^2) and d = x_a - y_b (``mm_charges`` Q_b carry k_e;
        ``squared_widths`` [B, N, 2] are w^2 for positive and negative MM charges):

            phi_a = sum_b Q_b s,   F_a = sum_b Q_b s^3 d,   J_a F_a = F_a sum_b Q_b s^3 - 3 sum_b Q_b s^5 (d.F_a) d
            dE/dx_a = -q_a F_a - alpha_a J_a F_a
            dE/dy_b = Q_b sum_a [q_a s^3 d + alpha_a s^3 F_a - 3 alpha_a s^5 (d.F_a) d]

        (J_a = dF_a/dx_a). The energy returned is sum_a q_a phi_a - 1/2 alpha_a |F_a|^2 plus
        g . (x - x.detach()) for both gradients g: zero in value, and its derivative is the gradient, so
        autograd gives exact forces on region and MM atoms without differentiating the pair work. The
        region gradients stay functions of q and alpha, so the derivatives training takes of region forces with
        respect to the weights are exact too. Not available on this path (the other one has them): second
        derivatives with respect to positions, and derivatives of MM-atom forces with respect to the weights.
        """
        region, mm = positions.detach(), mm_positions.detach()
        origin = region[:, :1]
        x, y = region - origin, mm - origin
        q_mm = mm_charges.unsqueeze(-1)  # [B, M, 1]
        negative = (q_mm < 0).to(y.dtype)
        left = torch.cat([x, (x * x).sum(-1, keepdim=True), torch.ones_like(x[..., :1]), squared_widths], -1)
        right = torch.cat(
            [-2.0 * y, torch.ones_like(q_mm), (y * y).sum(-1, keepdim=True), 1.0 - negative, negative], -1
        )
        s2 = 1.0 / (left @ right.transpose(1, 2))  # [B, N, M]
        s1 = torch.sqrt(s2)
        s3 = s1 * s2
        potential = (s1 @ q_mm).squeeze(-1)
        moments = s3 @ torch.cat([q_mm, q_mm * y], -1)  # [B, N, 4]: sum Q s^3, sum Q s^3 y
        field = x * moments[..., :1] - moments[..., 1:]
        energy = embedding_energy(charges, alpha, potential, field)
        if not (positions.requires_grad or mm_positions.requires_grad):
            return energy
        # the gradients below are taken as constants of the MM charges (switched charges carry their own
        # gradient through the energy above) and of the MM positions
        f, q_fixed, total = field.detach(), q_mm.detach(), moments[..., :1].detach()
        # Q_b s^5 (d.F_a), the d.F_a Q_b from one product: (F_a, x_a.F_a) . (-Q_b y_b, Q_b)
        projected = torch.cat([f, (x * f).sum(-1, keepdim=True)], -1)
        third = s3 * s2 * (projected @ torch.cat([-q_fixed * y, q_fixed], -1).transpose(1, 2))
        if positions.requires_grad:
            sums = third @ torch.cat([torch.ones_like(q_fixed), y], -1)  # [B, N, 4]: sum_b third, sum_b third y_b
            field_gradient = f * total - 3.0 * (x * sums[..., :1] - sums[..., 1:])  # J_a F_a
            gradient = -(charges.unsqueeze(-1) * f + alpha.unsqueeze(-1) * field_gradient)  # [K, B, N, 3]
            energy = energy + (gradient * (positions - region)).sum((-1, -2))
        if mm_positions.requires_grad:
            # detached charges: no use differentiates forces on MM atoms with respect to the weights
            gradient_mm = self._mm_gradient(x, y, s3, third, q_fixed, f, charges.detach(), alpha.detach())
            energy = energy + (gradient_mm * (mm_positions - mm)).sum((-1, -2))
        return energy

    def _mm_gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        s3: torch.Tensor,
        third: torch.Tensor,
        q_mm: torch.Tensor,
        field: torch.Tensor,
        charges: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """dE/dy_b [K, B, M, 3] of `_dense_float64`, all members in two matrix products over the pairs."""
        q = charges.permute(1, 2, 0).unsqueeze(-1)  # [B, N, K, 1]
        a = alpha.permute(1, 2, 0).unsqueeze(-1)
        b, n, k = q.shape[0], q.shape[1], q.shape[2]
        xs = x.unsqueeze(2)  # [B, N, 1, 3]
        # sum_a s^3 [q_a x_a, q_a, alpha_a F_a] and sum_a (Q s^5 d.F) [alpha_a x_a, alpha_a]
        first = torch.cat([q * xs, q, a * field.unsqueeze(2)], -1).reshape(b, n, -1)
        second = torch.cat([a * xs, a], -1).reshape(b, n, -1)
        one = (s3.transpose(1, 2) @ first).reshape(b, -1, k, 7)  # [B, M, K, 7]
        two = (third.transpose(1, 2) @ second).reshape(b, -1, k, 4)
        ys = y.unsqueeze(2)  # [B, M, 1, 3]
        gradient = q_mm.unsqueeze(-1) * (one[..., :3] - ys * one[..., 3:4] + one[..., 4:]) - 3.0 * (
            two[..., :3] - ys * two[..., 3:]
        )
        return gradient.permute(2, 0, 1, 3)


def embedding_energy(
    charges: torch.Tensor, polarizabilities: torch.Tensor, potential: torch.Tensor, field: torch.Tensor
) -> torch.Tensor:
    """Embedding energy [..., B] kJ/mol from charges [..., B, N] e and polarisabilities [..., B, N] (e.g. one row per
    member) in the potential [B, N] and field [B, N, 3] of the MM charges."""
    first_order = (charges * potential).sum(-1)
    induced = 0.5 * (polarizabilities * (field * field).sum(-1)).sum(-1)
    return first_order - induced
