"""ANI-style NNP ensemble with a charge head and electrostatic embedding.

Each ensemble member is a set of per-element networks that map an atom's symmetry-function
descriptor to three numbers: an atomic energy, a raw charge and a raw polarisability. The raw
charges are shifted uniformly so they sum to the region's total charge; polarisabilities pass a
softplus so they are never negative. All members share one descriptor computation.

E_member = sum_a (e_a + E_self[Z_a]) + E_emb(q, alpha; MM charges), see `embedding.py`.

>>> from biomol_nnp.config import ModelSettings
>>> ensemble = build_ensemble(ModelSettings(), ensemble_size=3)
>>> scripted = torch.jit.script(ensemble)  # follows the deployed-model contract
"""

import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.models.descriptors import SymmetryFunctions
from biomol_nnp.models.embedding import EmbeddingKernel, embedding_energy

POLARIZABILITY_SCALE = 1.0e-5
"""Scale of the softplus polarisability output, e^2 nm^2/(kJ/mol) (about 1e-3 nm^3 of volume)."""

INITIAL_POLARIZABILITY_BIAS = -7.0
"""Initial bias of the polarisability output: softplus(-7) = 9e-4, so alpha starts near 1e-8."""

REPULSION_STRENGTH = 1.0e4
"""Scale of the core repulsion, kJ/mol: the wall energy is this times (r0/r - 1)^2 below the onset r0."""

MAX_ATOMIC_NUMBER = 118


def element_network(inputs: int, hidden: list[int], outputs: int) -> torch.nn.Sequential:
    """A multilayer perceptron with smooth CELU activations (no kinks, so forces are continuous)."""
    layers: list[torch.nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [torch.nn.Linear(width, size), torch.nn.CELU(alpha=0.1)]
        width = size
    layers.append(torch.nn.Linear(width, outputs))
    return torch.nn.Sequential(*layers)


class ElementNetworks(torch.nn.Module):
    """One network per element: descriptors [B, N, F] -> (energy, raw charge, raw polarisability) [B, N, 3]."""

    def __init__(self, num_elements: int, inputs: int, hidden: list[int]) -> None:
        super().__init__()
        networks = [element_network(inputs, hidden, 3) for _ in range(num_elements)]
        for network in networks:
            last = network[-1]
            assert isinstance(last, torch.nn.Linear)
            # start near a flat, neutral, weakly polarisable region so early MD cannot blow up
            torch.nn.init.normal_(last.weight, std=0.01)
            torch.nn.init.zeros_(last.bias)
            with torch.no_grad():
                last.bias[2] = INITIAL_POLARIZABILITY_BIAS
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        flat_features = features.reshape(-1, features.shape[-1])
        flat_species = species.reshape(-1)
        out = torch.zeros(flat_features.shape[0], 3, dtype=features.dtype, device=features.device)
        for index, network in enumerate(self.networks):
            rows = (flat_species == index).nonzero().squeeze(1)
            if rows.numel() > 0:
                out = out.index_copy(0, rows, network(flat_features.index_select(0, rows)))
        return out.reshape(species.shape[0], species.shape[1], 3)


class NNPEnsemble(torch.nn.Module):
    """Ensemble of ANI-style members; implements the deployed-model contract (see `export.py`)."""

    element_index: torch.Tensor
    self_energies: torch.Tensor
    energy_scale: torch.Tensor
    feature_mean: torch.Tensor
    feature_scale: torch.Tensor
    repulsion_onset: torch.Tensor

    def __init__(self, settings: ModelSettings, ensemble_size: int) -> None:
        super().__init__()
        elements = sorted(settings.elements)
        self.descriptor = SymmetryFunctions(
            num_elements=len(elements),
            radial_cutoff=settings.radial_cutoff_nm,
            angular_cutoff=settings.angular_cutoff_nm,
            radial_shifts=settings.radial_shifts,
            radial_eta=settings.radial_eta_per_nm2,
            angular_shifts=settings.angular_shifts,
            angular_sections=settings.angular_sections,
            angular_eta=settings.angular_eta_per_nm2,
            zeta=settings.angular_zeta,
        )
        self.members = torch.nn.ModuleList(
            [ElementNetworks(len(elements), self.descriptor.size, settings.hidden_layers) for _ in range(ensemble_size)]
        )
        self.kernel = EmbeddingKernel(settings.embedding_damping_nm)
        element_index = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        element_index[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_index", element_index)
        self.register_buffer("self_energies", torch.zeros(len(elements)))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("feature_mean", torch.zeros(self.descriptor.size))
        self.register_buffer("feature_scale", torch.ones(self.descriptor.size))
        self.register_buffer("repulsion_onset", torch.zeros(len(elements), len(elements)))
        self.repulsion_strength = REPULSION_STRENGTH
        self.polarizability_scale = POLARIZABILITY_SCALE

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
        features = (self.descriptor(positions, species) - self.feature_mean) * self.feature_scale
        real = (species >= 0).to(positions.dtype)
        count = real.sum(-1)
        has_mm = mm_positions.shape[1] > 0
        if has_mm:
            potential, field = self.kernel(positions, mm_positions, mm_charges, box)
        else:
            potential = torch.zeros_like(real)
            field = torch.zeros_like(positions)
        repulsion = self.core_repulsion(positions, species)
        vacuum, charges, embedding = [], [], []
        for member in self.members:
            outputs = member(features, species) * real.unsqueeze(-1)
            vacuum.append(self.energy_scale * outputs[..., 0].sum(-1) + repulsion)
            raw = outputs[..., 1]
            shift = (total_charge - raw.sum(-1)) / count
            q = (raw + shift.unsqueeze(-1)) * real
            charges.append(q)
            alpha = self.polarizability_scale * torch.nn.functional.softplus(outputs[..., 2]) * real
            embedding.append(embedding_energy(q, alpha, potential, field))
        return torch.stack(vacuum), torch.stack(charges), torch.stack(embedding)

    def core_repulsion(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Short-range wall [B] kJ/mol, zero at every distance seen in training.

        For each element pair the onset r0 sits below the shortest distance in the training data, so the
        wall never changes a fitted energy; it stops the network's untrained short-range region from
        pulling atoms together (a minimiser otherwise finds holes there). E = A sum (r0/r - 1)^2, r < r0.
        """
        vectors = positions.unsqueeze(1) - positions.unsqueeze(2)
        real = species >= 0
        n = positions.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=positions.device).unsqueeze(0)
        mask = real.unsqueeze(1) & real.unsqueeze(2) & ~eye
        safe = torch.where(mask.unsqueeze(-1), vectors, torch.ones_like(vectors))
        distances = torch.linalg.norm(safe, dim=-1)
        index = species.clamp(min=0)
        onset = self.repulsion_onset[index.unsqueeze(2), index.unsqueeze(1)]
        inside = mask & (distances < onset)
        excess = torch.where(inside, onset / distances - 1.0, torch.zeros_like(distances))
        return 0.5 * self.repulsion_strength * (excess * excess).sum((1, 2))

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
        return (vacuum + embedding + self.reference_energy(species)).squeeze(1).to(torch.float64)

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


def build_ensemble(settings: ModelSettings, ensemble_size: int) -> NNPEnsemble:
    """A freshly initialised ensemble for the given settings."""
    return NNPEnsemble(settings, ensemble_size)
