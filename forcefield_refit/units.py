"""Named unit conversion factors used by :mod:`forcefield_refit`.

Inside the package energies are kJ/mol, lengths nm and angles radians (or degrees where an
argument name says ``_deg``). Only the file writers/readers convert, through these constants.

Sources
-------
- ``KCAL_TO_KJ``: thermochemical calorie, 1 cal = 4.184 J exactly (NIST SP 811, B.8).
"""

from __future__ import annotations

#: kcal/mol -> kJ/mol (exact, thermochemical calorie).
KCAL_TO_KJ: float = 4.184

#: kJ/mol -> kcal/mol.
KJ_TO_KCAL: float = 1.0 / KCAL_TO_KJ

#: nm -> Angstrom (exact, 1 nm = 10 A).
NM_TO_ANGSTROM: float = 10.0

#: Angstrom -> nm.
ANGSTROM_TO_NM: float = 0.1

#: Molar gas constant R in kJ/(mol K) (CODATA 2018, exact: N_A k_B = 8.314462618 J/(mol K)).
MOLAR_GAS_CONSTANT_KJ: float = 8.314462618e-3
