"""biomol_nnp.models"""
