"""Exceptions raised for bad input and failed calculations.

Each subclasses a builtin (`ValueError` or `RuntimeError`) so callers that catch the builtin
keep working. Messages name the argument, the value received, what is allowed and a hint.
"""


class BiomolNNPError(Exception):
    """Base class of every error raised by biomol-nnp."""


class InputError(BiomolNNPError, ValueError):
    """An argument, file or setting that cannot be used as given."""


class ConfigError(InputError):
    """A settings file or settings object that is invalid or inconsistent."""


class ModelFileError(InputError):
    """A file that is not a deployed biomol-nnp model, or a model that cannot describe a region."""


class QMCalculationError(BiomolNNPError, RuntimeError):
    """A quantum-chemistry calculation that failed (no SCF convergence, engine error)."""


class SimulationError(BiomolNNPError, RuntimeError):
    """A simulation that cannot go on (NaN energies, exploded coordinates)."""
