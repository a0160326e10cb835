"""Atomic checkpoints of a run and the file truncation that makes ``--resume`` exact.

A checkpoint is one JSON file written atomically (temporary file + rename), so a ``kill -9`` at any
moment leaves either the previous checkpoint or the new one, never a mix. It holds:

- ``step``: the step the Context was at;
- ``context_checkpoint``: ``Context.createCheckpoint()`` bytes, base64 (positions, velocities, box, step,
  integrator and barostat random-number state: the continuation is exact on the same platform);
- ``state_xml``: the same State as portable XML (used when the binary checkpoint does not load, e.g. on
  another platform; the continuation is then statistically, not bitwise, equivalent);
- ``files``: the byte size of every output file (trajectory, log) after flushing, at that step.

On resume every output file is truncated to its recorded size (what a killed run wrote after the
checkpoint goes), so trajectory and log hold each report exactly once. A DCD's header (frame count,
last step) is rewritten to match.

>>> save_checkpoint("run/checkpoint.json", simulation, {"trajectory.dcd": path})  # doctest: +SKIP
>>> data = load_checkpoint("run/checkpoint.json")  # doctest: +SKIP
>>> restore_files(data, "run"); restore_context(simulation, data)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import openmm
import openmm.app as app

from biomol_nnp.exceptions import ConfigError
from biomol_nnp.io import write_json_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_FORMAT = 1
_DCD_COUNT_OFFSET, _DCD_LAST_STEP_OFFSET, _DCD_FIRST_STEP_OFFSET, _DCD_INTERVAL_OFFSET = 8, 20, 12, 16


def save_checkpoint(
    path: str | os.PathLike, simulation: app.Simulation, files: dict[str, Path], extra: dict[str, Any] | None = None
) -> Path:
    """Write the checkpoint of ``simulation`` and the sizes of ``files`` (name -> path, already flushed)."""
    context = simulation.context
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True, getIntegratorParameters=True)
    data = {
        "format": CHECKPOINT_FORMAT,
        "step": int(simulation.currentStep),
        "time_ps": float(state.getTime().value_in_unit(openmm.unit.picosecond)),
        "files": {name: (file.stat().st_size if file.exists() else 0) for name, file in files.items()},
        "context_checkpoint": base64.b64encode(context.createCheckpoint()).decode("ascii"),
        "state_xml": openmm.XmlSerializer.serialize(state),
        **(extra or {}),
    }
    write_json_atomic(path, data)
    logger.debug("checkpoint at step %d -> %s", data["step"], path)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint written by :func:`save_checkpoint`; ConfigError if there is none (``--resume`` needs it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"--resume was given but {str(path)!r} does not exist: this output folder has no checkpoint; run "
            "without --resume to start, or give the output folder of the run to continue"
        )
    data = json.loads(path.read_text())
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{str(path)!r} has checkpoint format {data.get('format')!r}; expected {CHECKPOINT_FORMAT}")
    return data


def _patch_dcd_header(path: Path, frames: int) -> None:
    """Set the frame count and last step in a DCD header to ``frames`` (after truncation)."""
    with path.open("r+b") as handle:
        handle.seek(_DCD_FIRST_STEP_OFFSET)
        first, interval = struct.unpack("<ii", handle.read(8))
        handle.seek(_DCD_COUNT_OFFSET)
        handle.write(struct.pack("<i", frames))
        handle.seek(_DCD_LAST_STEP_OFFSET)
        handle.write(struct.pack("<i", first + (frames - 1) * interval))


def dcd_frame_count(path: Path, n_atoms: int, periodic: bool) -> int:
    """Number of complete frames in a DCD written by OpenMM (from the file size, not the header)."""
    with path.open("rb") as handle:
        handle.seek(92)
        comments = struct.unpack("<i", handle.read(4))[0]
    header = 104 + comments + 8  # natoms record at 104 + comments, then its end marker
    frame = (48 + 8 if periodic else 0) + 3 * (4 * n_atoms + 8)
    return max(0, (path.stat().st_size - header) // frame)


def restore_files(data: dict[str, Any], folder: str | os.PathLike, n_atoms: int, periodic: bool) -> None:
    """Truncate each output file to its size at the checkpoint; fix DCD headers."""
    folder = Path(folder)
    for name, size in data["files"].items():
        path = folder / name
        if not path.exists():
            if size:
                raise ConfigError(
                    f"{str(path)!r} is missing but the checkpoint recorded {size} bytes; restore it or start again"
                )
            continue
        if path.stat().st_size < size:
            raise ConfigError(
                f"{str(path)!r} has {path.stat().st_size} bytes, fewer than the {size} the checkpoint recorded; "
                "the file was changed after the checkpoint: restore it or start again without --resume"
            )
        with path.open("r+b") as handle:
            handle.truncate(size)
        if path.suffix == ".dcd" and size:
            _patch_dcd_header(path, dcd_frame_count(path, n_atoms, periodic))
        logger.info("resume: %s truncated to %d bytes (step %d)", path, size, data["step"])


def restore_context(simulation: app.Simulation, data: dict[str, Any]) -> None:
    """Load the checkpoint into ``simulation``; falls back to the portable State XML with a warning."""
    try:
        simulation.context.loadCheckpoint(base64.b64decode(data["context_checkpoint"]))
    except Exception as err:  # another platform or OpenMM version  # noqa: BLE001
        logger.warning("binary checkpoint not loadable (%s); continuing from the saved State instead", err)
        simulation.context.setState(openmm.XmlSerializer.deserialize(data["state_xml"]))
        simulation.currentStep = int(data["step"])
