"""Boundary of an ML/QM region inside a covalent structure: cut bonds, link atoms, boundary charges.

One place for the rules that QM labelling (cluster carving) and the runtime region must share:

- a region may cut only single C-C or C-N bonds (the amide C-N counts, as its bond order is 1 in the
  topology); cuts through rings, through S-S (disulfide) bonds or through any other element pair are
  refused with a message that names the bond;
- each cut bond gets a hydrogen cap (link atom) on the line from the region atom to the outside atom,
  at the X-H bond length of the region atom's element;
- the MM charge of the outside (boundary) atom is moved, in equal parts, to its other MM neighbours,
  so the total charge is kept and the link hydrogen is not over-polarised by a charge 0.1 nm away.

>>> # doctest: +SKIP
>>> cuts = find_cut_bonds(topology, region_atoms)
>>> caps = link_atom_positions(positions_nm, cuts)
>>> mm_charges = redistribute_boundary_charges(topology, charges, cuts, region_atoms)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError

LINK_BOND_LENGTH_NM = {6: 0.109, 7: 0.101}
"""X-H bond length of a link hydrogen on a region carbon or nitrogen, nm (typical C-H and N-H)."""

CUTTABLE_PAIRS = {frozenset({6}), frozenset({6, 7})}
"""Element pairs a region may cut: C-C and C-N single bonds."""


@dataclass(frozen=True)
class CutBond:
    """A covalent bond from a region atom (``inside``) to an atom outside the region (``outside``)."""

    inside: int
    outside: int


def _bond_name(atom: Any) -> str:
    return f"{atom.name}({atom.residue.name}{atom.residue.id})"


def find_cut_bonds(topology: Any, region_atoms: Iterable[int]) -> list[CutBond]:
    """The bonds that leave the region, each checked to be cuttable.

    Raises
    ------
    InputError
        A cut through a ring, a disulfide, or a bond other than single C-C / C-N (the message names it).
    """
    region = set(int(i) for i in region_atoms)
    atoms = list(topology.atoms())
    neighbours: dict[int, set[int]] = {a.index: set() for a in atoms}
    for a, b in topology.bonds():
        neighbours[a.index].add(b.index)
        neighbours[b.index].add(a.index)
    cuts = []
    for a, b in topology.bonds():
        if (a.index in region) == (b.index in region):
            continue
        inside, outside = (a, b) if a.index in region else (b, a)
        name = f"{_bond_name(inside)}-{_bond_name(outside)}"
        pair = frozenset({inside.element.atomic_number, outside.element.atomic_number})
        if pair == frozenset({16}):
            raise InputError(f"the region cuts the disulfide bond {name}; put both cysteines in the region or neither")
        if pair not in CUTTABLE_PAIRS:
            raise InputError(
                f"the region cuts the bond {name}; only single C-C or C-N bonds can be capped with link atoms. "
                "Move the boundary to a C-C bond (for example CA-CB or CA-C) or include the whole residue"
            )
        if _connected_without(neighbours, inside.index, outside.index):
            raise InputError(
                f"the region cuts the bond {name}, which is part of a ring; include the whole ring in the region "
                "or leave it out entirely"
            )
        cuts.append(CutBond(inside.index, outside.index))
    return cuts


def _connected_without(neighbours: dict[int, set[int]], start: int, goal: int) -> bool:
    """Whether ``goal`` is reachable from ``start`` without the direct bond between them (a ring)."""
    seen, stack = {start}, [n for n in neighbours[start] if n != goal]
    seen.update(stack)
    while stack:
        atom = stack.pop()
        if atom == goal:
            return True
        for n in neighbours[atom]:
            if n not in seen and not (atom == start and n == goal):
                seen.add(n)
                stack.append(n)
    return False


def link_atom_positions(
    positions_nm: np.ndarray, cuts: Sequence[CutBond], atomic_numbers: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Hydrogen caps [C, 3] nm on each cut bond, at the X-H length of the region atom's element."""
    caps = np.zeros((len(cuts), 3))
    for k, cut in enumerate(cuts):
        bond = positions_nm[cut.outside] - positions_nm[cut.inside]
        length = LINK_BOND_LENGTH_NM[int(atomic_numbers[cut.inside])]
        caps[k] = positions_nm[cut.inside] + bond / np.linalg.norm(bond) * length
    return caps


def redistribute_boundary_charges(
    topology: Any, charges: np.ndarray, cuts: Sequence[CutBond], region_atoms: Iterable[int]
) -> np.ndarray:
    """A copy of ``charges`` [A] e with each boundary atom's charge moved equally to its MM neighbours.

    The total charge is unchanged. A boundary atom with no other MM neighbour keeps its charge.
    """
    region = set(int(i) for i in region_atoms)
    out = np.array(charges, dtype=float, copy=True)
    neighbours: dict[int, list[int]] = {}
    for a, b in topology.bonds():
        neighbours.setdefault(a.index, []).append(b.index)
        neighbours.setdefault(b.index, []).append(a.index)
    for cut in cuts:
        receivers = [n for n in neighbours.get(cut.outside, []) if n not in region]
        if receivers:
            out[receivers] += out[cut.outside] / len(receivers)
            out[cut.outside] = 0.0
    return out
