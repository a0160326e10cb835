"""ANI-style NNP ensemble: symmetry-function descriptors and per-element networks.

Each ensemble member is a set of per-element networks that map an atom's symmetry-function
descriptor to three numbers: an atomic energy, a raw charge and a raw polarisability, which
`EnsembleModel` turns into the vacuum energy, constrained charges and the embedding energy.
All members share one descriptor computation (standardised by ``feature_mean``/``feature_scale``).

E_member = sum_a (e_a + E_self[Z_a]) + E_repulsion + E_long + E_emb(q, alpha; MM charges).

>>> from biomol_nnp.config import ModelSettings
>>> ensemble = build_ensemble(ModelSettings(), ensemble_size=3)
>>> scripted = torch.jit.script(ensemble)  # follows the deployed-model contract
"""

import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.models.descriptors import SymmetryFunctions
from biomol_nnp.models.ensemble import EnsembleModel, init_output_layer


def element_network(inputs: int, hidden: list[int], outputs: int) -> torch.nn.Sequential:
    """A multilayer perceptron with SiLU activations: infinitely smooth, so forces and their derivatives
    (Hessians, normal modes) are continuous (CELU, ANI's original choice, has a jump in the second derivative)."""
    layers: list[torch.nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [torch.nn.Linear(width, size), torch.nn.SiLU()]
        width = size
    layers.append(torch.nn.Linear(width, outputs))
    return torch.nn.Sequential(*layers)


class ElementNetworks(torch.nn.Module):
    """One network per element: descriptors of atoms sorted by element [A, F] -> outputs [A, 3].

    ``bounds`` [S + 2] are the offsets of each element's block in the sorted rows (padding rows, element
    -1, come first and get zeros): contiguous slices instead of scattered copies keep the backward cheap.
    """

    def __init__(self, num_elements: int, inputs: int, hidden: list[int]) -> None:
        super().__init__()
        networks = [element_network(inputs, hidden, 3) for _ in range(num_elements)]
        for network in networks:
            last = network[-1]
            assert isinstance(last, torch.nn.Linear)
            init_output_layer(last)  # near flat, neutral, weakly polarisable: early MD cannot blow up
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, features: torch.Tensor, bounds: list[int]) -> torch.Tensor:
        blocks = [torch.zeros(bounds[1], 3, dtype=features.dtype, device=features.device)]
        for index, network in enumerate(self.networks):
            blocks.append(network(features[bounds[index + 1] : bounds[index + 2]]))
        return torch.cat(blocks)


class NNPEnsemble(EnsembleModel):
    """Ensemble of ANI-style members; implements the deployed-model contract (see `ensemble.py`)."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(self, settings: ModelSettings, ensemble_size: int) -> None:
        super().__init__(settings, "ani", settings.radial_cutoff_nm)
        self.descriptor = SymmetryFunctions(
            num_elements=self.num_elements,
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
            [
                ElementNetworks(self.num_elements, self.descriptor.size, settings.hidden_layers)
                for _ in range(ensemble_size)
            ]
        )
        self.register_buffer("feature_mean", torch.zeros(self.descriptor.size))
        self.register_buffer("feature_scale", torch.ones(self.descriptor.size))

    def atomic_outputs(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-member atomic (energy / energy_scale, raw charge, raw polarisability) [K, B, N, 3]."""
        features = (self.descriptor(positions, species) - self.feature_mean) * self.feature_scale
        flat_species = species.reshape(-1)
        order = torch.argsort(flat_species, stable=True)
        counts = torch.bincount(flat_species + 1, minlength=self.num_elements + 1)
        offsets: list[int] = torch.cumsum(counts, 0).tolist()
        bounds = [0] + offsets
        sorted_features = features.reshape(-1, features.shape[-1]).index_select(0, order)
        inverse = torch.argsort(order)
        outputs: list[torch.Tensor] = []
        for member in self.members:
            outputs.append(member(sorted_features, bounds).index_select(0, inverse))
        return torch.stack(outputs).reshape(len(outputs), species.shape[0], species.shape[1], 3)


def build_ensemble(settings: ModelSettings, ensemble_size: int) -> NNPEnsemble:
    """A freshly initialised ensemble for the given settings."""
    return NNPEnsemble(settings, ensemble_size)
