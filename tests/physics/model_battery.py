"""Reusable physics battery for any deployed-contract model (after nequip's ``model_tests_basic``).

Every check takes ``make_model(dtype) -> module`` (a TorchScript or eager module following the
deployed-model contract of DESIGN.md, its weights and buffers in ``dtype``) and ``dtype``; inputs are
float64 as the contract says, the model computes in its own dtype, so tolerances depend on ``dtype``.
A new architecture gets the whole battery by adding a factory to `tests/physics/test_model_physics.py`.

Checks: finite-difference forces on region and MM atoms; rotation, translation and permutation
invariance; size extensivity (two copies beyond the cutoff give twice the energy); continuity of energy
and forces as an atom crosses the cutoff; no kinks (no ReLU-like modules, smooth second derivative);
charges summing to the total charge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

ModelFactory = Callable[[torch.dtype], Any]
"""``make_model(dtype)`` -> a module following the deployed-model contract (scripted or eager)."""

ATOMIC_NUMBERS = torch.tensor([6, 1, 1, 1, 6, 8, 7, 1, 6, 1])
NO_BOX = torch.zeros(0, 3, dtype=torch.float64)
KINKED_MODULES = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.PReLU,
    torch.nn.RReLU,
    torch.nn.ELU,
    torch.nn.CELU,
    torch.nn.SELU,
    torch.nn.Hardtanh,
    torch.nn.Hardsigmoid,
    torch.nn.Hardswish,
    torch.nn.Hardshrink,
    torch.nn.Softshrink,
    torch.nn.Threshold,
)
"""Activations with a kink (first- or second-derivative jump); ELU/CELU/SELU have a second-derivative jump."""

# per dtype: finite-difference step (nm), relative and absolute force tolerance (kJ/mol/nm),
# relative energy tolerance of exact identities
TOLERANCES = {
    torch.float64: {"step": 1e-5, "force_rtol": 1e-5, "force_atol": 1e-4, "energy_rtol": 1e-10},
    torch.float32: {"step": 2e-3, "force_rtol": 3e-2, "force_atol": 1.0, "energy_rtol": 2e-6},
}


def geometry(seed: int = 7, count: int = len(ATOMIC_NUMBERS)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A compact cloud of region atoms (no two closer than 0.1 nm) and a few MM charges around it."""
    rng = np.random.default_rng(seed)
    points: list[np.ndarray] = []
    while len(points) < count:
        candidate = rng.uniform(0, 0.45, 3)
        if all(np.linalg.norm(candidate - p) > 0.1 for p in points):
            points.append(candidate)
    mm = rng.uniform(-0.5, 1.0, (12, 3))
    mm = mm[np.min(np.linalg.norm(mm[:, None] - np.array(points)[None], axis=-1), axis=1) > 0.2]
    return torch.tensor(np.array(points)), torch.tensor(mm), torch.tensor(rng.normal(0, 0.5, len(mm)))


def energy(
    model: torch.nn.Module,
    positions: torch.Tensor,
    mm_positions: torch.Tensor | None = None,
    mm_charges: torch.Tensor | None = None,
    numbers: torch.Tensor = ATOMIC_NUMBERS,
    total_charge: float = 0.0,
    box: torch.Tensor = NO_BOX,
) -> torch.Tensor:
    """The model's energy [] kJ/mol with the contract's argument order (no MM charges when None)."""
    if mm_positions is None or mm_charges is None:
        mm_positions, mm_charges = torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return model(positions, numbers, torch.tensor(total_charge, dtype=torch.float64), mm_positions, mm_charges, box)


