"""The part every architecture shares: the deployed-model contract around per-atom network outputs.

An architecture subclasses `EnsembleModel` and implements one method, ``atomic_outputs(positions,
species) -> [K, B, N, 3]``: for each of its K members an atomic energy (in units of ``energy_scale``),
a raw charge and a raw polarisability per atom. This class turns them into

- vacuum energies: energy_scale * sum_a e_a + core repulsion + optional explicit long range
  (Coulomb between the predicted charges beyond the network's reach, D3-style dispersion);
- charges: raw charges shifted uniformly so each member's charges sum to the region's total charge;
- polarisabilities: softplus of the raw output, never negative;
- embedding energies in the field of the MM charges (`embedding.py`);

and implements the contract of DESIGN.md (``forward``, ``charges``, ``ensemble_energies``,
``ensemble_mean_std``) plus the training hooks (``species``, ``member_terms``, ``reference_energy``).
Per-member weights live in ``self.members`` (a ModuleList), so members can be trained separately and
merged by copying ``members[k]`` state; everything else is shared buffers.

>>> from biomol_nnp.models.registry import build_model
>>> from biomol_nnp.config import ModelSettings
>>> model = build_model(ModelSettings(architecture="painn"), ensemble_size=2)
>>> isinstance(model, EnsembleModel)
True
"""

import abc

import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.models.descriptors import pair_geometry
from biomol_nnp.models.embedding import EmbeddingKernel
from biomol_nnp.models.long_range import LongRange

POLARIZABILITY_SCALE = 1.0e-5
"""Scale of the softplus polarisability output, e^2 nm^2/(kJ/mol) (about 1e-3 nm^3 of volume)."""

INITIAL_POLARIZABILITY_BIAS = -7.0
"""Initial bias of the polarisability output: softplus(-7) = 9e-4, so alpha starts near 1e-8."""

REPULSION_STRENGTH = 1.0e4
"""Scale of the core repulsion, kJ/mol: the wall energy is this times (r0/r - 1)^2 below the onset r0."""

MAX_ATOMIC_NUMBER = 118


def init_output_layer(layer: torch.nn.Linear) -> None:
    """Start an (energy, charge, polarisability) head near a flat, neutral, weakly polarisable state."""
    torch.nn.init.normal_(layer.weight, std=0.01)
    torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        layer.bias[2] = INITIAL_POLARIZABILITY_BIAS


