"""Logging configuration used by the command-line entry points only (the library never configures handlers)."""

import logging


def configure_logging(verbosity: int = 0) -> None:
    """Send biomol-nnp and forcefield-refit logs to stderr; ``verbosity`` 0 = INFO, 1+ = DEBUG, -1 = WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in ("biomol_nnp", "forcefield_refit"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = [handler]