def random_rotation(seed: int) -> torch.Tensor:
    """A proper rotation matrix [3, 3] (float64)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return torch.tensor(q if np.linalg.det(q) > 0 else -q)


def check_finite_difference_forces(make_model: ModelFactory, dtype: torch.dtype) -> None:
    """Autograd forces on region and MM atoms equal central finite differences of the energy."""
    model, tol = make_model(dtype), TOLERANCES[dtype]
    positions, mm_positions, mm_charges = geometry()
    x, y = positions.clone().requires_grad_(True), mm_positions.clone().requires_grad_(True)
    grad_x, grad_y = torch.autograd.grad(energy(model, x, y, mm_charges), (x, y))
    h = tol["step"]
    for name, tensor, grad in (("region", positions, grad_x), ("mm", mm_positions, grad_y)):
        for atom, axis in [(0, 0), (3, 1), (len(tensor) - 1, 2)]:
            plus, minus = tensor.clone(), tensor.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            if name == "region":
                e_plus, e_minus = (
                    energy(model, plus, mm_positions, mm_charges),
                    energy(model, minus, mm_positions, mm_charges),
                )
            else:
                e_plus, e_minus = (
                    energy(model, positions, plus, mm_charges),
                    energy(model, positions, minus, mm_charges),
                )
            numeric = float(e_plus - e_minus) / (2 * h)
            analytic = float(grad[atom, axis])
            bound = tol["force_atol"] + tol["force_rtol"] * abs(analytic)
            assert abs(numeric - analytic) <= bound, (
                f"{name} atom {atom} axis {axis}: finite difference {numeric} vs autograd {analytic} ({dtype})"
            )


def check_invariances(make_model: ModelFactory, dtype: torch.dtype) -> None:
    """Energy unchanged by a rotation + translation of everything and by permuting same-element atoms."""
    model, tol = make_model(dtype), TOLERANCES[dtype]
    positions, mm_positions, mm_charges = geometry()
    reference = float(energy(model, positions, mm_positions, mm_charges))
    bound = tol["energy_rtol"] * max(abs(reference), 1.0) + (1e-9 if dtype == torch.float64 else 1e-3)
    rotation, shift = random_rotation(1), torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    moved = float(energy(model, positions @ rotation.T + shift, mm_positions @ rotation.T + shift, mm_charges))
    assert abs(moved - reference) <= bound, f"rotation/translation changed the energy: {reference} -> {moved}"
    order = torch.arange(len(ATOMIC_NUMBERS))
    order[[1, 2, 3, 7, 9]] = torch.tensor([9, 7, 1, 3, 2])  # shuffle the hydrogens
    assert torch.equal(ATOMIC_NUMBERS[order], ATOMIC_NUMBERS)
    permuted = float(energy(model, positions[order], mm_positions, mm_charges))
    assert abs(permuted - reference) <= bound, f"permuting hydrogens changed the energy: {reference} -> {permuted}"
    mirrored = torch.flip(torch.arange(len(mm_charges)), (0,))
    reordered = float(energy(model, positions, mm_positions[mirrored], mm_charges[mirrored]))
    assert abs(reordered - reference) <= bound, "reordering MM charges changed the energy"


def check_size_extensivity(make_model: ModelFactory, dtype: torch.dtype) -> None:
    """Two copies of a region 5 nm apart (beyond every cutoff, no MM charges) have twice the energy."""
    model, tol = make_model(dtype), TOLERANCES[dtype]
    positions, _, _ = geometry()
    single = float(energy(model, positions))
    apart = torch.cat([positions, positions + torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)])
    double = float(energy(model, apart, numbers=torch.cat([ATOMIC_NUMBERS, ATOMIC_NUMBERS])))
    assert abs(double - 2 * single) <= 2 * tol["energy_rtol"] * abs(single) + 1e-9, (
        f"two separated copies: {double} != 2 x {single}"
    )


def check_cutoff_continuity(make_model: ModelFactory, dtype: torch.dtype, cutoff: float) -> None:
    """An atom leaving along x: energy and force are continuous through the cutoff and zero beyond it.

    Beyond the cutoff (nm) of the nearest atom the leaving atom does not interact: the energy equals the
    sum of the two parts computed separately and its force is exactly zero. Approaching the cutoff from
    inside, the force goes to zero linearly (cosine cutoff), so no jump is left at the crossing.
    """
    model = make_model(dtype)
    positions, _, _ = geometry(count=5)
    numbers = ATOMIC_NUMBERS[:5]
    edge = positions[:, 0].max()
    separate = float(energy(model, positions, numbers=numbers)) + float(
        energy(model, torch.zeros(1, 3, dtype=torch.float64), numbers=torch.tensor([1]))
    )
    anchor = positions[int(positions[:, 0].argmax())]

    def energy_force(distance: float) -> tuple[float, float]:
        atom = (anchor + torch.tensor([distance, 0.0, 0.0], dtype=torch.float64)).unsqueeze(0)
        atom.requires_grad_(True)
        e = energy(model, torch.cat([positions, atom]), numbers=torch.cat([numbers, torch.tensor([1])]))
        (gradient,) = torch.autograd.grad(e, atom)
        return float(e), float(gradient.norm())

    assert float(edge) == float(anchor[0])
    beyond = [energy_force(cutoff + d) for d in (1e-6, 1e-3, 0.05)]
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    for e, f in beyond:
        assert abs(e - separate) <= tol and f == 0.0, f"beyond the cutoff the atom still interacts: {e - separate}, {f}"
    inside = [energy_force(cutoff - d) for d in (1e-2, 1e-3, 1e-4)]
    forces = [f for _, f in inside]
    assert forces[0] > 0, "the leaving atom does not interact inside the cutoff; the path tests nothing"
    assert forces[2] <= 0.05 * forces[0] + (1e-6 if dtype == torch.float64 else 1e-2), (
        f"force does not vanish at the cutoff: {forces}"
    )
    assert abs(inside[2][0] - separate) <= abs(inside[0][0] - separate) + tol, "energy jumps at the cutoff"


def check_no_kinks(make_model: ModelFactory, dtype: torch.dtype) -> None:
    """No ReLU-like module; the energy's second derivative along a path inside all cutoffs is smooth.

    Along a 0.02 nm path of one atom (every pair staying on one side of every cutoff) the second
    derivative from finite differences must change by less than 10% of its range between neighbouring
    points: a kink or a second-derivative jump shows as a spike in the third difference.
    """
    model = make_model(dtype)
    kinked = [type(m).__name__ for m in model.modules() if isinstance(m, KINKED_MODULES)]
    kinked += [name for name in _scripted_module_types(model) if name in {k.__name__ for k in KINKED_MODULES}]
    assert not kinked, f"modules with kinks: {sorted(set(kinked))}"
    positions = torch.tensor(
        [[0.0, 0.0, 0.0], [0.11, 0.0, 0.0], [-0.04, 0.1, 0.0], [-0.04, -0.05, 0.09], [0.15, 0.1, 0.05]],
        dtype=torch.float64,
    )
    numbers = torch.tensor([6, 1, 1, 1, 8])
    h = 2e-4 if dtype == torch.float64 else 2e-3
    steps = np.arange(0.0, 0.02, h)
    values = []
    for s in steps:
        moved = positions.clone()
        moved[4] += torch.tensor([s, 0.5 * s, -0.3 * s], dtype=torch.float64)
        values.append(float(energy(model, moved, numbers=numbers)))
    second = np.diff(np.array(values), 2) / h**2
    spread = float(np.ptp(second)) + 1e-12
    if dtype == torch.float64:
        assert np.max(np.abs(np.diff(second))) <= 0.1 * spread + 1e-6, "the second derivative jumps"
    assert np.all(np.isfinite(second))


def _scripted_module_types(model: torch.nn.Module) -> list[str]:
    """Original class names of the submodules of a TorchScript module (empty for an eager one)."""
    names = []
    for module in model.modules():
        if isinstance(module, torch.jit.ScriptModule):
            names.append(module.original_name)
    return names


def check_charges(make_model: ModelFactory, dtype: torch.dtype) -> None:
    """Per-atom charges sum to the total charge for -1, 0 and +1 e."""
    model = make_model(dtype)
    positions, _, _ = geometry()
    for total in (-1.0, 0.0, 1.0):
        charges = model.charges(positions, ATOMIC_NUMBERS, torch.tensor(total, dtype=torch.float64))
        assert abs(float(charges.sum()) - total) <= (1e-10 if dtype == torch.float64 else 1e-5)


BATTERY = {
    "finite_difference_forces": check_finite_difference_forces,
    "invariances": check_invariances,
    "size_extensivity": check_size_extensivity,
    "no_kinks": check_no_kinks,
    "charges": check_charges,
}
"""Checks that need only a model factory and a dtype (the cutoff check also needs the cutoff)."""
