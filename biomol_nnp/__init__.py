"""biomol-nnp: neural network potentials with electrostatic embedding for NNP/MM in OpenMM."""

__version__ = "0.1.0"
