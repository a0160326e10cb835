"""QM labels: GFN2-xTB single points with MM point charges, MD sampling, HDF5 label store.

Importing this package imports neither xtb, OpenMM nor h5py; they load when first used.
"""

from biomol_nnp.qm.labeling import LabelRecord, LabelReport, label_configurations, label_one
from biomol_nnp.qm.labels import LabeledConfiguration, LabelStore
from biomol_nnp.qm.sampling import Configuration, sample_md_configurations
from biomol_nnp.qm.xtb_engine import QMResult, XTBEngine

__all__ = [
    "Configuration",
    "LabelRecord",
    "LabelReport",
    "LabelStore",
    "LabeledConfiguration",
    "QMResult",
    "XTBEngine",
    "label_configurations",
    "label_one",
    "sample_md_configurations",
]
