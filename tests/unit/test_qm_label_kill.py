"""Killing a Dask labeling job loses only the tasks in flight: the rerun finishes with every configuration once.

`biomol-nnp label` runs in a subprocess (its own session, so the Dask worker processes it starts can be
killed with it) on 40 water-dimer configurations with one worker. Once a copy of the store shows a few
complete records, the whole process group gets SIGKILL. The same command is then run again.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from biomol_nnp.qm.configurations import write_configurations
from biomol_nnp.qm.labels import LabelStore, config_hash
from biomol_nnp.qm.scans import water_dimer_scan

pytest.importorskip("xtb")
pytest.importorskip("distributed")

N_CONFIGS = 40
KILL_AFTER = 3
"""Complete records in the store before the kill."""
POLL_S = 0.02
START_TIMEOUT_S = 60.0


def _complete_records(store: Path, scratch: Path) -> dict[str, str]:
    """``config_hash -> record_hash`` of the complete records of a byte copy of ``store`` (the writer is not disturbed).

    Copying the bytes takes no HDF5 lock, so the running job never sees a reader; a copy caught in the
    middle of a write may be unreadable, which counts as no records yet.
    """
    import h5py

    try:
        shutil.copyfile(store, scratch)
        with h5py.File(scratch, "r", locking=False) as h5:
            return {
                str(g.attrs["config_hash"]): str(g.attrs["record_hash"])
                for g in h5["configurations"].values()
                if "record_hash" in g.attrs
            }
    except (OSError, KeyError):
        return {}


def _label_command(configs: Path, store: Path) -> list[str]:
    return [
        sys.executable, "-m", "biomol_nnp.cli", "--no-progress", "-q",
        "label", str(configs), "-o", str(store), "--method", "GFN2-xTB", "--workers", "1", "--chunk-size", "1",
    ]  # fmt: skip


def _kill_during_labeling(configs: Path, store: Path, scratch: Path) -> dict[str, str]:
    """Start the job, SIGKILL its process group after KILL_AFTER records; return the records seen before."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _label_command(configs, store), start_new_session=True, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if store.exists():
                seen = _complete_records(store, scratch)
                if len(seen) >= KILL_AFTER:
                    break
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the job and the Dask processes it started
        _, stderr = process.communicate(timeout=30)
    if len(seen) < KILL_AFTER:
        pytest.fail(f"the job ended (rc {process.returncode}) before {KILL_AFTER} records: {stderr.decode()[-2000:]}")
    return seen


def test_killed_dask_labeling_job_resumes_without_duplicates_or_losses(tmp_path) -> None:
    configs_path = tmp_path / "configs.h5"
    configs = water_dimer_scan(np.linspace(0.25, 0.45, 8), (-40.0, -20.0, 0.0, 20.0, 40.0))
    assert len(configs) == N_CONFIGS
    write_configurations(configs, configs_path)
    expected = {config_hash(c) for c in configs}
    store_path = tmp_path / "labels.h5"

    for _attempt in range(3):  # a job that outruns the poll on a fast machine is started again on a new store
        seen = _kill_during_labeling(configs_path, store_path, tmp_path / "copy.h5")
        if len(seen) < N_CONFIGS:
            break
        store_path.unlink()
    assert KILL_AFTER <= len(seen) < N_CONFIGS, "the kill never landed while the job was running"

    # the killed store is readable, keeps what was written and holds no duplicate
    store = LabelStore(store_path)
    before = store.records()
    hashes = [r["config_hash"] for r in before]
    assert len(hashes) == len(set(hashes)) and set(hashes) <= expected
    assert {r["config_hash"]: r["record_hash"] for r in before}.items() >= seen.items()
    assert {r["status"] for r in before} == {"ok"}

    # the same command again: the lock of the dead job is taken over and only the rest is labeled
    rerun = subprocess.run(_label_command(configs_path, store_path), capture_output=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert "removing stale lock" in rerun.stderr.decode()
    after = LabelStore(store_path).records()
    hashes = [r["config_hash"] for r in after]
    assert len(hashes) == N_CONFIGS == len(set(hashes)) and set(hashes) == expected  # each once, none lost
    assert {r["status"] for r in after} == {"ok"}
    kept = {r["index"]: r["record_hash"] for r in before}
    assert {r["index"]: r["record_hash"] for r in after if r["index"] in kept} == kept  # earlier records untouched
    assert LabelStore(store_path).statuses() == {"ok": N_CONFIGS, "failed": 0}
