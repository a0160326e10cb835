"""Explicit long-range energies inside the ML region, blended with the network.

Both terms are optional (`LongRangeSettings`) and part of each member's vacuum energy, so the network is
trained on the remainder E_QM - E_long and nothing is counted twice.

Coulomb between the predicted charges
    E_C = k_e sum_{i<j} q_i q_j S(r_ij) / r_ij, with S a C2 smoothstep that is 0 below r_c - w and 1 beyond
    the network cutoff r_c: at short range the network alone describes the pair (it sees it), beyond its
    cutoff the explicit Coulomb alone does, and in the switch the network learns what S leaves over.
    Charges are each member's own (constrained to the total charge), so E_C differs between members.

D3-style dispersion with Becke-Johnson damping
    E_D = -sum_{i<j} [s6 C6_ij / (r^6 + f_ij^6) + s8 C8_ij / (r^8 + f_ij^8)], f_ij = a1 R0_ij + a2,
    C8_ij = 3 C6_ij Q_i Q_j and R0_ij = sqrt(C8_ij / C6_ij) (Grimme, Antony, Ehrlich, Krieg, JCP 132,
    154104 (2010); Grimme, Ehrlich, Goerigk, JCC 32, 1456 (2011)). Unlike full D3 the C6 do not depend on
    the coordination number: `C6_TABLE` holds D3's reference C6 interpolated (Gaussian weights, k3 = 4) at
    a typical coordination number of each element (`TYPICAL_COORDINATION`), from the D3 reference table that
    torchani ships (``torchani/resources/c6.h5``); `tests/unit/test_model_registry.py` recomputes it.
    The damping defaults are GFN2-xTB's (a1 = 0.52, a2 = 5 bohr, s8 = 2.7), the default labels' method.

>>> import torch
>>> from biomol_nnp.config import LongRangeSettings
>>> term = LongRange(LongRangeSettings(dispersion=True), elements=[1, 8], cutoff=0.5)
>>> positions = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
>>> energy = term.to(torch.float64)(positions, torch.tensor([[1, 1]]), torch.zeros(1, 1, 2, dtype=torch.float64))
>>> bool(energy < 0)
True
"""

import torch

from biomol_nnp.config import LongRangeSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.models.descriptors import pair_geometry
from biomol_nnp.units import BOHR_TO_NM, ELECTROSTATIC_CONSTANT, HARTREE_TO_KJ_PER_MOL

TYPICAL_COORDINATION = {1: 1.0, 6: 3.0, 7: 3.0, 8: 1.5, 16: 2.0}
"""Coordination number at which each element's D3 C6 is taken (H 1, sp2/sp3-average C and N, O 1.5, S 2)."""

C6_TABLE = {
    (1, 1): 3.091, (1, 6): 8.894, (1, 7): 6.860, (1, 8): 5.756, (1, 16): 19.689,
    (6, 6): 25.672, (6, 7): 19.880, (6, 8): 16.722, (6, 16): 56.677,
    (7, 7): 15.659, (7, 8): 13.348, (7, 16): 43.443,
    (8, 8): 11.502, (8, 16): 36.246,
    (16, 16): 125.900,
}  # fmt: skip
"""D3 C6 coefficients, hartree bohr^6, at `TYPICAL_COORDINATION` (see the module docstring)."""

SQRT_R4_R2 = {1: 2.0073490, 6: 3.1049283, 7: 2.7117524, 8: 2.5936167, 16: 4.0410891}
"""D3's Q_i = sqrt(0.5 <r^4>/<r^2> sqrt(Z)) per element (dimensionless), for C8 = 3 C6 Q_i Q_j."""


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    """C2 step 0 -> 1 on [0, 1] (t clamped): 6t^5 - 15t^4 + 10t^3, zero first and second derivative at the ends."""
    t = t.clamp(0.0, 1.0)
    return t * t * t * (10.0 + t * (-15.0 + 6.0 * t))


