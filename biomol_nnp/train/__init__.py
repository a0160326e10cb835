"""biomol_nnp.train"""
