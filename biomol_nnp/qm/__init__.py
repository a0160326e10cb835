"""QM labels: engines (xtb, tblite, PySCF DFT, OpenMM MM), samplers, HDF5 label store, Dask labeling.

Importing this package imports neither xtb, PySCF, Dask, OpenMM nor h5py; they load when first used.
"""

from biomol_nnp.qm.engine import QMEngine, available_methods, create_engine
from biomol_nnp.qm.labeling import LabelRecord, LabelReport, label_configurations, label_one
from biomol_nnp.qm.labels import LabeledConfiguration, LabelStore, config_hash
from biomol_nnp.qm.sampling import Configuration, sample_md_configurations
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
    "label_configurations",
    "label_one",
    "sample_md_configurations",
]
