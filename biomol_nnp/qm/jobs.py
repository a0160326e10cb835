"""Library entry points of `biomol-nnp sample` and `biomol-nnp label` (tests call them in-process).

>>> report = label_job(PipelineSettings(), "labels.h5", configs_path="configs.h5")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from biomol_nnp.config import PipelineSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.labeling import LabelReport, label_configurations
from biomol_nnp.qm.sampling import Configuration

logger = logging.getLogger(__name__)

SAMPLERS = (
    "md",
    "water-dimer-scan",
    "water-clusters",
    "torsion-scan",
    "torsion-scan-2d",
    "nma-water-scan",
    "nma-nma-scan",
)
"""Configuration sources of `biomol-nnp sample --kind`."""


def sample(
    settings: PipelineSettings, kind: str = "md", progress: bool = False, threads: int = 1
) -> list[Configuration]:
    """Configurations of one sampler.

    Parameters
    ----------
    settings : PipelineSettings
        ``system`` and ``sampling`` settings.
    kind : {"md", "water-dimer-scan", "water-clusters", "torsion-scan", "torsion-scan-2d", "nma-water-scan", \
"nma-nma-scan"}
        MM MD frames of the solvated and vacuum system; water-dimer hydrogen-bond scan over distance
        and angle; water clusters carved from the solvated box; relaxed 1-D scans of
        ``sampling.torsion_scan_dihedrals`` and 2-D phi x psi scans of each of
        ``sampling.torsion_scan_pdbs`` (MM force field ``system.forcefield``); rigid NMA-water (both
        donor directions) and NMA-NMA hydrogen-bond scans over ``sampling.hbond_distances_nm`` x
        ``sampling.hbond_angles_deg``.
    progress : bool
        Progress bars.
    threads : int
        OpenMM CPU threads (MD).

    Raises
    ------
    InputError
        Unknown ``kind``.
    """
    if kind == "md":
        from biomol_nnp.qm.sampling import sample_md_configurations

        return sample_md_configurations(settings.system, settings.sampling, progress=progress, threads=threads)
    if kind == "water-dimer-scan":
        from biomol_nnp.qm.scans import water_dimer_scan

        return water_dimer_scan()
    if kind == "water-clusters":
        from biomol_nnp.qm.clusters import water_clusters

        return water_clusters(settings.system.solvated_pdb, seed=settings.sampling.seed)
    if kind in ("torsion-scan", "torsion-scan-2d"):
        return _torsion_scans(settings, two_d=kind == "torsion-scan-2d", progress=progress)
    if kind in ("nma-water-scan", "nma-nma-scan"):
        from biomol_nnp.qm.scans import HBOND_SCAN_KINDS, hbond_dimer_scan

        sampling = settings.sampling
        configs: list[Configuration] = []
        for dimer in HBOND_SCAN_KINDS[kind]:
            offset = max((c.trajectory_id for c in configs), default=-1) + 1
            configs += hbond_dimer_scan(dimer, sampling.hbond_distances_nm, sampling.hbond_angles_deg, offset)
        return configs
    raise InputError(f"unknown sampler {kind!r}; valid samplers: {', '.join(SAMPLERS)}")


def _torsion_scans(settings: PipelineSettings, two_d: bool, progress: bool) -> list[Configuration]:
    """1-D scans of each dihedral (or one 2-D scan) of each ``sampling.torsion_scan_pdbs``; one trajectory id each."""
    from biomol_nnp.qm.torsion_scans import dipeptide_torsion_scan, dipeptide_torsion_scan_2d

    sampling = settings.sampling
    forcefield = settings.system.forcefield
    k, iterations = sampling.torsion_scan_restraint_k, sampling.torsion_scan_max_iterations
    grid = np.arange(-180.0, 180.0 - 1e-9, sampling.torsion_scan_step_deg)
    configs: list[Configuration] = []
    trajectory_id = 0
    for pdb in sampling.torsion_scan_pdbs:
        if two_d:
            configs += dipeptide_torsion_scan_2d(
                pdb, sampling.torsion_scan_2d_points, forcefield=forcefield, restraint_k=k,
                max_iterations=iterations, trajectory_id=trajectory_id,
            )
            trajectory_id += 1
            continue
        for name in sampling.torsion_scan_dihedrals:
            configs += dipeptide_torsion_scan(
                pdb, name, grid, forcefield=forcefield, restraint_k=k, max_iterations=iterations,
                trajectory_id=trajectory_id, progress=progress,
            )
            trajectory_id += 1
    return configs


def sample_job(settings: PipelineSettings, output: str | os.PathLike, kind: str = "md", progress: bool = False) -> Path:
    """Sample configurations and write them to a configurations file (HDF5)."""
    from biomol_nnp.qm.configurations import write_configurations

    return write_configurations(sample(settings, kind, progress), output)


def label_job(
    settings: PipelineSettings,
    output: str | os.PathLike,
    configs_path: str | os.PathLike | None = None,
    progress: bool = False,
    extxyz: str | os.PathLike | None = None,
) -> LabelReport:
    """Label the configurations of ``configs_path`` (or sampled by MM MD) into the store ``output``.

    Parameters
    ----------
    settings : PipelineSettings
        ``labels`` holds method, workers / scheduler address, chunk size and retries.
    output : str or os.PathLike
        Label store (appended to; only missing or failed configurations are labeled).
    configs_path : str or os.PathLike, optional
        Configurations file (`biomol-nnp sample -o`) or another label store; MD sampling when omitted.
    progress : bool
        Progress bars.
    extxyz : str or os.PathLike, optional
        Also export the store's ok labels to this extended XYZ file (eV, Å).

    Returns
    -------
    LabelReport
    """
    if configs_path is None:
        configs = sample(settings, "md", progress)
    else:
        from biomol_nnp.qm.configurations import read_configurations

        configs = read_configurations(configs_path)
    report = label_configurations(configs, output, settings.labels, progress=progress)
    if extxyz is not None:
        from biomol_nnp.qm.extxyz import export_extxyz

        export_extxyz(output, extxyz)
    return report
