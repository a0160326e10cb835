"""Analysis of sampling runs: free-energy surfaces (``free_energy``), structure and dielectric analyses.

Heavy modules (MDAnalysis, pymbar, matplotlib) are imported where they are used.
"""
