"""PaiNN-like equivariant message-passing ensemble (Schütt, Unke, Gastegger, ICML 2021), in plain torch.

Each atom carries scalar features s [F] and vector features v [3, F]. A block passes messages along
every pair closer than the cutoff, built from a learnable Bessel radial basis sqrt(2/r_c) sin(w_n r)/r
(frequencies w_n start at n pi / r_c and are trained) times a cosine envelope that goes to zero with zero
slope at r_c, so energies and forces stay continuous as an atom crosses the cutoff. An update block then
mixes s and v through norms and scalar products of v, which keeps s rotation invariant and v equivariant.
After the blocks a head maps s to (atomic energy, raw charge, raw polarisability), turned into the
deployed-model terms by `EnsembleModel`. All activations are SiLU (smooth; no kinks).

The geometry (pairs i < j from a dense mask, distances, unit vectors, envelope) is computed once per
unordered pair and shared by both message directions and by the members; every learnable weight belongs
to a member in ``self.members``. `PaiNNMember.forward` is the plain per-member definition over ordered
pairs; the ensemble evaluates all members in one pass (`fast_block`, weights stacked along K), with the
same results to round-off (`tests/unit/test_model_speed_paths.py`).

>>> from biomol_nnp.config import ModelSettings
>>> model = build_painn(ModelSettings(architecture="painn"), ensemble_size=2)
>>> scripted = torch.jit.script(model)
"""

import math

import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.models.descriptors import pair_geometry
from biomol_nnp.models.ensemble import EnsembleModel, init_output_layer

DEFAULT_NEIGHBOURS = 16.0
"""Mean neighbour count assumed before `initialise` measures it on the training data."""

VECTOR_NORM_EPSILON = 1e-8
"""Added under the square root of vector-feature norms so the norm is differentiable at v = 0."""


class BesselBasis(torch.nn.Module):
    """sqrt(2 / r_c) sin(w_n r) / r for n = 1..R with learnable frequencies w_n (1/nm), [P] -> [P, R]."""

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__()
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.frequencies = torch.nn.Parameter(torch.arange(1, size + 1, dtype=torch.float32) * (math.pi / cutoff))

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        r = distances.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r


class MLP(torch.nn.Sequential):
    """Linear - SiLU - Linear (state_dict keys ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``)."""

    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__(torch.nn.Linear(inputs, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, outputs))

    def flat_weights(self) -> list[torch.Tensor]:
        """(weight, bias, weight, bias) of the two Linear layers, the order `mlp` takes."""
        # getattr: mypy types a submodule's attributes as Tensor | Module and TorchScript cannot narrow them
        first, last = self[0], self[2]
        return [getattr(first, "weight"), getattr(first, "bias"), getattr(last, "weight"), getattr(last, "bias")]  # noqa: B009


BLOCK_WEIGHTS = 10
"""Tensors per interaction block in `InteractionBlock.flat_weights`."""


def linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """One member's Linear (weight [out, in]) or K members' at once (weight [K, out, in], inputs [K, A, in])."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(inputs, weight, bias)
    if bias is None:
        return torch.bmm(inputs, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))


def mlp(inputs: torch.Tensor, weights: list[torch.Tensor], start: int) -> torch.Tensor:
    """`MLP` from (weight, bias, weight, bias) at ``weights[start:start + 4]``, one member's or K members' stacked."""
    hidden = torch.nn.functional.silu(linear(inputs, weights[start], weights[start + 1]))
    return linear(hidden, weights[start + 2], weights[start + 3])


def scalar_channels(weight: torch.Tensor, features: int, dim: int) -> torch.Tensor:
    """The (s, vs) thirds of a message weight or bias whose ``dim`` holds the (s, vv, vs) channels [3F]."""
    return torch.cat([weight.narrow(dim, 0, features), weight.narrow(dim, 2 * features, features)], dim)


def fast_block(
    scalars: torch.Tensor,
    vectors: torch.Tensor,
    radial: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    units: torch.Tensor,
    weights: list[torch.Tensor],
    first_block: bool,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`InteractionBlock.forward` from its `InteractionBlock.flat_weights`: scalars [..., A, F], vectors [..., A, 3, F].

    The leading ``...`` is empty (one member's weights) or K (members' weights stacked). In the first block
    v = 0, so the vv channel of the filter and message (rows F:2F) is skipped; ``epsilon`` is
    `VECTOR_NORM_EPSILON`.
    """
    features = scalars.shape[-1]
    filter_weight, message_weight, message_bias = weights[0], weights[3], weights[4]
    if first_block:
        filter_weight = scalar_channels(filter_weight, features, -2)
        message_weight = scalar_channels(message_weight, features, -2)
        message_bias = scalar_channels(message_bias, features, -1)
    hidden = torch.nn.functional.silu(linear(scalars, weights[1], weights[2]))
    filters = linear(radial, filter_weight).unsqueeze(-3)  # one filter per pair for both directions [..., 1, Q, C]
    messages = linear(hidden, message_weight, message_bias).index_select(-2, second)
    shape = messages.shape
    x = (messages.view(list(shape[:-2]) + [2, -1, shape[-1]]) * filters).view(shape)  # [..., P, C], P = 2 Q
    if first_block:
        ds, dvs = x.split(features, dim=-1)
        dv = dvs.unsqueeze(-2) * units.unsqueeze(-1)  # messages j -> i [..., P, 3, F]
    else:
        ds, dvv, dvs = x.split(features, dim=-1)
        dv = torch.addcmul(dvs.unsqueeze(-2) * units.unsqueeze(-1), vectors.index_select(-3, second), dvv.unsqueeze(-2))
    scalars = scalars.index_add(-2, first, ds)
    vectors = vectors.index_add(-3, first, dv)
    uv = linear(vectors.flatten(-3, -2), weights[5]).view(list(vectors.shape[:-1]) + [2 * features])
    u, v = uv.split(features, dim=-1)
    norm = torch.sqrt((v * v).sum(-2) + epsilon)
    avv, asv, ass = mlp(torch.cat([scalars, norm], dim=-1), weights, 6).split(features, dim=-1)
    vectors = torch.addcmul(vectors, avv.unsqueeze(-2), u)
    scalars = scalars + asv * (u * v).sum(-2) + ass
    return scalars, vectors