class EnsembleModel(torch.nn.Module, abc.ABC):
    """Base of every architecture: charges, embedding, repulsion, long range and the deployed-model contract."""

    element_index: torch.Tensor
    self_energies: torch.Tensor
    energy_scale: torch.Tensor
    repulsion_onset: torch.Tensor

    def __init__(self, settings: ModelSettings, architecture: str, cutoff: float) -> None:
        super().__init__()
        elements = sorted(settings.elements)
        self.architecture = architecture
        self.cutoff = cutoff
        self.num_elements = len(elements)
        self.kernel = EmbeddingKernel(len(elements), settings.embedding_width_nm)
        self.long_range = LongRange(settings.long_range, elements, cutoff)
        element_index = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        element_index[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_index", element_index)
        self.register_buffer("self_energies", torch.zeros(len(elements)))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("repulsion_onset", torch.zeros(len(elements), len(elements)))
        self.repulsion_strength = REPULSION_STRENGTH
        self.polarizability_scale = POLARIZABILITY_SCALE

    @abc.abstractmethod
    def atomic_outputs(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-member atomic (energy / energy_scale, raw charge, raw polarisability) [K, B, N, 3]."""

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element indices [..., N] from atomic numbers (0 or less marks padding)."""
        index = self.element_index[atomic_numbers.clamp(0, self.element_index.shape[0] - 1)]
        return torch.where(atomic_numbers > 0, index, torch.full_like(index, -1))

    def member_terms(
        self,
        positions: torch.Tensor,
        species: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched terms of every member.

        Returns vacuum energies without self energies [K, B] kJ/mol, charges [K, B, N] e and
        embedding energies [K, B] kJ/mol.
        """
        real = (species >= 0).to(positions.dtype)
        count = real.sum(-1).clamp(min=1.0)
        outputs = self.atomic_outputs(positions, species) * real.unsqueeze(-1)
        raw = outputs[..., 1]
        shift = (total_charge - raw.sum(-1)) / count
        charges = (raw + shift.unsqueeze(-1)) * real
        vacuum = self.energy_scale * outputs[..., 0].sum(-1) + self.core_repulsion(positions, species)
        vacuum = vacuum + self.long_range(positions, species, charges)
        if mm_positions.shape[1] > 0:
            alpha = self.polarizability_scale * torch.nn.functional.softplus(outputs[..., 2]) * real
            embedding = self.kernel.energies(positions, species, mm_positions, mm_charges, box, charges, alpha)
        else:
            embedding = torch.zeros_like(vacuum)
        return vacuum, charges, embedding

    def core_repulsion(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Short-range wall [B] kJ/mol, zero at every distance seen in training.

        For each element pair the onset r0 sits below the shortest distance in the training data, so the
        wall never changes a fitted energy; it stops the network's untrained short-range region from
        pulling atoms together (a minimiser otherwise finds holes there). E = A sum (r0/r - 1)^2, r < r0.
        """
        with torch.no_grad():  # the wall acts only on pairs inside their onset: find them first, then differentiate
            _, distances, mask = pair_geometry(positions, species)
            index = species.clamp(min=0)
            onset = self.repulsion_onset[index.unsqueeze(2), index.unsqueeze(1)]
            b, i, j = (mask & (distances < onset)).nonzero().unbind(1)
        energy = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
        if b.shape[0] == 0:
            return energy
        r = torch.linalg.norm(positions[b, j] - positions[b, i], dim=-1)
        excess = onset[b, i, j] / r - 1.0
        return energy.index_add(0, b, 0.5 * self.repulsion_strength * excess * excess)

    def reference_energy(self, species: torch.Tensor) -> torch.Tensor:
        """Sum of per-element self energies [B] kJ/mol."""
        per_atom = self.self_energies[species.clamp(min=0)] * (species >= 0).to(self.self_energies.dtype)
        return per_atom.sum(-1)

    def _batched_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = self.self_energies.dtype
        cell = box.to(dtype).reshape(-1, 3)
        return (
            positions.to(dtype).unsqueeze(0),
            self.species(atomic_numbers).unsqueeze(0),
            total_charge.to(dtype).reshape(1),
            mm_positions.to(dtype).reshape(1, -1, 3),
            mm_charges.to(dtype).reshape(1, -1),
            cell,
        )

    @torch.jit.export
    def ensemble_energies(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> torch.Tensor:
        """Energy of each member [K] kJ/mol (vacuum + embedding), for one configuration."""
        pos, species, charge, mm_pos, mm_q, cell = self._batched_inputs(
            positions, atomic_numbers, total_charge, mm_positions, mm_charges, box
        )
        vacuum, _, embedding = self.member_terms(pos, species, charge, mm_pos, mm_q, cell)
        # the (large) reference energy is added in float64 so a float32 model keeps the digits of its energy
        reference = self.reference_energy(species).to(torch.float64)
        return ((vacuum + embedding).to(torch.float64) + reference).squeeze(1)

    @torch.jit.export
    def ensemble_mean_std(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation over members of the energy, kJ/mol."""
        energies = self.ensemble_energies(positions, atomic_numbers, total_charge, mm_positions, mm_charges, box)
        std = energies.std(unbiased=False) if energies.shape[0] > 1 else torch.zeros_like(energies[0])
        return energies.mean(), std

    @torch.jit.export
    def charges(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, total_charge: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom charges [N] e (member mean), summing to total_charge."""
        empty = torch.zeros(0, 3, dtype=positions.dtype)
        pos, species, charge, mm_pos, mm_q, cell = self._batched_inputs(
            positions, atomic_numbers, total_charge, empty, empty[:, 0], empty
        )
        _, charges, _ = self.member_terms(pos, species, charge, mm_pos, mm_q, cell)
        return charges.mean(0).squeeze(0).to(torch.float64)

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        total_charge: torch.Tensor,
        mm_positions: torch.Tensor,
        mm_charges: torch.Tensor,
        box: torch.Tensor,
    ) -> torch.Tensor:
        """Ensemble-mean energy [] kJ/mol of the region in the field of the MM charges."""
        return self.ensemble_energies(positions, atomic_numbers, total_charge, mm_positions, mm_charges, box).mean()
