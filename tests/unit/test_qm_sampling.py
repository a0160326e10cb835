"""MD sampling of configurations to label: shapes, region, point charges, minimum image."""

import numpy as np
import pytest

from biomol_nnp.config import LabelSettings, SamplingSettings, SystemSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import minimum_image, sample_md_configurations, select_point_charges

TINY = {
    "equilibration_steps": 10,
    "solvated_frames": 2,
    "vacuum_frames": 2,
    "steps_between_frames": 5,
    "trajectories_per_phase": 2,
}


@pytest.fixture(scope="module")
def configs():
    return sample_md_configurations(SystemSettings(), SamplingSettings(**TINY))


def test_frames_have_region_shapes_and_trajectory_ids(configs) -> None:
    assert len(configs) == 4
    assert [c.source for c in configs] == ["solvated-md"] * 2 + ["vacuum-md"] * 2
    # two runs per phase (trajectories_per_phase=2): ids 0, 1 solvated and 2, 3 vacuum
    assert [c.trajectory_id for c in configs] == [0, 1, 2, 3]
    for c in configs:
        assert c.atomic_numbers.shape == (22,) and c.positions.shape == (22, 3)
        assert sorted(np.bincount(c.atomic_numbers).nonzero()[0].tolist()) == [1, 6, 7, 8]
        assert c.total_charge == 0
        assert c.mm_positions.shape == (c.n_mm, 3) and c.mm_numbers.shape == (c.n_mm,)
        # the alanine dipeptide is whole: every atom has a neighbour within 0.16 nm
        d = np.linalg.norm(c.positions[:, None] - c.positions[None], axis=-1) + np.eye(22)
        assert d.min(axis=1).max() < 0.16
    assert configs[2].n_mm == 0 and configs[3].n_mm == 0


def test_point_charges_are_whole_waters_close_to_the_region(configs) -> None:
    cutoff = SamplingSettings().point_charge_cutoff_nm
    for c in configs[:2]:
        assert c.n_mm > 0 and c.n_mm % 3 == 0
        waters = c.mm_positions.reshape(-1, 3, 3)
        np.testing.assert_array_equal(c.mm_numbers.reshape(-1, 3), np.tile([8, 1, 1], (c.n_mm // 3, 1)))
        np.testing.assert_allclose(c.mm_charges.reshape(-1, 3), np.tile([-0.834, 0.417, 0.417], (c.n_mm // 3, 1)))
        # O-H bonds intact (molecules not split by the box), TIP3P rigid 0.09572 nm
        oh = np.linalg.norm(waters[:, 1:] - waters[:, :1], axis=-1)
        np.testing.assert_allclose(oh, 0.09572, atol=1e-4)
        # every water has an atom within the cutoff of the region, in plain (non-periodic) distance
        d = np.linalg.norm(c.mm_positions[:, None] - c.positions[None], axis=-1).min(axis=1)
        assert d.reshape(-1, 3).min(axis=1).max() <= cutoff + 1e-9
        assert d.min() > 0.12  # no water on top of the region
        assert c.mm_charges.sum() == pytest.approx(0.0, abs=1e-9)


def test_minimum_image_selection_brings_a_far_image_next_to_the_region() -> None:
    box = np.diag([3.0, 3.0, 3.0])
    region = np.array([[0.1, 0.1, 0.1]])
    water_xyz = np.array([[2.9, 0.1, 0.1], [2.95, 0.18, 0.1], [2.95, 0.02, 0.1], [1.5, 1.5, 1.5]])
    positions, indices = select_point_charges(region, water_xyz, [np.arange(3), np.array([3])], box, 0.5)
    np.testing.assert_array_equal(indices, [0, 1, 2])
    np.testing.assert_allclose(positions[:, 0], [-0.1, -0.05, -0.05])
    np.testing.assert_allclose(minimum_image(np.array([[1.6, -1.6, 0.2]]), box), [[-1.4, 1.4, 0.2]])


def test_unknown_region_residues_are_refused() -> None:
    with pytest.raises(InputError, match=r"region_residues \['XYZ'\] match no atom"):
        sample_md_configurations(SystemSettings(region_residues=["XYZ"]), SamplingSettings(**TINY))


def test_solvated_frame_can_be_labeled(configs) -> None:
    pytest.importorskip("xtb")
    from biomol_nnp.qm.labeling import label_one

    record = label_one(configs[0], LabelSettings())
    assert record.status == "ok", record.reason
    assert record.embedded is not None and record.embedded.mm_forces.shape == (configs[0].n_mm, 3)
    assert record.embedded.charges.sum() == pytest.approx(0.0, abs=1e-6)
    # the net force of the whole cluster (region + point charges) vanishes
    total = record.embedded.forces.sum(axis=0) + record.embedded.mm_forces.sum(axis=0)
    np.testing.assert_allclose(total, 0.0, atol=1e-3)
