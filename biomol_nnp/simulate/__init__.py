"""biomol_nnp.simulate"""
