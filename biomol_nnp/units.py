"""Named unit conversion constants.

Inside the package everything is in OpenMM units: nm, ps, kJ/mol, elementary charge, K.
Other units exist only at the edges (QM engines, file writers) and are converted with these
constants, never with inline numbers.

Sources
-------
CODATA 2018 recommended values (https://physics.nist.gov/cuu/Constants/):
Hartree energy 4.3597447222071e-18 J, Bohr radius 0.529177210903e-10 m,
Avogadro constant 6.02214076e23 /mol (exact), elementary charge 1.602176634e-19 C (exact),
vacuum permittivity 8.8541878128e-12 F/m. The thermochemical calorie is exactly 4.184 J.
"""

import math

AVOGADRO = 6.02214076e23
"""Avogadro constant, 1/mol (exact, SI 2019)."""

HARTREE_TO_KJ_PER_MOL = 4.3597447222071e-18 * AVOGADRO / 1000.0
"""1 Hartree in kJ/mol (CODATA 2018), 2625.4996394799."""

BOHR_TO_NM = 0.0529177210903
"""1 Bohr in nm (CODATA 2018)."""

NM_TO_BOHR = 1.0 / BOHR_TO_NM

HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM = HARTREE_TO_KJ_PER_MOL / BOHR_TO_NM
"""Force or gradient conversion from Hartree/Bohr to kJ/mol/nm."""

ANGSTROM_TO_NM = 0.1
NM_TO_ANGSTROM = 10.0

KCAL_TO_KJ = 4.184
"""Thermochemical calorie, exact."""

KJ_TO_KCAL = 1.0 / KCAL_TO_KJ

EV_TO_KJ_PER_MOL = 1.602176634e-19 * AVOGADRO / 1000.0
"""1 eV in kJ/mol (exact from SI 2019 constants), 96.4853321233."""

ELECTROSTATIC_CONSTANT = 1.602176634e-19**2 * AVOGADRO / (4.0 * math.pi * 8.8541878128e-12) / 1000.0 * 1e9
"""Coulomb constant 1/(4 pi eps0) in kJ/mol nm e^-2 (CODATA 2018), 138.935457..."""

DEG_TO_RAD = math.pi / 180.0
RAD_TO_DEG = 180.0 / math.pi

ELEMENTARY_CHARGE_C = 1.602176634e-19
"""Elementary charge, C (exact, SI 2019)."""

VACUUM_PERMITTIVITY_F_PER_M = 8.8541878128e-12
"""Vacuum permittivity eps0, F/m (CODATA 2018)."""

BOLTZMANN_J_PER_K = 1.380649e-23
"""Boltzmann constant, J/K (exact, SI 2019)."""

NM_TO_M = 1e-9
"""1 nm in m."""
