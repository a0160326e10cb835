"""QM labels: engines (xtb, tblite, PySCF DFT, OpenMM MM), samplers, HDF5 label store, Dask labeling.

Importing this package imports neither xtb, PySCF, Dask, OpenMM nor h5py; they load when first used.
"""

from biomol_nnp.qm.engine import QMEngine, available_methods, create_engine
from biomol_nnp.qm.labeling import LabelRecord, LabelReport, label_configurations, label_one
from biomol_nnp.qm.labels import LabeledConfiguration, LabelStore, config_hash
from biomol_nnp.qm.sampling import Configuration, sample_md_configurations
from biomol_nnp.qm.scans import hbond_dimer_scan, water_dimer_scan
from biomol_nnp.qm.torsion_scans import dipeptide_torsion_scan, dipeptide_torsion_scan_2d
from biomol_nnp.qm.xtb_engine import QMResult, XTBEngine

__all__ = [
    "Configuration",
    "LabelRecord",
    "LabelReport",
    "LabelStore",
    "LabeledConfiguration",
    "QMEngine",
    "QMResult",
    "XTBEngine",
    "available_methods",
    "config_hash",
    "create_engine",
    "dipeptide_torsion_scan",
    "dipeptide_torsion_scan_2d",
    "hbond_dimer_scan",
    "label_configurations",
    "label_one",
    "sample_md_configurations",
    "water_dimer_scan",
]
