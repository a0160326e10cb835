"""The MM environment an embedded region sees: whole molecules within a cutoff, smoothly switched.

Electrostatic embedding with an atom-by-atom cutoff breaks neutral molecules into artificial
monopoles near the cutoff (measured on solvated alanine dipeptide: hundreds of kJ/mol of error
against GFN2-xTB with the same point charges). Here the cutoff acts on whole molecules (charge
groups): a molecule is included when its closest atom is within ``cutoff`` of the closest region
atom, and all of its charges are scaled by the same smooth switch ``S(d_min)`` (1 below
``cutoff - switch_width``, 0 at ``cutoff``, quintic in between), so a neutral molecule stays neutral,
the energy is continuous as molecules enter or leave, and the forces from the switch come from the
same autograd. Each selected molecule is translated by the lattice vector that brings its atoms to
their minimum image next to the region, exactly as the labelled point charges were placed
(`biomol_nnp.qm.sampling.select_point_charges`), so the model needs no box.

>>> import torch
>>> region = torch.zeros(1, 3, dtype=torch.float64)
>>> water = torch.tensor([[0.5, 0.0, 0.0], [0.55, 0.08, 0.0], [0.55, -0.08, 0.0]], dtype=torch.float64)
>>> positions, charges, kept = embedding_environment(region, water, torch.tensor([-0.8, 0.4, 0.4],
...     dtype=torch.float64), torch.tensor([0, 0, 0]), None, cutoff=1.0, switch_width=0.1)
>>> charges.tolist()
[-0.8, 0.4, 0.4]
"""

import torch

from biomol_nnp.models.embedding import minimum_image


def molecule_switch(distances: torch.Tensor, cutoff: float, switch_width: float) -> torch.Tensor:
    """Quintic switch: 1 below ``cutoff - switch_width``, 0 beyond ``cutoff``, C2-smooth in between."""
    x = ((distances - (cutoff - switch_width)) / switch_width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)


def embedding_environment(
    region_positions: torch.Tensor,
    mm_positions: torch.Tensor,
    mm_charges: torch.Tensor,
    molecule_index: torch.Tensor,
    box: torch.Tensor | None,
    cutoff: float,
    switch_width: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Imaged positions [M', 3] nm, switched charges [M'] e and candidate indices [M'] of the kept atoms.

    Parameters
    ----------
    region_positions
        Region atoms [N, 3] nm, whole (not split across the box).
    mm_positions, mm_charges
        Candidate MM atoms [A, 3] nm and their charges [A] e.
    molecule_index
        Molecule (charge group) of each MM atom [A], integers from 0.
    box
        Periodic box vectors [3, 3] nm (rows, OpenMM reduced form) or None.
    cutoff, switch_width
        Group cutoff and the width of the switch below it, nm.
    """
    with torch.no_grad():  # selection, shifts and weights of the molecules that are fully in or out
        raw = mm_positions.unsqueeze(1) - region_positions.unsqueeze(0)  # [A, N, 3]
        wrapped = minimum_image(raw, box) if box is not None else raw
        atom_min, nearest = torch.linalg.norm(wrapped, dim=-1).min(dim=1)
        molecules = int(molecule_index.max()) + 1 if molecule_index.numel() else 0
        molecule_min = torch.full((molecules,), float("inf"), dtype=atom_min.dtype)
        molecule_min = molecule_min.scatter_reduce(0, molecule_index, atom_min, reduce="amin", include_self=True)
        rows = torch.arange(len(mm_positions))
        shifts = (wrapped - raw)[rows, nearest]  # a lattice vector per atom
        # all atoms of a molecule take the shift of the molecule's closest atom
        closest_atom = torch.full((molecules,), -1, dtype=torch.long)
        order = torch.argsort(atom_min, descending=True)
        closest_atom[molecule_index[order]] = order  # the last write per molecule is its closest atom
        shifts = shifts[closest_atom[molecule_index]]
        keep = (molecule_min[molecule_index] < cutoff).nonzero().squeeze(1)
    imaged = mm_positions.index_select(0, keep) + shifts.index_select(0, keep)
    kept_molecules = molecule_index.index_select(0, keep)
    # only molecules inside the switching shell need the distance with its gradient
    in_shell = molecule_min[kept_molecules] > cutoff - switch_width
    weights = torch.ones(len(keep), dtype=mm_positions.dtype)
    if bool(in_shell.any()):
        shell = in_shell.nonzero().squeeze(1)
        distances = torch.linalg.norm(
            imaged.index_select(0, shell).unsqueeze(1) - region_positions.unsqueeze(0), dim=-1
        )
        shell_atom_min = distances.min(dim=1).values
        shell_molecules = kept_molecules.index_select(0, shell)
        shell_min = torch.full((molecules,), float("inf"), dtype=shell_atom_min.dtype)
        shell_min = shell_min.scatter_reduce(0, shell_molecules, shell_atom_min, reduce="amin", include_self=True)
        weights = weights.index_put((shell,), molecule_switch(shell_min[shell_molecules], cutoff, switch_width))
    return imaged, mm_charges.index_select(0, keep) * weights, keep