class InteractionBlock(torch.nn.Module):
    """One PaiNN message block followed by one update block, on flat atoms [A] and pairs [P]."""

    def __init__(self, features: int, basis: int) -> None:
        super().__init__()
        self.features = features
        self.epsilon = VECTOR_NORM_EPSILON
        self.filter = torch.nn.Linear(basis, 3 * features, bias=False)  # zero beyond the cutoff, like its input
        self.message = MLP(features, features, 3 * features)
        self.vector_u = torch.nn.Linear(features, features, bias=False)
        self.vector_v = torch.nn.Linear(features, features, bias=False)
        self.update = MLP(2 * features, features, 3 * features)

    def forward(
        self,
        scalars: torch.Tensor,
        vectors: torch.Tensor,
        radial: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        units: torch.Tensor,
        has_vectors: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.message(scalars).index_select(0, second) * self.filter(radial)  # message j -> i
        ds, dvv, dvs = x.split(self.features, dim=-1)
        dv = dvs.unsqueeze(1) * units.unsqueeze(-1)
        if has_vectors:  # the first block starts from v = 0
            dv = torch.addcmul(dv, vectors.index_select(0, second), dvv.unsqueeze(1))
        scalars = scalars.index_add(0, first, ds)
        vectors = vectors.index_add(0, first, dv)
        u, v = self.vector_u(vectors), self.vector_v(vectors)
        norm = torch.sqrt((v * v).sum(1) + self.epsilon)
        avv, asv, ass = self.update(torch.cat([scalars, norm], dim=-1)).split(self.features, dim=-1)
        vectors = torch.addcmul(vectors, avv.unsqueeze(1), u)
        scalars = scalars + asv * (u * v).sum(1) + ass
        return scalars, vectors

    def flat_weights(self) -> list[torch.Tensor]:
        """The block's weights in `BLOCK_WEIGHTS` order (see `fast_block`)."""
        return (
            [self.filter.weight]
            + self.message.flat_weights()
            + [torch.cat([self.vector_u.weight, self.vector_v.weight])]
            + self.update.flat_weights()
        )


class PaiNNMember(torch.nn.Module):
    """One member: element embedding, radial basis, the interaction blocks and the output head."""

    def __init__(
        self, num_elements: int, features: int, basis: int, interactions: int, head_hidden: int, cutoff: float
    ) -> None:
        super().__init__()
        self.features = features
        self.embedding = torch.nn.Embedding(num_elements, features)
        self.basis = BesselBasis(basis, cutoff)
        self.blocks = torch.nn.ModuleList([InteractionBlock(features, basis) for _ in range(interactions)])
        self.head = MLP(features, head_hidden, 3)
        last = self.head[-1]
        assert isinstance(last, torch.nn.Linear)
        init_output_layer(last)

    def forward(
        self,
        species: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        distances: torch.Tensor,
        units: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """Atomic (energy, raw charge, raw polarisability) [A, 3] of flat atoms [A] with pairs [P].

        ``envelope`` [P, 1] carries the cutoff function times the message normalisation.
        """
        scalars = self.embedding(species.clamp(min=0))
        vectors = torch.zeros(scalars.shape[0], 3, self.features, dtype=scalars.dtype, device=scalars.device)
        radial = self.basis(distances) * envelope  # smooth to zero at the cutoff
        has_vectors = False
        for block in self.blocks:
            scalars, vectors = block(scalars, vectors, radial, first, second, units, has_vectors)
            has_vectors = True
        return self.head(scalars)

    def flat_weights(self) -> list[torch.Tensor]:
        """Every weight of the member: embedding, frequencies, each block's `flat_weights`, the head's four."""
        weights = [self.embedding.weight, self.basis.frequencies]
        for block in self.blocks:
            weights += getattr(block, "flat_weights")()  # noqa: B009  # see MLP.flat_weights
        return weights + self.head.flat_weights()


class PaiNNEnsemble(EnsembleModel):
    """Ensemble of PaiNN members; implements the deployed-model contract (see `ensemble.py`).

    Messages are summed over neighbours and multiplied by ``message_scale`` = 1 / (mean neighbour count
    in the training data), so feature magnitudes do not grow with the density of the region.
    """

    message_scale: torch.Tensor

    def __init__(self, settings: ModelSettings, ensemble_size: int) -> None:
        p = settings.painn
        super().__init__(settings, "painn", p.cutoff_nm)
        self.members = torch.nn.ModuleList(
            [
                PaiNNMember(self.num_elements, p.features, p.radial_basis, p.interactions, p.head_hidden, p.cutoff_nm)
                for _ in range(ensemble_size)
            ]
        )
        self.register_buffer("message_scale", torch.tensor(1.0 / DEFAULT_NEIGHBOURS))
        self.basis_prefactor = math.sqrt(2.0 / p.cutoff_nm)
        self.block_weights = BLOCK_WEIGHTS
        self.epsilon = VECTOR_NORM_EPSILON

    def atomic_outputs(self, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-member atomic (energy / energy_scale, raw charge, raw polarisability) [K, B, N, 3]."""
        batch, n = species.shape[0], species.shape[1]
        with torch.no_grad():  # find the pairs i < j inside the cutoff, then differentiate through those only
            _, distances, mask = pair_geometry(positions, species)
            b, i, j = torch.triu(mask & (distances < self.cutoff), diagonal=1).nonzero().unbind(1)
        low, high = b * n + i, b * n + j
        # index_select (backward: index_add) is much cheaper than advanced indexing
        flat_positions = positions.reshape(-1, 3)
        vectors = flat_positions.index_select(0, high) - flat_positions.index_select(0, low)  # r_j - r_i, i < j
        pair_distances = torch.linalg.norm(vectors, dim=-1)
        inverse = 1.0 / pair_distances.unsqueeze(-1)
        units = vectors * inverse
        # every pair is inside the cutoff: cosine envelope x message scale x the basis' sqrt(2 / r_c) / r
        envelope = 0.5 * torch.cos(pair_distances * (math.pi / self.cutoff)) + 0.5
        scale = self.message_scale * self.basis_prefactor
        out = self.members_forward(
            species.reshape(-1),
            torch.cat([low, high]),  # messages j -> i, then i -> j (unit vector reversed)
            torch.cat([high, low]),
            pair_distances,
            torch.cat([units, -units]),
            envelope.unsqueeze(-1) * inverse * scale,
        )
        return out.reshape(-1, batch, n, 3)

    def member_weights(self) -> list[torch.Tensor]:
        """`PaiNNMember.flat_weights` of the one member, or of all members stacked along a leading K axis."""
        per_member: list[list[torch.Tensor]] = []
        for member in self.members:
            per_member.append(getattr(member, "flat_weights")())  # noqa: B009  # see MLP.flat_weights
        if len(per_member) == 1:
            return per_member[0]
        return [torch.stack([w[index] for w in per_member]) for index in range(len(per_member[0]))]

    def members_forward(
        self,
        species: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        distances: torch.Tensor,
        units: torch.Tensor,
        radial_factor: torch.Tensor,
    ) -> torch.Tensor:
        """`PaiNNMember.forward` of every member in one pass, [A, 3] for one member, [K, A, 3] for K.

        ``radial_factor`` [P, 1] is the envelope times the message scale and the Bessel prefactor over r, so the
        radial basis is sin(w r) times it. Same arithmetic as the members one by one (to round-off); with several
        members their weights are stacked along a K axis: K times fewer, K times larger operations.
        """
        weights = self.member_weights()
        scalars = weights[0].index_select(-2, species.clamp(min=0))  # [..., A, F]
        features = scalars.shape[-1]
        vectors = scalars.new_zeros(list(scalars.shape[:-1]) + [3, features])
        radial = torch.sin(weights[1].unsqueeze(-2) * distances.unsqueeze(-1)) * radial_factor  # [..., P, R]
        blocks = (len(weights) - 6) // self.block_weights
        for index in range(blocks):
            start = 2 + index * self.block_weights
            block_weights = weights[start : start + self.block_weights]
            scalars, vectors = fast_block(
                scalars, vectors, radial, first, second, units, block_weights, index == 0, self.epsilon
            )
        return mlp(scalars, weights, len(weights) - 4)


def build_painn(settings: ModelSettings, ensemble_size: int) -> PaiNNEnsemble:
    """A freshly initialised PaiNN ensemble for the given settings."""
    return PaiNNEnsemble(settings, ensemble_size)
