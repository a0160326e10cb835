"""forcefield_refit: project learned torsion energies into classical force-field files."""
