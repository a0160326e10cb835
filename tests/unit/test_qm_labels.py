"""Label store round trip and the labeling loop (failures recorded, the loop goes on)."""

import json
import pickle

import h5py
import numpy as np
import pytest

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.labeling import label_configurations, label_one
from biomol_nnp.qm.labels import UNITS, LabelStore
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.qm.xtb_engine import QMResult

pytest.importorskip("xtb")

WATER_NM = np.array([[0.0, 0.0, -0.00657], [0.07590, 0.0, 0.05214], [-0.07590, 0.0, 0.05214]])
TIP3P_NM = np.array([[0.29, 0.0, -0.01], [0.33, 0.075, 0.03], [0.33, -0.075, 0.03]])
TIP3P_CHARGES = np.array([-0.834, 0.417, 0.417])


def water(frame: int, with_charges: bool = True) -> Configuration:
    shift = 0.002 * frame
    return Configuration(
        atomic_numbers=np.array([8, 1, 1]),
        positions=WATER_NM + shift,
        total_charge=0,
        mm_positions=TIP3P_NM if with_charges else np.zeros((0, 3)),
        mm_charges=TIP3P_CHARGES if with_charges else np.zeros(0),
        mm_numbers=np.array([8, 1, 1]) if with_charges else np.zeros(0, dtype=int),
        source="test",
        trajectory_id=frame % 2,
        frame=frame,
    )


def broken(frame: int) -> Configuration:
    config = water(frame)
    config.positions[1] = config.positions[0]  # two atoms on top of each other: xtb refuses it
    return config


def fake_result(n: int, m: int, energy: float) -> QMResult:
    rng = np.random.default_rng(n + m)
    return QMResult(energy, rng.normal(size=(n, 3)), rng.normal(size=(m, 3)), rng.normal(size=n), rng.normal(size=3))


def test_store_round_trip_keeps_arrays_units_and_statuses(tmp_path) -> None:
    path = tmp_path / "labels.h5"
    store = LabelStore(path)
    assert len(store) == 0 and store.load_training_arrays() == []
    c0, c1, c2 = water(0), water(1, with_charges=False), water(2)
    v0, e0 = fake_result(3, 0, -100.0), fake_result(3, 3, -110.0)
    assert store.append(c0, v0, e0, "ok") == 0
    assert store.append(c1, fake_result(3, 0, -90.0), None, "ok") == 1
    assert store.append(c2, None, None, "failed", "vacuum: QMCalculationError: boom") == 2

    reopened = LabelStore(path)
    assert len(reopened) == 3
    assert reopened.statuses() == {"ok": 2, "failed": 1}
    assert reopened.failure_reasons() == {"vacuum: QMCalculationError: boom": 1}
    records = reopened.load_training_arrays()
    assert [r.index for r in records] == [0, 1]
    r0, r1 = records
    np.testing.assert_array_equal(r0.positions, c0.positions)
    np.testing.assert_array_equal(r0.mm_charges, c0.mm_charges)
    np.testing.assert_array_equal(r0.forces, v0.forces)
    np.testing.assert_array_equal(r0.embedded_mm_forces, e0.mm_forces)
    assert r0.embedding_energy == pytest.approx(-10.0)
    assert (r0.source, r0.trajectory_id, r0.frame, r0.total_charge) == ("test", 0, 0, 0)
    # no point charges: no embedded group; the embedded fields equal the vacuum ones
    assert r1.embedding_energy == 0.0 and r1.embedded_mm_forces.shape == (0, 3)
    np.testing.assert_array_equal(r1.embedded_forces, r1.forces)

    with h5py.File(path, "r") as h5:
        assert json.loads(h5.attrs["units"]) == UNITS
        assert h5.attrs["method"] == "GFN2-xTB" and int(h5.attrs["format_version"]) == 2
        assert "package_version" in h5.attrs
        assert h5["configurations/000000/embedded/forces"].attrs["units"] == "kJ/mol/nm"
        assert h5["configurations/000000/positions"].attrs["units"] == "nm"
        assert "embedded" not in h5["configurations/000001"]
        assert h5["configurations/000002"].attrs["status"] == "failed"

    # the hash covers the ok records only, and changes with their content
    first = reopened.content_hash()
    reopened.append(water(3), None, None, "failed", "another failure")
    assert LabelStore(path).content_hash() == first
    reopened.append(water(4), v0, e0, "ok")
    assert LabelStore(path).content_hash() != first


def test_store_refuses_bad_status_and_other_methods(tmp_path) -> None:
    store = LabelStore(tmp_path / "labels.h5")
    with pytest.raises(InputError, match="status must be one of"):
        store.append(water(0), None, None, "maybe")
    with pytest.raises(InputError, match="needs a vacuum result"):
        store.append(water(0), fake_result(3, 0, 1.0), None, "ok")
    store.append(water(0), None, None, "failed", "x")
    with pytest.raises(InputError, match="holds GFN2-xTB labels"):
        store.append(water(1), None, None, "failed", "x", method="B3LYP")
    (tmp_path / "other.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        LabelStore(tmp_path / "other.h5")


def test_label_one_is_pure_and_embedded_differs_from_vacuum() -> None:
    record = label_one(water(0), LabelSettings())
    assert record.status == "ok" and record.reason == ""
    # inputs and outputs travel to and from worker processes (Dask tasks)
    restored = pickle.loads(pickle.dumps(record))
    np.testing.assert_array_equal(restored.embedded.mm_forces, record.embedded.mm_forces)
    assert pickle.loads(pickle.dumps(label_one)) is label_one
    assert record.vacuum is not None and record.embedded is not None
    assert record.embedded.mm_forces.shape == (3, 3)
    assert record.embedded.energy != pytest.approx(record.vacuum.energy)


def test_failed_configuration_is_recorded_and_the_next_one_is_labeled(tmp_path) -> None:
    path = tmp_path / "labels.h5"
    configs = [water(0), broken(1), water(2, with_charges=False)]
    report = label_configurations(configs, path, LabelSettings(), progress=False)
    assert (report.n_ok, report.n_failed, report.n_skipped) == (2, 1, 0)
    [(reason, count)] = report.failures.items()
    assert count == 1 and "QMCalculationError" in reason and "GFN2-xTB failed" in reason
    store = LabelStore(path)
    assert [r["status"] for r in store.records()] == ["ok", "failed", "ok"]
    assert store.records()[1]["reason"] == reason
    records = store.load_training_arrays()
    assert [r.frame for r in records] == [0, 2]
    assert records[0].charges.sum() == pytest.approx(0.0, abs=1e-6)

    # a restarted job skips what is ok, retries what failed (a new record supersedes it)
    again = label_configurations([*configs, water(3)], path, LabelSettings())
    assert (again.n_ok, again.n_failed, again.n_skipped, again.n_retried) == (1, 1, 2, 1)
    assert again.failures_by_kind == {"vacuum: QMCalculationError": 1}
    store = LabelStore(path)
    assert len(store) == 4 and store.n_records == 5
    assert [r["supersedes"] for r in store.records()] == [-1, -1, -1, 1, -1]
    assert store.statuses() == {"ok": 3, "failed": 1}
    # without retries, nothing is left to do
    last = label_configurations([*configs, water(3), water(3)], path, LabelSettings(retry_failed=False))
    assert (last.n_total, last.n_skipped) == (0, 5)
