"""Exceptions raised by :mod:`forcefield_refit`.

All subclass :class:`ValueError` so callers that already catch bad input keep working.
Messages name the argument, the value received, what is allowed, and a hint.
"""

from __future__ import annotations


class RefitInputError(ValueError):
    """Invalid user input to a refit function (shape, range, unknown name, empty grid)."""


class RefitMatchError(ValueError):
    """A torsion or atom-type quadruple requested by the caller was not found in the molecule/System."""
