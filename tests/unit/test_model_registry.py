"""Model registry, the shared training hooks, data-dependent initialisation and the long-range terms."""

import numpy as np
import pytest
import torch

from biomol_nnp.config import LongRangeSettings, ModelSettings, TrainSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.models.ensemble import EnsembleModel
from biomol_nnp.models.long_range import C6_TABLE, SQRT_R4_R2, TYPICAL_COORDINATION, LongRange
from biomol_nnp.models.registry import ARCHITECTURES, build_model
from biomol_nnp.train.data import TrainingSample
from biomol_nnp.train.initialise import fit_self_energies, initialise
from biomol_nnp.units import BOHR_TO_NM, ELECTROSTATIC_CONSTANT, HARTREE_TO_KJ_PER_MOL

SELF = {1: -1300.0, 6: -9900.0, 8: -19800.0}
WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.0], [0.096, 0.0, 0.0], [-0.024, 0.093, 0.0]]))
METHANOL = (
    np.array([6, 8, 1, 1, 1, 1]),
    np.array([[0, 0, 0], [0.143, 0, 0], [-0.036, 0.103, 0], [-0.036, -0.051, 0.089], [-0.036, -0.051, -0.089],
              [0.175, 0.09, 0]]),
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample(molecule, rng, trajectory=0, offset=0.0):
    numbers, positions = molecule
    energy = sum(SELF[int(z)] for z in numbers) + offset + rng.normal(0, 1.0)
    return TrainingSample(
        numbers, positions + rng.normal(0, 0.003, positions.shape), 0.0, float(energy), np.zeros_like(positions),
        np.zeros(len(numbers)), np.zeros((0, 3)), np.zeros(0), float("nan"), trajectory, "md",
    )  # fmt: skip


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_build_model_follows_the_training_hooks(architecture):
    model = build_model(ModelSettings(architecture=architecture, elements=[1, 6, 8]), ensemble_size=3)
    assert isinstance(model, EnsembleModel) and model.architecture == architecture and len(model.members) == 3
    rng = np.random.default_rng(0)
    batch_positions = torch.zeros(2, 6, 3)
    batch_positions[0, :3] = torch.tensor(WATER[1], dtype=torch.float32)
    batch_positions[1] = torch.tensor(METHANOL[1], dtype=torch.float32)
    numbers = torch.tensor([[8, 1, 1, 0, 0, 0], list(METHANOL[0])])
    species = model.species(numbers)
    mm_positions = torch.tensor(rng.uniform(0.4, 0.8, (2, 4, 3)), dtype=torch.float32)
    mm_charges = torch.tensor([[0.3, -0.3, 0.1, -0.1], [0.2, 0.0, 0.0, -0.2]])
    vacuum, charges, embedding = model.member_terms(
        batch_positions, species, torch.tensor([0.0, 1.0]), mm_positions, mm_charges, torch.zeros(0, 3)
    )
    assert vacuum.shape == (3, 2) and charges.shape == (3, 2, 6) and embedding.shape == (3, 2)
    assert torch.allclose(charges.sum(-1), torch.tensor([0.0, 1.0]).expand(3, 2), atol=1e-6)
    assert torch.all(charges[:, 0, 3:] == 0)  # padding atoms carry nothing
    # padding does not change the water's terms
    alone = model.member_terms(
        batch_positions[:1, :3],
        species[:1, :3],
        torch.tensor([0.0]),
        mm_positions[:1],
        mm_charges[:1],
        torch.zeros(0, 3),
    )
    assert torch.allclose(alone[0][:, 0], vacuum[:, 0], atol=1e-4) and torch.allclose(
        alone[2][:, 0], embedding[:, 0], atol=1e-5
    )


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_members_merge_by_copying_their_state(architecture):
    """Part of the contract with distributed training: a member's weights are members[k] and nothing else."""
    settings = ModelSettings(architecture=architecture)
    torch.manual_seed(0)
    first = build_model(settings, 2).double()
    torch.manual_seed(1)
    second = build_model(settings, 2).double()
    second.members[1].load_state_dict(first.members[0].state_dict())
    positions = torch.tensor(METHANOL[1]).unsqueeze(0)
    species = first.species(torch.tensor(METHANOL[0] % 8 + (METHANOL[0] == 8) * 8).unsqueeze(0))
    empty = torch.zeros(1, 0, 3, dtype=torch.float64)
    a = first.member_terms(positions, species, torch.zeros(1), empty, empty[..., 0], torch.zeros(0, 3))
    b = second.member_terms(positions, species, torch.zeros(1), empty, empty[..., 0], torch.zeros(0, 3))
    assert torch.equal(a[0][0], b[0][1]) and torch.equal(a[1][0], b[1][1])
    assert not torch.equal(a[0][1], b[0][0])


def test_unknown_architecture_lists_the_valid_ones():
    settings = ModelSettings().model_copy(update={"architecture": "mace"})
    with pytest.raises(
        ConfigError, match=r"unknown model architecture 'mace'; valid architectures are \['ani', 'painn'\]"
    ):
        build_model(settings, 2)
    with pytest.raises(ConfigError, match="ensemble_size must be at least 1, got 0"):
        build_model(ModelSettings(), 0)


def test_self_energies_recover_references_from_several_compositions():
    rng = np.random.default_rng(0)
    samples = [sample(molecule, rng) for molecule in (WATER, METHANOL) * 5]
    samples += [sample((np.array([6, 1, 1, 1, 1]), METHANOL[1][[0, 2, 3, 4, 5]]), rng) for _ in range(5)]
    fitted = fit_self_energies(samples, [1, 6, 8])
    assert fitted == pytest.approx([SELF[1], SELF[6], SELF[8]], abs=2.0)


def test_self_energies_are_well_posed_for_a_single_composition():
    """One composition: least squares is rank deficient; the ridge gives the prior (mean energy per atom)."""
    rng = np.random.default_rng(0)
    samples = [sample(WATER, rng) for _ in range(8)]
    fitted = fit_self_energies(samples, [1, 6, 8])
    mean_per_atom = np.mean([s.energy for s in samples]) / 3
    assert fitted == pytest.approx([mean_per_atom] * 3, abs=1e-3)  # carbon is unseen: it stays at the prior
    residual = [s.energy - (2 * fitted[0] + fitted[2]) for s in samples]
    assert abs(np.mean(residual)) < 1e-3


def test_self_energies_name_the_sample_with_an_unknown_element():
    rng = np.random.default_rng(0)
    samples = [sample(WATER, rng), sample(METHANOL, rng, trajectory=4)]
    with pytest.raises(InputError, match=r"atomic number 6 in sample 1 \(source 'md', trajectory 4\) is not among"):
        fit_self_energies(samples, [1, 8])


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_initialise_sets_the_shared_buffers(architecture):
    rng = np.random.default_rng(0)
    samples = [sample(molecule, rng, offset=rng.normal(0, 30)) for molecule in (WATER, METHANOL) * 4]
    model, self_energies = initialise(
        samples, ModelSettings(architecture=architecture, elements=[1, 6, 8]), TrainSettings()
    )
    assert torch.allclose(model.self_energies.double(), torch.from_numpy(self_energies).double())
    assert float(model.energy_scale) > 1.0
    onset = model.repulsion_onset
    assert 0.07 < float(onset[0, 2]) < 0.096  # below the shortest O-H distance seen
    if architecture == "ani":
        assert not torch.all(model.feature_scale == 1.0)
    else:
        assert 0.1 < float(model.message_scale) < 1.0


def test_dispersion_table_reproduces_the_d3_reference(monkeypatch):
    """C6_TABLE is D3's reference C6 interpolated at TYPICAL_COORDINATION (the D3 table shipped by torchani)."""
    pytest.importorskip("h5py")
    monkeypatch.setenv("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from torchani.constants import SQRT_EMPIRICAL_CHARGE
    from torchani.potentials.dftd3 import _load_c6_constants

    reference, cn_a, cn_b = _load_c6_constants()
    for (a, b), value in C6_TABLE.items():
        refs, ca, cb = reference[a, b].flatten(), cn_a[a, b].flatten(), cn_b[a, b].flatten()
        weights = torch.exp(-4 * ((TYPICAL_COORDINATION[a] - ca) ** 2 + (TYPICAL_COORDINATION[b] - cb) ** 2))
        weights = weights.masked_fill(refs <= 0, 0)
        assert value == pytest.approx(float((weights * refs).sum() / weights.sum()), abs=1e-3)
    for z, q in SQRT_R4_R2.items():
        assert q == pytest.approx(SQRT_EMPIRICAL_CHARGE[z], abs=1e-6)


def test_dispersion_is_close_to_dftd3():
    """Fixed-C6 D3(BJ) on alanine dipeptide with B3LYP's damping vs simple-dftd3 (CN-dependent C6): within 15%."""
    dftd3 = pytest.importorskip("pyscf.dispersion.dftd3")
    import openmm.app as app
    import openmm.unit as unit
    from pyscf import gto

    from biomol_nnp.config import SYSTEMS_DIR

    pdb = app.PDBFile(str(SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"))
    xyz = np.array(pdb.positions.value_in_unit(unit.nanometer))
    numbers = [atom.element.atomic_number for atom in pdb.topology.atoms()]
    symbols = [atom.element.symbol for atom in pdb.topology.atoms()]
    mol = gto.M(atom=list(zip(symbols, (xyz * 10).tolist(), strict=True)), basis="sto-3g", unit="Angstrom")
    reference = float(dftd3.DFTD3Dispersion(mol, xc="b3lyp", version="d3bj").get_dispersion()["energy"])
    settings = LongRangeSettings(
        dispersion=True, dispersion_a1=0.3981, dispersion_s8=1.9889, dispersion_a2_nm=4.4211 * BOHR_TO_NM
    )
    elements = sorted(set(numbers))
    term = LongRange(settings, elements, cutoff=0.5).double()
    species = torch.tensor([[elements.index(z) for z in numbers]])
    ours = float(term(torch.tensor(xyz).unsqueeze(0), species, torch.zeros(1, 1, len(numbers), dtype=torch.float64)))
    assert ours == pytest.approx(reference * HARTREE_TO_KJ_PER_MOL, rel=0.15)
    assert ours < -50.0


def test_long_range_coulomb_is_switched_on_at_the_network_cutoff():
    """Zero below r_c - w (the network's range), exactly k q q / r beyond r_c, smooth in between."""
    term = LongRange(LongRangeSettings(coulomb=True, coulomb_switch_width_nm=0.1), [1, 8], cutoff=0.5).double()
    charges = torch.tensor([[[0.4, -0.3]], [[0.2, 0.2]]], dtype=torch.float64)  # two members
    species = torch.tensor([[0, 1]])

    def energy(r):
        positions = torch.tensor([[[0.0, 0.0, 0.0], [r, 0.0, 0.0]]], dtype=torch.float64)
        return term(positions, species, charges)[:, 0]

    assert torch.equal(energy(0.39), torch.zeros(2))
    for r in (0.5, 0.8, 3.0):
        expected = ELECTROSTATIC_CONSTANT * charges[:, 0].prod(-1) / r
        assert torch.allclose(energy(r), expected, rtol=1e-12)
    grid = np.linspace(0.38, 0.52, 141)
    values = np.array([float(energy(r)[0]) for r in grid])
    assert np.max(np.abs(np.diff(values, 2))) < 0.01 * np.max(np.abs(values))  # no jump, no kink


def test_dispersion_refuses_elements_outside_its_table():
    with pytest.raises(ConfigError, match=r"long_range.dispersion covers elements \[1, 6, 7, 8, 16\], not \[17\]"):
        build_model(ModelSettings(elements=[1, 6, 17], long_range=LongRangeSettings(dispersion=True)), 1)
