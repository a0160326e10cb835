"""Physics of the deployed model file: forces, invariances, charges and the embedding identities.

The model is a freshly initialised ensemble exported with save_model and reloaded with plain
torch.jit.load, so every check holds for the file alone.
"""

import functools
import json

import numpy as np
import pytest
import torch

from biomol_nnp.config import LongRangeSettings, ModelSettings
from biomol_nnp.models.ani import build_ensemble
from biomol_nnp.models.environment import embedding_environment
from biomol_nnp.models.export import build_metadata, save_model
from biomol_nnp.models.registry import build_model, model_cutoff
from tests.physics import model_battery

ATOMIC_NUMBERS = torch.tensor([6, 1, 1, 1, 6, 8, 7, 1, 6, 1])
NO_BOX = torch.zeros(0, 3, dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(3)
    settings = ModelSettings()
    ensemble = build_ensemble(settings, ensemble_size=3).double()
    ensemble.self_energies.copy_(torch.tensor([-1500.0, -100000.0, -140000.0, -197000.0]))
    ensemble.energy_scale.fill_(20.0)
    for member in ensemble.members:  # away from the near-flat initial state, so every term matters
        for network in member.networks:
            torch.nn.init.normal_(network[-1].weight, std=0.3)
    metadata = build_metadata(
        settings.elements, settings.radial_cutoff_nm, settings.embedding_cutoff_nm, 3, "GFN2-xTB", "test"
    )
    return save_model(ensemble, tmp_path_factory.mktemp("model") / "model.pt", metadata)


@pytest.fixture(scope="module")
def model(model_file):
    return torch.jit.load(str(model_file))


@pytest.fixture
def geometry():
    rng = np.random.default_rng(7)
    # a compact cloud with no two atoms closer than 0.1 nm
    points = []
    while len(points) < len(ATOMIC_NUMBERS):
        candidate = rng.uniform(0, 0.45, 3)
        if all(np.linalg.norm(candidate - p) > 0.1 for p in points):
            points.append(candidate)
    mm = rng.uniform(-0.5, 1.0, (12, 3))
    mm = mm[np.min(np.linalg.norm(mm[:, None] - np.array(points)[None], axis=-1), axis=1) > 0.2]
    charges = rng.normal(0, 0.5, len(mm))
    return torch.tensor(np.array(points)), torch.tensor(mm), torch.tensor(charges)


def energy(model, positions, mm_positions=None, mm_charges=None, box=NO_BOX, numbers=ATOMIC_NUMBERS):
    if mm_positions is None:
        mm_positions, mm_charges = torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return model(positions, numbers, torch.tensor(0.0), mm_positions, mm_charges, box)


def test_metadata_inside_file(model_file):
    extra = {"metadata.json": ""}
    torch.jit.load(str(model_file), _extra_files=extra)
    metadata = json.loads(extra["metadata.json"])
    assert metadata["elements"] == [1, 6, 7, 8]
    assert metadata["units"]["energy"] == "kJ/mol"
    assert metadata["ensemble_size"] == 3


def test_zero_mm_charges_give_vacuum_energy(model, geometry):
    positions, mm_positions, mm_charges = geometry
    vacuum = energy(model, positions)
    assert float(energy(model, positions, mm_positions, torch.zeros_like(mm_charges))) == pytest.approx(
        float(vacuum), abs=1e-9
    )
    assert float(energy(model, positions, mm_positions, mm_charges)) != pytest.approx(float(vacuum), abs=1e-3)


def environment_energy(model, positions, water, box=None):
    """Model energy with a TIP3P water as the MM environment, selected and switched by molecule."""
    charges = torch.tensor([-0.834, 0.417, 0.417], dtype=torch.float64)
    mm_positions, mm_charges, _ = embedding_environment(
        positions, water, charges, torch.zeros(3, dtype=torch.long), box, cutoff=1.0, switch_width=0.1
    )
    assert float(mm_charges.sum()) == pytest.approx(0.0, abs=1e-12)  # a switched molecule stays neutral
    return energy(model, positions, mm_positions, mm_charges)


def test_water_crossing_the_group_cutoff_is_continuous(model, geometry):
    positions, _, _ = geometry
    vacuum = float(energy(model, positions))
    shape = torch.tensor([[0.0, 0.0, 0.0], [0.06, 0.075, 0.0], [0.06, -0.075, 0.0]], dtype=torch.float64)
    far_side = positions[:, 0].max()
    step = 0.002
    energies, forces = [], []
    for d in np.arange(0.70, 1.20, step):
        water = (shape + torch.tensor([far_side + d, 0.2, 0.2], dtype=torch.float64)).requires_grad_(True)
        e = environment_energy(model, positions, water)
        (gradient,) = torch.autograd.grad(e, water, allow_unused=True)
        energies.append(float(e) - vacuum)
        forces.append(0.0 if gradient is None else float(gradient[:, 0].sum()))
    energies, forces = np.array(energies), np.abs(np.array(forces))
    bound = np.maximum(forces[:-1], forces[1:]) * step * 1.5 + 1e-9
    assert np.all(np.abs(np.diff(energies)) <= bound)  # no jump anywhere, including the switch
    assert energies[-1] == 0.0 and forces[-1] == 0.0  # beyond the cutoff the water is not seen
    assert abs(energies[0]) > 1e-4


def test_switched_environment_forces_match_finite_differences(model, geometry):
    positions, _, _ = geometry
    shape = torch.tensor([[0.0, 0.0, 0.0], [0.06, 0.075, 0.0], [0.06, -0.075, 0.0]], dtype=torch.float64)
    water = shape + torch.tensor([positions[:, 0].max() + 0.95, 0.2, 0.2], dtype=torch.float64)  # in the switch
    x = water.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(environment_energy(model, positions, x), x)
    h = 1e-4  # the absolute energy is ~6e5 kJ/mol: a smaller step loses digits
    for atom, axis in [(0, 0), (1, 1), (2, 0)]:
        plus, minus = water.clone(), water.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = (
            float(environment_energy(model, positions, plus)) - float(environment_energy(model, positions, minus))
        ) / (2 * h)
        assert numeric == pytest.approx(float(gradient[atom, axis]), rel=1e-4, abs=1e-6)


def test_environment_images_molecules_next_to_the_region(model, geometry):
    positions, _, _ = geometry
    box = torch.diag(torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64))
    shape = torch.tensor([[0.0, 0.0, 0.0], [0.06, 0.075, 0.0], [0.06, -0.075, 0.0]], dtype=torch.float64)
    water = shape + positions[0] + torch.tensor([0.4, 0.0, 0.0], dtype=torch.float64)
    reference = environment_energy(model, positions, water, box)
    assert float(environment_energy(model, positions, water + box[0] - 2 * box[2], box)) == pytest.approx(
        float(reference), abs=1e-9
    )


