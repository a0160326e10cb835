"""biomol_nnp.qm"""
