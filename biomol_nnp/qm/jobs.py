"""Library entry points of `biomol-nnp sample` and `biomol-nnp label` (tests call them in-process).

>>> report = label_job(PipelineSettings(), "labels.h5", configs_path="configs.h5")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from biomol_nnp.config import PipelineSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.labeling import LabelReport, label_configurations
from biomol_nnp.qm.sampling import Configuration

logger = logging.getLogger(__name__)

SAMPLERS = ("md", "water-dimer-scan", "water-clusters")
"""Configuration sources of `biomol-nnp sample --kind`."""


def sample(
    settings: PipelineSettings, kind: str = "md", progress: bool = False, threads: int = 1
) -> list[Configuration]:
    """Configurations of one sampler.

    Parameters
    ----------
    settings : PipelineSettings
        ``system`` and ``sampling`` settings.
    kind : {"md", "water-dimer-scan", "water-clusters"}
        MM MD frames of the solvated and vacuum system; water-dimer hydrogen-bond scan over distance
        and angle; water clusters carved from the solvated box.
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
    raise InputError(f"unknown sampler {kind!r}; valid samplers: {', '.join(SAMPLERS)}")


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
