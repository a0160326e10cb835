"""Labeling on Dask (LocalCluster and scheduler address), configurations files and the `label` CLI."""

import numpy as np
import pytest

from biomol_nnp.cli import main
from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.configurations import read_configurations, write_configurations
from biomol_nnp.qm.labeling import label_configurations
from biomol_nnp.qm.labels import LabelStore
from biomol_nnp.qm.sampling import Configuration

pytest.importorskip("xtb")
distributed = pytest.importorskip("distributed")

WATER_NM = np.array([[0.0, 0.0, -0.00657], [0.07590, 0.0, 0.05214], [-0.07590, 0.0, 0.05214]])


def water(frame: int, multiplicity: int = 1) -> Configuration:
    return Configuration(
        atomic_numbers=np.array([8, 1, 1]),
        positions=WATER_NM * (1.0 + 0.01 * frame),
        mm_positions=np.array([[0.29, 0.0, -0.01], [0.33, 0.075, 0.03], [0.33, -0.075, 0.03]]),
        mm_charges=np.array([-0.834, 0.417, 0.417]),
        mm_numbers=np.array([8, 1, 1]),
        source="dask-test",
        frame=frame,
        multiplicity=multiplicity,
    )


def overlapping(frame: int) -> Configuration:
    config = water(frame)
    config.positions[1] = config.positions[0]
    return config


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_dask_labeling_matches_in_process_labels_and_reports_failures(tmp_path, cluster) -> None:
    configs = [water(0), overlapping(1), water(2), water(3, multiplicity=2), water(4)]
    serial = label_configurations(configs, tmp_path / "serial.h5", LabelSettings())
    parallel = label_configurations(
        configs, tmp_path / "dask.h5", LabelSettings(chunk_size=2), scheduler_address=cluster.scheduler_address
    )
    for report in (serial, parallel):
        assert (report.n_ok, report.n_failed) == (3, 2)
        assert report.failures_by_kind == {"vacuum: QMCalculationError": 1, "input: InputError": 1}
    # the wrong multiplicity is refused before submission, the overlap by xtb on a worker
    a = {r.frame: r for r in LabelStore(tmp_path / "serial.h5").load_training_arrays()}
    b = {r.frame: r for r in LabelStore(tmp_path / "dask.h5").load_training_arrays()}
    assert sorted(a) == sorted(b) == [0, 2, 4]
    for frame in a:
        assert b[frame].embedded_energy == pytest.approx(a[frame].embedded_energy, abs=1e-6)
        np.testing.assert_allclose(b[frame].embedded_mm_forces, a[frame].embedded_mm_forces, atol=1e-6)
    # a second run with the same client only retries the failures
    with distributed.Client(cluster) as client:
        again = label_configurations(configs, tmp_path / "dask.h5", LabelSettings(), client=client)
    assert (again.n_skipped, again.n_retried, again.n_failed) == (3, 2, 2)


def test_configurations_file_round_trip_and_label_cli(tmp_path, cluster) -> None:
    configs = [water(0), water(1)]
    path = write_configurations(configs, tmp_path / "configs.h5")
    back = read_configurations(path)
    assert [c.frame for c in back] == [0, 1] and back[0].source == "dask-test"
    np.testing.assert_array_equal(back[1].positions, configs[1].positions)
    labels, xyz = tmp_path / "labels.h5", tmp_path / "labels.extxyz"
    argv = ["--no-progress", "label", str(path), "-o", str(labels), "--method", "GFN2-xTB"]
    assert main([*argv, "--scheduler", cluster.scheduler_address, "--extxyz", str(xyz)]) == 0
    assert LabelStore(labels).statuses() == {"ok": 2, "failed": 0}
    assert xyz.read_text().startswith("3\n")
    # the labels file itself can be given as CONFIGS; nothing is left to label
    assert main(["--no-progress", "label", str(labels), "-o", str(labels), "--workers", "0"]) == 0
    assert LabelStore(labels).n_records == 2
    assert main(["--no-progress", "label", str(path), "-o", str(labels), "--method", "DFT"]) == 2  # other method
    with pytest.raises(InputError, match="not a biomol-nnp configurations file"):
        import h5py

        with h5py.File(tmp_path / "x.h5", "w") as h5:
            h5.create_group("other")
        read_configurations(tmp_path / "x.h5")