def test_periodic_images_and_box(model, geometry):
    positions, mm_positions, mm_charges = geometry
    box = torch.diag(torch.tensor([3.0, 3.2, 3.4], dtype=torch.float64))
    reference = energy(model, positions, mm_positions, mm_charges, box)
    shifted = mm_positions + box[1] - box[2]
    assert float(energy(model, positions, shifted, mm_charges, box)) == pytest.approx(float(reference), abs=1e-8)


def test_ensemble_mean_and_spread(model, geometry):
    positions, mm_positions, mm_charges = geometry
    args = (positions, ATOMIC_NUMBERS, torch.tensor(0.0), mm_positions, mm_charges, NO_BOX)
    members = model.ensemble_energies(*args)
    mean, std = model.ensemble_mean_std(*args)
    assert members.shape == (3,)
    assert float(mean) == pytest.approx(float(members.mean()))
    assert float(std) == pytest.approx(float(members.std(unbiased=False)))
    assert float(std) > 0


# ---- the reusable battery (tests/physics/model_battery.py) for every architecture and dtype ----

ARCHITECTURES = ["ani", "painn"]
DTYPES = [torch.float64, torch.float32]


@functools.cache
def battery_model(architecture: str, dtype: torch.dtype, long_range: bool = False) -> torch.jit.ScriptModule:
    """A scripted ensemble of two members with weights away from the near-flat initial state."""
    torch.manual_seed(3)
    settings = ModelSettings(
        architecture=architecture, long_range=LongRangeSettings(coulomb=long_range, dispersion=long_range)
    )
    model = build_model(settings, ensemble_size=2)
    with torch.no_grad():
        model.self_energies.copy_(torch.tensor([-1500.0, -100000.0, -140000.0, -197000.0]))
        model.energy_scale.fill_(20.0)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == 3:  # the output heads
                torch.nn.init.normal_(module.weight, std=0.3)
    return torch.jit.script(model.to(dtype))


def factory(architecture: str, long_range: bool = False):
    return lambda dtype: battery_model(architecture, dtype, long_range)


@pytest.mark.parametrize("check", sorted(model_battery.BATTERY))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_battery(architecture, dtype, check):
    model_battery.BATTERY[check](factory(architecture), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_battery_cutoff_continuity(architecture, dtype):
    settings = ModelSettings(architecture=architecture)
    model_battery.check_cutoff_continuity(factory(architecture), dtype, model_cutoff(settings))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_battery_with_long_range_terms(architecture):
    """Explicit Coulomb between predicted charges and dispersion keep forces exact and energies invariant."""
    for check in (model_battery.check_finite_difference_forces, model_battery.check_invariances):
        check(factory(architecture, long_range=True), torch.float64)
    with_terms = model_battery.energy(battery_model(architecture, torch.float64, True), model_battery.geometry()[0])
    without = model_battery.energy(battery_model(architecture, torch.float64), model_battery.geometry()[0])
    assert float(with_terms) != pytest.approx(float(without), abs=1e-3)


class AbsoluteValue(torch.nn.Module):
    """A kinked activation no module-type list knows about: only the second-derivative check can catch it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


def test_no_kinks_check_catches_kinked_models():
    """The battery's kink check fails for a ReLU network and for a custom |x| activation."""
    for activation in (torch.nn.ReLU(), AbsoluteValue()):
        torch.manual_seed(3)
        model = build_model(ModelSettings(), ensemble_size=1).double()
        for network in model.members[0].networks:
            network[1] = activation
            torch.nn.init.normal_(network[-1].weight, std=0.3)
        with pytest.raises(AssertionError, match="kinks|second derivative jumps"):
            model_battery.check_no_kinks(lambda dtype, m=model: m, torch.float64)
