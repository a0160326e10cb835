"""biomol_nnp.openmm"""
