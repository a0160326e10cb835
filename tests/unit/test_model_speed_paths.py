"""The fast paths of the deployed model agree with straightforward reference computations to round-off.

Optimised paths (`benchmarks/model_speed.py`): the float64 embedding kernel (squared distances and field from
matrix products, no [B, N, M, 3] tensor), PaiNN's one pass for one member or K stacked ones (geometry, radial
basis and filters once per unordered pair for both message directions, no vv channel in the first block), PaiNN and
core-repulsion geometry differentiated only through the pairs inside their cutoff, ANI radial terms over the
pairs inside the cutoff and angular terms over unordered neighbour pairs. The references below are the plain
formulas: every pair, every ordered triplet, one member at a time, the damped Coulomb field written out.
Compared: member energies, forces on region and MM atoms (deployed file, saved and reloaded), and the
second derivatives training takes through ``member_terms`` (create_graph=True).
"""

import sys
import types

import numpy as np
import pytest
import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.models.descriptors import cosine_cutoff, gaussian, pair_geometry
from biomol_nnp.models.embedding import EmbeddingKernel, embedding_energy
from biomol_nnp.models.export import build_metadata, keep_freed_memory, load_model, save_model
from biomol_nnp.models.registry import build_model, model_cutoff
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

NUMBERS = torch.tensor([6, 1, 1, 1, 6, 8, 7, 1, 6, 1, 8, 1, 1, 6, 1, 1])
WIDTHS = torch.tensor([[0.12, 0.10], [0.26, 0.27], [0.31, 0.30], [0.09, 0.08]], dtype=torch.float64)
"""Softening widths of the embedding kernel, nm, per model element (H C N O) and MM-charge sign (+, -)."""
SPECIES = torch.tensor([{1: 0, 6: 1, 7: 2, 8: 3}[int(z)] for z in NUMBERS]).unsqueeze(0)
NO_BOX = torch.zeros(0, 3, dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def geometry(seed: int = 11, mm_count: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A compact region (atoms >= 0.1 nm apart) and MM charges around it, two of them inside the damping range."""
    rng = np.random.default_rng(seed)
    points: list[np.ndarray] = []
    while len(points) < len(NUMBERS):
        candidate = rng.uniform(0.0, 0.6, 3)
        if all(np.linalg.norm(candidate - p) > 0.1 for p in points):
            points.append(candidate)
    region = np.array(points)
    mm = rng.uniform(-0.8, 1.4, (mm_count, 3))
    mm = mm[np.min(np.linalg.norm(mm[:, None] - region[None], axis=-1), axis=1) > 0.15]
    mm[:2] = region[[2, 5]] + [[0.05, 0.0, 0.0], [0.0, 0.12, 0.03]]  # damped: closer than 7 damping lengths
    return torch.tensor(region), torch.tensor(mm), torch.tensor(rng.normal(0.0, 0.5, len(mm)))


def reference_potential_field(
    positions: torch.Tensor,
    species: torch.Tensor,
    mm_positions: torch.Tensor,
    mm_charges: torch.Tensor,
    widths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k q / sqrt(r^2 + w^2) summed over every pair [B, N], w by region element and MM-charge sign, and the field
    as minus the autograd gradient of each atom's potential [B, N, 3]."""
    if not positions.requires_grad:
        positions = positions.clone().requires_grad_(True)
    vectors = positions.unsqueeze(2) - mm_positions.unsqueeze(1)  # [B, N, M, 3]
    per_atom = widths[species]  # [B, N, 2]
    w = torch.where(mm_charges.unsqueeze(1) < 0, per_atom[..., 1:2], per_atom[..., 0:1])
    distance = torch.sqrt(torch.linalg.norm(vectors, dim=-1) ** 2 + w * w)
    potential = (ELECTROSTATIC_CONSTANT * mm_charges.unsqueeze(1) / distance).sum(-1)
    (gradient,) = torch.autograd.grad(potential.sum(), positions, create_graph=True)
    return potential, -gradient


class ReferenceKernel(torch.nn.Module):
    def __init__(self, widths: torch.Tensor) -> None:
        super().__init__()
        self.widths = widths

    def forward(self, positions, species, mm_positions, mm_charges, box):
        return reference_potential_field(positions, species, mm_positions, mm_charges, self.widths)

    def energies(self, positions, species, mm_positions, mm_charges, box, charges, polarizabilities):
        potential, field = self.forward(positions, species, mm_positions, mm_charges, box)
        return embedding_energy(charges, polarizabilities, potential, field)


def reference_descriptor(descriptor, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Symmetry functions over every pair (dense radial) and every ordered triplet (j != k, factor 2^-zeta)."""
    dtype, n = positions.dtype, positions.shape[1]
    onehot = torch.nn.functional.one_hot(species.clamp(min=0), descriptor.num_elements).to(dtype)
    vectors, distances, mask = pair_geometry(positions, species)
    cutoff = cosine_cutoff(distances, descriptor.radial_cutoff) * mask.to(dtype)
    shells = gaussian(descriptor.radial_eta * (distances.unsqueeze(-1) - descriptor.radial_centres) ** 2)
    radial = torch.einsum("bijr,bjs->bisr", 0.25 * shells * cutoff.unsqueeze(-1), onehot).reshape(1, n, -1)
    angular = torch.zeros(n, descriptor.num_pairs, len(descriptor.angular_centres), len(descriptor.angle_centres))
    angular = angular.to(dtype)
    inside = (distances[0] < descriptor.angular_cutoff) & mask[0]
    for i in range(n):
        neighbours = inside[i].nonzero().flatten().tolist()
        for j in neighbours:
            for k in neighbours:
                if j == k:
                    continue
                r_ij, r_ik = distances[0, i, j], distances[0, i, k]
                cosine = descriptor.cosine_scale * (vectors[0, i, j] * vectors[0, i, k]).sum() / (r_ij * r_ik)
                angle = ((1.0 + torch.cos(torch.acos(cosine) - descriptor.angle_centres)) * 0.5) ** descriptor.zeta
                weight = cosine_cutoff(r_ij, descriptor.angular_cutoff) * cosine_cutoff(r_ik, descriptor.angular_cutoff)
                shell = gaussian(descriptor.angular_eta * (0.5 * (r_ij + r_ik) - descriptor.angular_centres) ** 2)
                pair = descriptor.pair_lookup[species[0, j], species[0, k]]
                angular[i, pair] = angular[i, pair] + weight * shell.unsqueeze(-1) * angle
    return torch.cat([radial, angular.reshape(1, n, -1)], dim=-1)


def reference_repulsion(model, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """0.5 A sum over every ordered pair with r < r0 of (r0/r - 1)^2."""
    _, distances, mask = pair_geometry(positions, species)
    index = species.clamp(min=0)
    onset = model.repulsion_onset[index.unsqueeze(2), index.unsqueeze(1)]
    inside = mask & (distances < onset)
    excess = torch.where(inside, onset / distances - 1.0, torch.zeros_like(distances))
    return 0.5 * model.repulsion_strength * (excess * excess).sum((1, 2))


def reference_atomic_outputs(model, positions: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Each member alone, from dense geometry (PaiNN) or the reference descriptor (ANI)."""
    n = species.shape[1]
    if model.architecture == "ani":
        features = (
            reference_descriptor(model.descriptor, positions, species) - model.feature_mean
        ) * model.feature_scale
        rows = features.reshape(n, -1)
        outputs = []
        for member in model.members:
            out = torch.zeros(n, 3, dtype=positions.dtype)
            for element, network in enumerate(member.networks):
                atoms = (species[0] == element).nonzero().flatten()
                out = out.index_put((atoms,), network(rows[atoms]))
            outputs.append(out.reshape(1, n, 3))
        return torch.stack(outputs)
    vectors, distances, mask = pair_geometry(positions, species)
    _, i, j = (mask & (distances < model.cutoff)).nonzero().unbind(1)
    r = distances[0, i, j]
    units = vectors[0, i, j] / r.unsqueeze(-1)
    envelope = (cosine_cutoff(r, model.cutoff) * model.message_scale).unsqueeze(-1)
    return torch.stack([member(species[0], i, j, r, units, envelope).reshape(1, n, 3) for member in model.members])


def as_reference(model):
    """The same eager model (same weights) computing through the reference functions above."""
    model.kernel = ReferenceKernel(model.kernel.widths)
    model.atomic_outputs = types.MethodType(reference_atomic_outputs, model)
    model.core_repulsion = types.MethodType(reference_repulsion, model)
    return model


def trained_like(architecture: str, members: int, dtype: torch.dtype, seed: int = 5):
    """A model away from its near-flat initial state, with a repulsion wall that some pairs are inside."""
    torch.manual_seed(seed)
    model = build_model(ModelSettings(architecture=architecture), members)
    with torch.no_grad():
        model.kernel.widths.copy_(WIDTHS)
        model.self_energies.copy_(torch.tensor([-1500.0, -100000.0, -140000.0, -197000.0]))
        model.energy_scale.fill_(20.0)
        model.repulsion_onset.fill_(0.14)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == 3:  # the output heads
                torch.nn.init.normal_(module.weight, std=0.3)
                module.bias[2] = -2.0  # polarisabilities large enough to matter
    if architecture == "ani":
        model.feature_scale.fill_(3.0)
    return model.to(dtype)


def energies_and_forces(module, positions, mm_positions, mm_charges):
    x, y = positions.clone().requires_grad_(True), mm_positions.clone().requires_grad_(True)
    args = (x, NUMBERS, torch.tensor(0.0, dtype=torch.float64), y, mm_charges, NO_BOX)
    members = module.ensemble_energies(*args)
    grad_x, grad_y = torch.autograd.grad(members.mean(), (x, y))
    return members.detach(), -grad_x, -grad_y


# ---- the embedding kernel ----


def kernel_with_widths() -> EmbeddingKernel:
    kernel = EmbeddingKernel(len(WIDTHS), 0.1).double()
    kernel.widths.copy_(WIDTHS)
    return kernel


def test_dense_float64_energies_match_the_written_out_field():
    """Three members' charges and polarisabilities on a batch of two configurations (the second's region shifted):
    energies, forces on region and MM atoms, and the derivatives of a region-force loss with respect to the
    charges and polarisabilities (what training differentiates), against autograd through the reference."""
    positions, mm_positions, mm_charges = geometry()
    rng = torch.Generator().manual_seed(2)
    charges = (0.4 * torch.randn(3, 2, len(NUMBERS), generator=rng, dtype=torch.float64)).requires_grad_(True)
    alpha = (2e-4 * torch.rand(3, 2, len(NUMBERS), generator=rng, dtype=torch.float64)).requires_grad_(True)
    species = SPECIES.expand(2, -1)
    q = torch.stack([mm_charges, mm_charges.flip(0)])
    results = []
    for kernel in (kernel_with_widths(), ReferenceKernel(WIDTHS)):
        x = torch.stack([positions, positions + 0.02]).requires_grad_(True)
        y = torch.stack([mm_positions, mm_positions.flip(0)]).requires_grad_(True)
        energies = kernel.energies(x, species, y, q, NO_BOX, charges, alpha)
        force_x, force_y = torch.autograd.grad(energies.sum(), (x, y), create_graph=True)
        loss_gradients = torch.autograd.grad((force_x * force_x).sum(), (charges, alpha))
        results.append([t.detach() for t in (energies, force_x, force_y, *loss_gradients)])
    names = ("energies", "region forces", "MM forces", "d loss / d charges", "d loss / d polarisabilities")
    for name, fast, slow in zip(names, *results, strict=True):
        assert float((fast - slow).abs().max()) <= 1e-12 * float(slow.abs().max()), name


@pytest.mark.parametrize("differentiated", ["region", "mm"])
def test_dense_float64_energies_differentiate_one_side_and_switched_mm_charges(differentiated):
    """Only one side's positions require gradients, and the MM charges depend on the MM positions (as the
    OpenMM force's switched molecules do): the same gradients as autograd through the reference."""
    positions, mm_positions, mm_charges = geometry(seed=6, mm_count=120)
    charges = torch.linspace(-0.4, 0.4, len(NUMBERS)).double().reshape(1, 1, -1)
    alpha = torch.full((1, 1, len(NUMBERS)), 2e-4, dtype=torch.float64)
    results = []
    for kernel in (kernel_with_widths(), ReferenceKernel(WIDTHS)):
        x = positions.unsqueeze(0).requires_grad_(differentiated == "region")
        y = mm_positions.unsqueeze(0).requires_grad_(differentiated == "mm")
        switched = mm_charges.unsqueeze(0) * torch.sigmoid(4.0 - 3.0 * y[..., 0])  # charges that move with y
        energy = kernel.energies(x, SPECIES, y, switched, NO_BOX, charges, alpha)
        (gradient,) = torch.autograd.grad(energy.sum(), x if differentiated == "region" else y)
        results.append((energy.detach(), gradient))
    for fast, slow in zip(*results, strict=True):
        assert float((fast - slow).abs().max()) <= 1e-12 * float(slow.abs().max())


@pytest.mark.parametrize("case", ["box", "float32"])
def test_explicit_kernel_paths_match_the_written_out_field(case):
    """The [B, N, M, 3] path (periodic box, float32) agrees with the same reference."""
    positions, mm_positions, mm_charges = geometry(seed=3, mm_count=80)
    dtype = torch.float32 if case == "float32" else torch.float64
    box = 20.0 * torch.eye(3, dtype=dtype) if case == "box" else NO_BOX.to(dtype)
    x, y, q = (t.unsqueeze(0).to(dtype) for t in (positions, mm_positions, mm_charges))
    fast = kernel_with_widths().to(dtype)(x, SPECIES, y, q, box)
    slow = reference_potential_field(
        positions.unsqueeze(0), SPECIES, mm_positions.unsqueeze(0), mm_charges.unsqueeze(0), WIDTHS
    )
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(fast, slow, strict=True):
        b = b.detach()
        assert float((a.double() - b).abs().max()) <= tolerance * float(b.abs().max())


def test_a_charge_on_a_region_atom_is_finite_and_the_same_on_both_kernel_paths():
    """The softened kernel has no singularity: a charge exactly on a region atom gives finite energies and
    forces, equal on the dense path and on the explicit one (taken with a box too large to move anything)."""
    positions, mm_positions, mm_charges = geometry(seed=4, mm_count=40)
    mm_positions[0] = positions[3]
    charges = torch.linspace(-0.4, 0.4, len(NUMBERS)).double().reshape(1, 1, -1)
    alpha = torch.full((1, 1, len(NUMBERS)), 2e-4, dtype=torch.float64)
    kernel = kernel_with_widths()
    results = []
    for box in (NO_BOX, 50.0 * torch.eye(3, dtype=torch.float64)):
        x, y = positions.unsqueeze(0).requires_grad_(True), mm_positions.unsqueeze(0).requires_grad_(True)
        energy = kernel.energies(x, SPECIES, y, mm_charges.unsqueeze(0), box, charges, alpha)
        results.append([energy.detach(), *torch.autograd.grad(energy.sum(), (x, y))])
    assert all(bool(torch.isfinite(t).all()) for t in results[0])
    for dense, explicit in zip(*results, strict=True):
        torch.testing.assert_close(dense, explicit, rtol=1e-10, atol=1e-9)


# ---- the deployed model ----


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("architecture", ["ani", "painn"])
def test_deployed_model_matches_reference_members(architecture, dtype, tmp_path):
    """Member energies and forces on region and MM atoms of the reloaded file equal the reference model's."""
    model = trained_like(architecture, 3, dtype)
    metadata = build_metadata(
        [1, 6, 7, 8], model_cutoff(ModelSettings(architecture=architecture)), 1.0, 3, "none", "test",
        architecture=architecture,
    )  # fmt: skip
    deployed, _ = load_model(save_model(model, tmp_path / "model.pt", metadata))
    positions, mm_positions, mm_charges = geometry()
    fast = energies_and_forces(deployed, positions, mm_positions, mm_charges)
    slow = energies_and_forces(as_reference(model), positions, mm_positions, mm_charges)
    assert float(fast[0].std()) > 1.0  # the members differ, so a mix-up of members would show
    species = model.species(NUMBERS).unsqueeze(0)
    assert float(reference_repulsion(model, positions.unsqueeze(0).to(dtype), species)) > 1.0  # the wall acts
    rtol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]  # of the largest value; measured 4e-14 and 1e-6
    for name, a, b in zip(("member energies", "region forces", "MM forces"), fast, slow, strict=True):
        scale = max(float(b.abs().max()), 1.0)
        assert float((a - b).abs().max()) <= rtol * scale, f"{name}: {float((a - b).abs().max())} vs scale {scale}"


@pytest.mark.parametrize("architecture", ["ani", "painn"])
def test_training_second_derivatives_match_reference(architecture):
    """d/dweights of a force loss through member_terms (create_graph=True) is the reference's."""
    positions, mm_positions, mm_charges = geometry(seed=8, mm_count=60)
    grads = []
    for reference in (False, True):
        model = trained_like(architecture, 2, torch.float64)
        if reference:
            as_reference(model)
        species = model.species(NUMBERS).unsqueeze(0)
        x = positions.unsqueeze(0).clone().requires_grad_(True)
        vacuum, charges, embedding = model.member_terms(
            x, species, torch.zeros(1, dtype=torch.float64), mm_positions.unsqueeze(0), mm_charges.unsqueeze(0), NO_BOX
        )
        (forces,) = torch.autograd.grad((vacuum + embedding).sum(), x, create_graph=True)
        loss = (forces * forces).sum() + (charges * charges).sum()
        parameters = [p for name, p in model.named_parameters() if name.startswith("members.")]
        grads.append(torch.autograd.grad(loss, parameters))
    for fast, slow in zip(*grads, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9 * float(slow.abs().max()) + 1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_memory_is_kept_on_linux():
    assert keep_freed_memory()


# ---- PaiNN's fast path ----


@pytest.mark.parametrize("members", [1, 3])
def test_painn_fast_path_matches_each_member_on_a_padded_batch(members):
    """One member (unstacked weights) or three (stacked), scripted: a batch of a compact configuration and a
    stretched, smaller one padded with -1 (some of its pairs beyond the cutoff). Atomic outputs and their position
    gradients equal each member's reference (`PaiNNMember.forward` over ordered pairs) on each configuration alone."""
    model = trained_like("painn", members, torch.float64)
    fast_model = torch.jit.script(model)
    compact, _, _ = geometry(seed=11)
    stretched = 1.6 * geometry(seed=4)[0][:11]
    positions = torch.zeros(2, len(NUMBERS), 3, dtype=torch.float64)
    positions[0], positions[1, :11] = compact, stretched
    species = SPECIES.repeat(2, 1)
    species[1, 11:] = -1
    _, distances, mask = pair_geometry(positions[1:2, :11], species[1:2, :11])
    assert 0 < int((mask & (distances > model.cutoff)).sum()) < int(mask.sum())  # pairs on both sides of it
    weights = torch.randn(members, 2, len(NUMBERS), 3, dtype=torch.float64)
    x = positions.clone().requires_grad_(True)
    fast = fast_model.atomic_outputs(x, species)
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), x)
    for index, atoms in enumerate((len(NUMBERS), 11)):
        y = positions[index : index + 1, :atoms].clone().requires_grad_(True)
        slow = reference_atomic_outputs(model, y, species[index : index + 1, :atoms])
        (slow_grad,) = torch.autograd.grad((slow * weights[:, index : index + 1, :atoms]).sum(), y)
        torch.testing.assert_close(fast[:, index : index + 1, :atoms], slow, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fast_grad[index : index + 1, :atoms], slow_grad, rtol=1e-11, atol=1e-11)
    assert float(fast_grad[1, 11:].abs().max()) == 0.0  # padding atoms neither move nor act