def dispersion_tables(elements: list[int], settings: LongRangeSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """C6 [S, S] kJ/mol nm^6, C8 [S, S] kJ/mol nm^8 for the model's elements (sorted)."""
    missing = [z for z in elements if z not in SQRT_R4_R2]
    if missing:
        raise ConfigError(
            f"long_range.dispersion covers elements {sorted(SQRT_R4_R2)}, not {missing}; "
            "set long_range.dispersion: false for this element set"
        )
    size = len(elements)
    c6 = torch.zeros(size, size, dtype=torch.float64)
    c8 = torch.zeros(size, size, dtype=torch.float64)
    for a, za in enumerate(elements):
        for b, zb in enumerate(elements):
            value = C6_TABLE[(min(za, zb), max(za, zb))] * HARTREE_TO_KJ_PER_MOL * BOHR_TO_NM**6
            c6[a, b] = value
            c8[a, b] = 3.0 * value * SQRT_R4_R2[za] * SQRT_R4_R2[zb] * BOHR_TO_NM**2
    return c6, c8


class LongRange(torch.nn.Module):
    """Optional explicit Coulomb and dispersion energies [K, B] kJ/mol of the region (see the module docstring)."""

    c6: torch.Tensor
    c8: torch.Tensor
    damping: torch.Tensor

    def __init__(self, settings: LongRangeSettings, elements: list[int], cutoff: float) -> None:
        super().__init__()
        self.use_coulomb = settings.coulomb
        self.use_dispersion = settings.dispersion
        self.switch_on = cutoff - settings.coulomb_switch_width_nm
        self.switch_width = settings.coulomb_switch_width_nm
        self.coulomb = ELECTROSTATIC_CONSTANT
        self.s8 = settings.dispersion_s8
        elements = sorted(elements)
        size = len(elements)
        if settings.dispersion:
            c6, c8 = dispersion_tables(elements, settings)
        else:
            c6, c8 = torch.zeros(size, size, dtype=torch.float64), torch.ones(size, size, dtype=torch.float64)
        radius = torch.sqrt(c8 / c6.clamp(min=1e-30)) if settings.dispersion else torch.zeros(size, size)
        self.register_buffer("c6", c6.float())
        self.register_buffer("c8", c8.float())
        self.register_buffer("damping", (settings.dispersion_a1 * radius + settings.dispersion_a2_nm).float())

    def forward(self, positions: torch.Tensor, species: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        """Energies [K, B] from positions [B, N, 3] nm, species [B, N] and each member's charges [K, B, N] e."""
        energy = torch.zeros(charges.shape[0], charges.shape[1], dtype=positions.dtype, device=positions.device)
        if not (self.use_coulomb or self.use_dispersion):
            return energy
        _, distances, mask = pair_geometry(positions, species)
        weight = mask.to(positions.dtype) * 0.5  # each pair appears twice in [i, j]
        if self.use_coulomb:
            switch = smoothstep((distances - self.switch_on) / self.switch_width) * weight / distances
            products = charges.unsqueeze(-1) * charges.unsqueeze(-2)  # [K, B, N, N]
            energy = energy + self.coulomb * (products * switch).sum((-1, -2))
        if self.use_dispersion:
            energy = energy + self.dispersion(distances, species, weight).unsqueeze(0)
        return energy

    def dispersion(self, distances: torch.Tensor, species: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Becke-Johnson damped two-body dispersion [B] kJ/mol."""
        index = species.clamp(min=0)
        first, second = index.unsqueeze(2), index.unsqueeze(1)
        c6, c8, damping = self.c6[first, second], self.c8[first, second], self.damping[first, second]
        r2 = distances * distances
        r6, f6 = r2 * r2 * r2, damping**6
        terms = c6 / (r6 + f6) + self.s8 * c8 / (r6 * r2 + f6 * damping * damping)
        return -(terms * weight).sum((-1, -2))
