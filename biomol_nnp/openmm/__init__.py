"""OpenMM integration: the openmm-ml potential ``biomol-nnp``, the ``electrostatic`` embedding (with
link-hydrogen caps, :mod:`.link_atoms`), the force backends, the water-partition restraints
(:mod:`.restraints`) and the per-term energies reporters use (:mod:`.energy_terms`).

openmm-ml loads its entry points (our potential and embedding modules) when ``openmmml`` is first
imported. Importing it here, before any of our submodules, keeps that scan from meeting a half-imported
plugin module when a user imports ``biomol_nnp.openmm.potential`` before ``openmmml``.
"""

import openmmml  # noqa: F401  (import order: see the module docstring)
