"""Label store: provenance and hashes per record, writer lock, foreign/corrupted files, extxyz round trip."""

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.engine import QMResult
from biomol_nnp.qm.extxyz import export_extxyz, import_extxyz
from biomol_nnp.qm.labels import LabelStore, config_hash
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.qm.store_lock import StoreLock
from biomol_nnp.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL

WATER_NM = np.array([[0.0, 0.0, -0.00657], [0.07590, 0.0, 0.05214], [-0.07590, 0.0, 0.05214]])


def config(frame: int, n_mm: int = 2) -> Configuration:
    return Configuration(
        atomic_numbers=np.array([8, 1, 1]),
        positions=WATER_NM + 0.001 * frame,
        mm_positions=np.array([[0.3, 0.0, 0.0], [0.0, 0.3, 0.1]])[:n_mm],
        mm_charges=np.array([-0.8, 0.4])[:n_mm],
        mm_numbers=np.array([8, 1])[:n_mm],
        source="test",
        trajectory_id=frame % 2,
        frame=frame,
    )


def result(n: int, m: int, seed: int) -> QMResult:
    rng = np.random.default_rng(seed)
    return QMResult(
        float(rng.normal()) * 100,
        rng.normal(size=(n, 3)),
        rng.normal(size=(m, 3)),
        rng.normal(size=n),
        rng.normal(size=3),
    )


def test_records_carry_method_basis_engine_and_hashes(tmp_path) -> None:
    store = LabelStore(tmp_path / "labels.h5")
    c = config(0)
    store.append(
        c,
        result(3, 0, 1),
        result(3, 2, 2),
        "ok",
        method="B3LYP-D3BJ",
        basis="def2-SVP (RI)",
        engine="pyscf",
        engine_version="2.14.0",
    )
    store.append(config(1), result(3, 0, 3), result(3, 2, 4), "ok", method="B3LYP-D3BJ", basis="def2-SVP (RI)")
    [first, second] = store.records()
    assert (first["method"], first["basis"], first["engine"], first["engine_version"]) == (
        "B3LYP-D3BJ",
        "def2-SVP (RI)",
        "pyscf",
        "2.14.0",
    )
    assert first["config_hash"] == config_hash(c) != second["config_hash"]
    assert len(first["record_hash"]) == 64 and first["record_hash"] != second["record_hash"]
    assert (store.method, store.basis) == ("B3LYP-D3BJ", "def2-SVP (RI)")
    # the hash ignores provenance but not inputs
    moved = config(0)
    moved.source, moved.frame = "elsewhere", 7
    assert config_hash(moved) == config_hash(c)
    moved.mm_charges = -moved.mm_charges
    assert config_hash(moved) != config_hash(c)
    with pytest.raises(
        InputError, match=r"holds B3LYP-D3BJ/def2-SVP \(RI\) labels; cannot append B3LYP-D3BJ/def2-TZVP"
    ):
        store.append(config(2), None, None, "failed", "x", method="B3LYP-D3BJ", basis="def2-TZVP")


def test_foreign_and_corrupted_files_are_refused(tmp_path) -> None:
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("coordinates", data=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"HDF5 file but not a biomol-nnp label store .*'coordinates'"):
        LabelStore(foreign)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(InputError, match="format_version=99"):
        LabelStore(other)
    good = tmp_path / "labels.h5"
    LabelStore(good).append(config(0), result(3, 0, 1), result(3, 2, 2), "ok")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"not a readable HDF5 file \(truncated or corrupted\?\)"):
        LabelStore(truncated)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path) -> None:
    path = tmp_path / "labels.h5"
    lock_file = tmp_path / "labels.h5.lock"
    # another live job (our parent process) holds the store
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "time": "now"}))
    store = LabelStore(path)
    with pytest.raises(InputError, match=rf"being written by another job \(PID {os.getppid()}"):
        store.append(config(0), None, None, "failed", "x")
    with pytest.raises(InputError, match="If that job is dead, remove"):
        store.locked().acquire()
    # a lock left by a dead process on this host is stale
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "time": "then"}))
    with store.locked():
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        store.append(config(0), None, None, "failed", "x")
        with StoreLock(path):  # re-entrant in the same process
            pass
        assert lock_file.exists()
    assert not lock_file.exists()
    assert store.statuses() == {"ok": 0, "failed": 1}


def test_extxyz_round_trip_in_ase_units(tmp_path) -> None:
    ase_io = pytest.importorskip("ase.io")
    store = LabelStore(tmp_path / "labels.h5")
    vac, emb = result(3, 0, 1), result(3, 2, 2)
    store.append(config(0), vac, emb, "ok", engine="xtb-python", engine_version="22.1")
    store.append(config(1, n_mm=0), result(3, 0, 3), None, "ok")
    store.append(config(2), None, None, "failed", "boom")
    out = tmp_path / "labels.extxyz"
    assert export_extxyz(store.path, out) == 2

    frames = ase_io.read(out, ":")
    assert len(frames) == 2
    a = frames[0]
    np.testing.assert_allclose(a.positions, config(0).positions / ANGSTROM_TO_NM, atol=1e-9)
    assert a.get_potential_energy() == pytest.approx(vac.energy / EV_TO_KJ_PER_MOL, rel=1e-10)
    np.testing.assert_allclose(a.get_forces(), vac.forces / EV_TO_KJ_PER_MOL * ANGSTROM_TO_NM, rtol=1e-8)
    assert a.info["method"] == "GFN2-xTB" and a.info["n_mm"] == 2 and a.info["source"] == "test"
    assert frames[1].info["n_mm"] == 0

    copy = tmp_path / "copy.h5"
    assert import_extxyz(out, copy) == 2
    assert import_extxyz(out, copy) == 0  # already there
    original, imported = store.load_training_arrays(), LabelStore(copy).load_training_arrays()
    for x, y in zip(original, imported, strict=True):
        assert (x.source, x.frame, x.trajectory_id, x.method) == (y.source, y.frame, y.trajectory_id, y.method)
        for name in (
            "positions",
            "forces",
            "charges",
            "dipole",
            "embedded_forces",
            "embedded_mm_forces",
            "embedded_charges",
            "mm_positions",
            "mm_charges",
            "embedded_dipole",
        ):
            np.testing.assert_allclose(getattr(y, name), getattr(x, name), rtol=1e-8, atol=1e-9, err_msg=name)
        assert y.embedding_energy == pytest.approx(x.embedding_energy, rel=1e-9, abs=1e-9)
        np.testing.assert_array_equal(y.mm_numbers, x.mm_numbers)
    assert LabelStore(copy).records()[0]["engine"] == "xtb-python"
