"""Settings for every stage, as pydantic v2 models that read and write YAML.

Unknown keys are refused (``extra="forbid"``), so a typo in a settings file is an error that
names the key instead of a silently ignored option.

>>> settings = TrainSettings(ensemble_size=3, epochs=5)
>>> TrainSettings.model_validate(settings.model_dump()) == settings
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from biomol_nnp.exceptions import ConfigError
from biomol_nnp.io import write_text_atomic

SYSTEMS_DIR = Path(__file__).resolve().parent.parent / "systems"
"""Example systems shipped with the repository."""

SettingsT = TypeVar("SettingsT", bound="Settings")


class Settings(BaseModel):
    """Base class: forbids unknown keys, validates on assignment, reads and writes YAML."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_yaml(cls: type[SettingsT], path: str | os.PathLike) -> SettingsT:
        """Read settings from a YAML file; errors name the file and the offending keys."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"settings file {str(path)!r} does not exist; give the path of a YAML file")
        data = yaml.safe_load(path.read_text()) or {}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"invalid settings in {str(path)!r}:\n{err}") from err

    def to_yaml(self, path: str | os.PathLike) -> Path:
        """Write the settings to a YAML file atomically."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return write_text_atomic(path, text)


class SystemSettings(Settings):
    """Where the MM system comes from and which atoms form the ML region."""

    solvated_pdb: Path = Field(
        SYSTEMS_DIR / "alanine_dipeptide" / "solvated.pdb", description="Solvated PDB with a periodic box."
    )
    vacuum_pdb: Path = Field(SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb", description="PDB in vacuum.")
    forcefield: list[str] = Field(["amber14-all.xml", "amber14/tip3p.xml"], description="OpenMM force-field XML files.")
    region_residues: list[str] = Field(
        ["ACE", "ALA", "NME"], description="Residue names whose atoms form the ML region."
    )
    nonbonded_cutoff_nm: float = Field(0.9, gt=0, description="MM nonbonded (PME) cutoff, nm.")


class SamplingSettings(Settings):
    """Configurations to label: frames of MM MD of the solvated system and of the vacuum system."""

    solvated_frames: int = Field(64, ge=0, description="Frames taken from the solvated MM MD.")
    vacuum_frames: int = Field(64, ge=0, description="Frames taken from the vacuum MM MD.")
    steps_between_frames: int = Field(200, ge=1, description="MD steps between saved frames.")
    equilibration_steps: int = Field(500, ge=0, description="MD steps before the first frame.")
    temperature_k: float = Field(500.0, gt=0, description="Sampling temperature, K (high to widen coverage).")
    timestep_fs: float = Field(
        1.0, gt=0, description="MD time step, fs (bonds to hydrogen are flexible during sampling; waters rigid)."
    )
    point_charge_cutoff_nm: float = Field(
        1.0,
        gt=0,
        description="Waters with any atom within this distance of the region become point charges, nm.",
    )
    seed: int = Field(2024, description="Random seed for velocities and the Langevin integrator.")
    trajectories_per_phase: int = Field(
        4,
        ge=1,
        description="Independent MD runs (different seeds) per phase, solvated and vacuum; each run is one "
        "trajectory id, so training can split by trajectory.",
    )
    torsion_scan_pdbs: list[Path] = Field(
        default_factory=lambda: [SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"],
        description="Capped dipeptides ACE-X-NME (PDB) scanned by `sample --kind torsion-scan|torsion-scan-2d`, "
        "e.g. systems/dipeptides/*.pdb.",
    )
    torsion_scan_dihedrals: list[Literal["phi", "psi", "chi1"]] = Field(
        ["phi", "psi"], min_length=1, description="Dihedrals of the central residue scanned one at a time (1-D)."
    )
    torsion_scan_step_deg: float = Field(
        15.0, gt=0, le=180, description="Spacing of the 1-D torsion-scan grid from -180 degrees, degrees."
    )
    torsion_scan_2d_points: int = Field(
        12, ge=4, multiple_of=2, description="Points per angle of the 2-D phi x psi grid (even; spacing 360/n deg)."
    )
    torsion_scan_restraint_k: float = Field(
        2000.0, gt=0, description="Harmonic dihedral restraint constant of the relaxed scans, kJ/mol/rad^2."
    )
    torsion_scan_max_iterations: int = Field(
        300, ge=1, description="L-BFGS-B iterations per torsion-scan grid point (the other coordinates relax)."
    )
    hbond_distances_nm: list[float] = Field(
        [0.25, 0.27, 0.29, 0.31, 0.34, 0.38, 0.43],
        min_length=1,
        description="Donor...acceptor heavy-atom distances of the NMA-water and NMA-NMA dimer scans, nm (>= 0.2).",
    )
    hbond_angles_deg: list[float] = Field(
        [-30.0, 0.0, 30.0],
        min_length=1,
        description="Bends of the donor...acceptor direction away from D-H in the donor plane, degrees.",
    )


class DFTSettings(Settings):
    """Kohn-Sham DFT through PySCF (used when ``LabelSettings.method`` is ``"DFT"``)."""

    functional: str = Field("B3LYP", description="Exchange-correlation functional, as PySCF/libxc names it.")
    basis: str = Field("def2-SVP", description="Gaussian basis set, as PySCF names it.")
    dispersion: Literal["d3bj", "d3zero", "d4", "none"] = Field(
        "d3bj", description="Empirical dispersion through pyscf-dispersion ('none' to switch it off)."
    )
    density_fitting: bool = Field(True, description="Resolution of the identity for the Coulomb/exchange terms.")
    conv_tol: float = Field(1e-9, gt=0, description="SCF energy convergence threshold, Hartree.")
    max_cycle: int = Field(100, ge=1, description="Maximum SCF iterations.")
    grid_level: int = Field(3, ge=0, le=9, description="PySCF DFT integration grid level (0 coarse .. 9 fine).")
    max_memory_mb: int = Field(2000, ge=100, description="Memory PySCF may use per calculation, MB.")


class LabelSettings(Settings):
    """The QM method that labels configurations, and how the labeling job runs."""

    method: Literal["GFN2-xTB", "GFN2-xTB-tblite", "DFT", "MM"] = Field(
        "GFN2-xTB",
        description="Engine: 'GFN2-xTB' (xtb-python, point charges), 'GFN2-xTB-tblite' (tblite, vacuum only), "
        "'DFT' (PySCF, see `dft`), 'MM' (an OpenMM System of the region, see `mm_system_xml`).",
    )
    accuracy: float = Field(1.0, gt=0, description="xtb numerical accuracy (smaller is tighter).")
    max_iterations: int = Field(250, ge=1, description="Maximum SCC iterations.")
    electronic_temperature_k: float = Field(300.0, gt=0, description="Electronic temperature, K.")
    threads: int = Field(
        1,
        ge=1,
        description="OpenMP/BLAS threads of one xtb calculation (1: parallelism comes from running many).",
    )
    dft: DFTSettings = Field(default_factory=DFTSettings, description="DFT method, basis and SCF settings.")
    mm_system_xml: Path | None = Field(
        None, description="Serialized OpenMM System (XML) of the region, for method 'MM'."
    )
    workers: int = Field(
        0,
        ge=0,
        description="Dask worker processes of a LocalCluster (0: label in this process, no Dask).",
    )
    scheduler_address: str | None = Field(
        None, description="Address of a running Dask scheduler (e.g. tcp://host:8786); overrides `workers`."
    )
    chunk_size: int = Field(1, ge=1, description="Configurations per Dask task.")
    retry_failed: bool = Field(True, description="Label again the configurations whose latest record failed.")


class PaiNNSettings(Settings):
    """Equivariant message-passing model (PaiNN-like), used when ``ModelSettings.architecture`` is 'painn'."""

    cutoff_nm: float = Field(0.5, gt=0, description="Neighbour cutoff of the messages (cosine envelope), nm.")
    features: int = Field(32, ge=4, description="Width of the scalar and vector features of each atom.")
    radial_basis: int = Field(16, ge=1, description="Number of Bessel radial basis functions (learnable frequencies).")
    interactions: int = Field(2, ge=1, le=6, description="Number of message + update blocks.")
    head_hidden: int = Field(32, ge=1, description="Hidden width of the per-atom energy/charge/polarisability head.")


class LongRangeSettings(Settings):
    """Explicit long-range terms inside the ML region; the network learns the remainder of the energy."""

    coulomb: bool = Field(
        False,
        description="Coulomb energy between the predicted charges, switched on from cutoff - switch width to the "
        "network cutoff (so nothing is counted twice) and complete beyond it.",
    )
    coulomb_switch_width_nm: float = Field(
        0.1, gt=0, description="Width of the switch below the network cutoff over which Coulomb turns on, nm."
    )
    dispersion: bool = Field(
        False, description="D3-style two-body dispersion with Becke-Johnson damping and fixed C6 (see long_range.py)."
    )
    dispersion_s8: float = Field(2.7, ge=0, description="Scale of the C8 term (GFN2-xTB's D4 value by default).")
    dispersion_a1: float = Field(0.52, ge=0, description="Becke-Johnson damping a1 (dimensionless).")
    dispersion_a2_nm: float = Field(0.2646, ge=0, description="Becke-Johnson damping a2, nm (5.0 bohr).")


class ModelSettings(Settings):
    """The NNP: architecture ('ani' symmetry functions + element networks, or 'painn'), charges, long range."""

    architecture: Literal["ani", "painn"] = Field(
        "ani", description="Model architecture: 'ani' (symmetry functions) or 'painn' (equivariant messages)."
    )
    elements: list[int] = Field([1, 6, 7, 8], description="Atomic numbers the model covers.")
    radial_cutoff_nm: float = Field(0.52, gt=0, description="Radial symmetry-function cutoff, nm.")
    angular_cutoff_nm: float = Field(0.35, gt=0, description="Angular symmetry-function cutoff, nm.")
    radial_shifts: int = Field(16, ge=1, description="Number of radial Gaussian centres.")
    radial_eta_per_nm2: float = Field(1600.0, gt=0, description="Radial Gaussian width parameter, 1/nm^2.")
    angular_shifts: int = Field(4, ge=1, description="Number of angular radial centres.")
    angular_sections: int = Field(8, ge=1, description="Number of angle sections theta_s.")
    angular_eta_per_nm2: float = Field(800.0, gt=0, description="Angular radial width parameter, 1/nm^2.")
    angular_zeta: float = Field(32.0, gt=0, description="Angular resolution exponent zeta.")
    hidden_layers: list[int] = Field([64, 32], description="Hidden layer widths of each element network.")
    embedding_cutoff_nm: float = Field(
        1.0,
        gt=0,
        description="Group cutoff: MM molecules whose closest atom is farther from the region are ignored, nm.",
    )
    embedding_switch_width_nm: float = Field(
        0.1, gt=0, description="Width of the molecule switch below the embedding cutoff, nm."
    )
    embedding_width_nm: float = Field(
        0.03,
        gt=0,
        description="Softening width w of the MM-charge kernel 1/sqrt(r^2 + w^2), nm, for the region elements and "
        "MM charge signs the training labels cannot fit (the others are fitted to the embedding energies).",
    )
    painn: PaiNNSettings = Field(default_factory=PaiNNSettings, description="PaiNN hyperparameters.")
    long_range: LongRangeSettings = Field(
        default_factory=LongRangeSettings, description="Explicit Coulomb and dispersion inside the region."
    )


class TrainSettings(Settings):
    """Training of the ensemble."""

    ensemble_size: int = Field(3, ge=1, description="Number of independently initialised members.")
    epochs: int = Field(150, ge=1, description="Training epochs per member.")
    batch_size: int = Field(16, ge=1, description="Configurations per optimiser step.")
    learning_rate: float = Field(3e-3, gt=0, description="Initial Adam learning rate.")
    energy_weight: float = Field(
        1.0, ge=0, description="Weight of the per-atom energy loss (normalised by its variance)."
    )
    force_weight: float = Field(
        20.0, ge=0, description="Weight of the force loss (normalised by the mean squared force)."
    )
    charge_weight: float = Field(0.2, ge=0, description="Weight of the charge loss (normalised by its variance).")
    embedding_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the embedding-energy loss (QM with point charges minus QM in vacuum).",
    )
    embedding_force_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the embedding-force loss: forces on the region from the MM charges (QM with point "
        "charges minus QM in vacuum), normalised by their mean square.",
    )
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of frames held out for testing.")
    seed: int = Field(0, description="Seed of the first member; member k uses seed + k.")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="Floating-point type used in training; the deployed model is always float64."
    )
    early_stopping_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Fraction of the training frames (random, seeded) set aside as the validation set that drives "
        "early stopping, the plateau schedule and the choice of the best epoch (the test set is never used).",
    )
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop a member after this many epochs without a better validation loss (0: never)."
    )
    lr_schedule: Literal["cosine", "plateau"] = Field(
        "cosine",
        description="'cosine' (anneal to learning_rate/20 over the epochs) or 'plateau' (multiply by "
        "plateau_factor after plateau_patience epochs without a better validation loss).",
    )
    plateau_patience: int = Field(10, ge=1, description="Epochs without improvement before the plateau schedule acts.")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="Learning-rate factor of the plateau schedule.")
    checkpoint_interval: int = Field(
        10, ge=1, description="Epochs between training checkpoints (a finished member is always checkpointed)."
    )
    max_force_kj_per_mol_nm: float = Field(
        2.0e4,
        gt=0,
        description="Largest force component accepted in the labels, kJ/mol/nm (2e4 = 478 kcal/mol/A); a larger one "
        "is treated as a broken label and refused before training.",
    )
    workers: int = Field(
        1, ge=1, description="Dask LocalCluster worker processes training members (1: in this process, no Dask)."
    )
    scheduler_address: str | None = Field(
        None, description="Address of a running Dask scheduler (e.g. tcp://host:8786); overrides `workers`."
    )


class SimulationSettings(Settings):
    """NNP/MM (or pure MM) molecular dynamics: `biomol-nnp run` and `biomol-nnp check-nve`.

    Combinations that cannot work together (NPT without a box, a threshold without a model, ...) are refused
    when a run starts (`biomol_nnp.simulate.runner.check_run_settings`).

    >>> settings = SimulationSettings(ensemble="npt", hydrogen_mass_amu=3.0, timestep_fs=4.0)
    >>> settings.checkpoint_interval % settings.report_interval
    0
    """

    model_path: Path = Field(Path("model.pt"), description="Deployed model file (model.pt).")
    embedding: Literal["electrostatic", "mechanical"] = Field(
        "electrostatic", description="How the ML region couples to the MM charges."
    )
    steps: int = Field(1000, ge=1, description="MD steps.")
    timestep_fs: float = Field(1.0, gt=0, description="Time step, fs.")
    temperature_k: float = Field(300.0, gt=0, description="Thermostat temperature, K.")
    friction_per_ps: float = Field(1.0, gt=0, description="Langevin friction, 1/ps.")
    report_interval: int = Field(50, ge=1, description="Steps between trajectory and CSV reports.")
    seed: int = Field(1, description="Seed for velocities and the integrator.")
    torch_threads: int = Field(1, ge=1, description="torch threads inside the force callback.")
    prepared_dir: Path | None = Field(
        None,
        description="Folder written by `biomol-nnp prepare` (system.xml, topology.pdb, region.json) to simulate "
        "instead of SystemSettings' solvated PDB.",
    )
    mm_only: bool = Field(False, description="Run the pure MM System (no model), e.g. to compare with NNP/MM.")
    ensemble: Literal["nvt", "npt"] = Field("nvt", description="'nvt' or 'npt' (Monte Carlo barostat).")
    pressure_bar: float = Field(1.0, gt=0, description="Barostat pressure (NPT), bar.")
    barostat_interval: int = Field(25, ge=1, description="Steps between Monte Carlo volume moves (NPT).")
    hydrogen_mass_amu: float | None = Field(
        None,
        gt=0,
        description="Hydrogen mass repartitioning: hydrogens get this mass (Da), taken from their bonded heavy "
        "atom (water untouched); e.g. 1.5 or 3.0 with a 2-4 fs time step. None keeps the masses.",
    )
    minimize_iterations: int = Field(50, ge=0, description="Energy-minimiser iterations before MD (0: none).")
    trajectory_format: Literal["dcd", "xtc"] = Field("dcd", description="Trajectory file format.")
    checkpoint_interval: int = Field(
        1000, ge=1, description="Steps between atomic checkpoints; a multiple of report_interval."
    )
    report_uncertainty: bool = Field(
        True, description="Log the ensemble energy std and max per-atom force std at each report (needs a model)."
    )
    force_std_threshold_kj_mol_nm: float | None = Field(
        None, gt=0, description="Uncertainty guard: max per-atom force std above which the action is taken, kJ/mol/nm."
    )
    uncertainty_action: Literal["warn", "stop", "collect"] = Field(
        "warn",
        description="Above the threshold: 'warn' (log), 'stop' (checkpoint, frame saved, run stops) or 'collect' "
        "(frame written to uncertain/ for labelling, run goes on).",
    )
    water_restraint_k: float = Field(
        1000.0,
        ge=0,
        description="Flat-bottom restraints for a region with waters, kJ/mol/nm^2 (0: none): region waters stay "
        "within, MM waters outside, spheres around the region's other atoms (radii from the start positions).",
    )
    water_restraint_margin_nm: float = Field(
        0.05, gt=0, description="Margin added to the region-water sphere radius (and taken from the MM one), nm."
    )
    nve_steps: int = Field(2000, ge=10, description="`check-nve`: NVE (Verlet) steps.")
    nve_timestep_fs: float = Field(0.5, gt=0, description="`check-nve`: time step, fs.")
    nve_report_interval: int = Field(10, ge=1, description="`check-nve`: steps between energy samples.")


class RefitSettings(Settings):
    """Backbone torsion refit from the model's phi and psi profiles."""

    scan_step_deg: float = Field(15.0, gt=0, le=90, description="Spacing of the torsion scan, degrees.")
    periodicities: list[int] = Field([1, 2, 3, 4], description="Fourier periodicities to fit.")
    restraint_k_kj_per_rad2: float = Field(
        2000.0, gt=0, description="Harmonic dihedral restraint constant of the scan, kJ/mol/rad^2."
    )
    max_iterations: int = Field(500, ge=1, description="L-BFGS iterations per scan point (relaxed scan).")
    relax_with: Literal["mm", "model"] = Field(
        "mm",
        description="Surface the scan geometries are relaxed on: 'mm' (robust: the model is evaluated on physical "
        "geometries) or 'model' (the model's own relaxed profile; needs a model that is good far from its data).",
    )


class ActiveLearningSettings(Settings):
    """`biomol-nnp active-learn`: NNP/MM walkers -> uncertain, diverse frames -> QM labels -> warm-started retraining.

    >>> settings = ActiveLearningSettings(initial_model="model/model.pt", labels_path="labels.h5")
    >>> settings.labels_per_iteration
    8
    """

    initial_model: Path | None = Field(
        None, description="Deployed model.pt the loop starts from (trained by `biomol-nnp train`); required."
    )
    labels_path: Path | None = Field(
        None,
        description="Label store (HDF5) the model was trained on; new labels are appended to it; required.",
    )
    test_labels_path: Path | None = Field(
        None,
        description="Held-out label store (never trained on) whose force and energy errors are reported per "
        "iteration; None reports only the errors on the trainer's own held-out split.",
    )
    walkers: int = Field(4, ge=1, description="NNP/MM walkers per iteration (independent seeds), one Dask task each.")
    walker_steps: int = Field(500, ge=1, description="MD steps of each walker per iteration.")
    frame_interval: int = Field(50, ge=1, description="Steps between the frames a walker keeps for selection.")
    minimize_iterations: int = Field(
        50,
        ge=0,
        description="Energy-minimiser iterations of each walker before its MD (0: none); on the MM surface before "
        "the MM equilibration when mm_equilibration_steps > 0 (the NNP/MM walker is then not minimised).",
    )
    mm_equilibration_steps: int = Field(
        0,
        ge=0,
        description="Pure MM MD steps (the walker's seed) from the minimised structure before the walker switches "
        "to NNP/MM, so the solvent around the region is equilibrated and walkers start apart (0: none).",
    )
    force_std_threshold_kj_per_mol_nm: float = Field(
        50.0,
        gt=0,
        description="A frame is uncertain when the largest per-atom ensemble force standard deviation of its "
        "carved region (with point charges) exceeds this, kJ/mol/nm.",
    )
    target_uncertain_fraction: float = Field(
        0.05, ge=0, le=1, description="Stop when the fraction of uncertain frames of an iteration falls below this."
    )
    threshold_quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="When set, force_std_threshold_kj_per_mol_nm is replaced by this quantile of the max force std "
        "of the first iteration's walker frames and kept fixed afterwards (recorded in state.json), so the "
        "threshold is measured on the configurations explored and a falling uncertain fraction shows learning "
        "(0.5: half the first iteration's frames are uncertain); None: the fixed threshold.",
    )
    selection_ceiling_kj_per_mol_nm: float | None = Field(
        None,
        gt=0,
        description="Frames whose max force std exceeds this are not labelled, kJ/mol/nm: the model is so far off "
        "there that the configuration is likely unphysical (DP-GEN's upper trust level); None: no ceiling.",
    )
    walker_stop_force_std_kj_per_mol_nm: float | None = Field(
        None,
        gt=0,
        description="A walker stops after the first frame whose max force std exceeds this, kJ/mol/nm (the frame "
        "is kept as a candidate label; the model is off its domain and later frames are distorted); None: never.",
    )
    labels_per_iteration: int = Field(8, ge=1, description="Most frames selected and labelled per iteration.")
    max_iterations: int = Field(3, ge=1, description="Most iterations (walkers, selection, labelling, retraining).")
    max_labels: int = Field(64, ge=1, description="Most frames labelled over the whole run.")
    retrain_epochs: int = Field(20, ge=1, description="Epochs of the warm-started retraining per iteration.")
    retrain_learning_rate: float = Field(
        2e-4,
        gt=0,
        description="Initial Adam learning rate of the warm-started retraining (cosine-annealed); near the rate a "
        "training ends at (learning_rate / 20), since a larger one throws the trained model out of its minimum.",
    )
    workers: int = Field(
        2, ge=0, description="Dask LocalCluster worker processes for the walkers (0: run them in this process)."
    )
    scheduler_address: str | None = Field(
        None, description="Address of a running Dask scheduler (e.g. tcp://host:8786); overrides `workers`."
    )
    seed: int = Field(100, description="Seed of walker w in iteration i: seed + 1000 i + w.")


class PipelineSettings(Settings):
    """Every stage of the end-to-end path, as `biomol-nnp demo` runs it."""

    system: SystemSettings = Field(default_factory=SystemSettings, description="MM system and ML region.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="Configurations.")
    labels: LabelSettings = Field(default_factory=LabelSettings, description="QM labelling.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="Model architecture.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Ensemble training.")
    simulation: SimulationSettings = Field(default_factory=SimulationSettings, description="NNP/MM MD.")
    refit: RefitSettings = Field(default_factory=RefitSettings, description="Torsion refit.")
    active: ActiveLearningSettings = Field(
        default_factory=ActiveLearningSettings, description="Active-learning loop."
    )


class PrepareSettings(Settings):
    """`biomol-nnp prepare`: fix a PDB, protonate, solvate, parameterize, and choose the ML region.

    >>> settings = PrepareSettings(forcefield="charmm36", padding_nm=1.2, region_selection="resid 45-50")
    >>> settings.ionic_strength_molar
    0.15
    """

    forcefield: Literal["amber14", "charmm36"] = Field(
        "amber14",
        description="'amber14' (amber14-all.xml + amber14/tip3p.xml: ff14SB, TIP3P) or 'charmm36' "
        "(charmm36.xml + charmm36/water.xml: CHARMM36, CHARMM TIP3P).",
    )
    ph: float = Field(7.0, ge=0, le=14, description="pH that sets the protonation states of titratable residues.")
    add_missing_residues: bool = Field(
        True, description="Build residues missing inside a chain (SEQRES gaps); terminal gaps are never built."
    )
    replace_nonstandard_residues: bool = Field(
        True, description="Replace modified residues (e.g. MSE) by their standard parents."
    )
    remove_heterogens: bool = Field(
        True, description="Remove ligands, ions and other non-polymer residues (they need their own templates)."
    )
    keep_water: bool = Field(True, description="Keep crystal waters when heterogens are removed.")
    solvate: bool = Field(True, description="Fill a periodic box with water and ions (otherwise: vacuum).")
    padding_nm: float = Field(1.0, gt=0, description="Minimum solute-to-box-edge distance of the water box, nm.")
    box_shape: Literal["cube", "dodecahedron", "octahedron"] = Field(
        "cube", description="Shape of the periodic water box."
    )
    ionic_strength_molar: float = Field(
        0.15, ge=0, description="Salt added on top of the neutralizing counter-ions, mol/L."
    )
    neutralize: bool = Field(True, description="Add counter-ions so the box has zero net charge.")
    positive_ion: Literal["Na+", "K+", "Li+", "Rb+", "Cs+"] = Field("Na+", description="Cation of the salt.")
    negative_ion: Literal["Cl-", "Br-", "F-", "I-"] = Field("Cl-", description="Anion of the salt.")
    nonbonded_cutoff_nm: float = Field(
        1.0, gt=0, description="Direct-space cutoff of PME (periodic systems; vacuum uses no cutoff), nm."
    )
    constraints: Literal["none", "HBonds", "AllBonds", "HAngles"] = Field(
        "HBonds", description="Bonds constrained in the written System (OpenMM names)."
    )
    rigid_water: bool = Field(True, description="Rigid water molecules.")
    seed: int = Field(0, description="Seed of PDBFixer's placement of missing atoms.")
    region_selection: str | None = Field(
        None,
        description="MDAnalysis selection string of the ML region, evaluated on the written topology.pdb "
        "(e.g. 'protein and resid 45-50'); None writes no region.json.",
    )
    whole_residues: bool = Field(True, description="Extend the selected atoms to whole residues.")


class SamplingSystemSettings(Settings):
    """The System an enhanced-sampling run simulates: pure MM, NNP/MM, or a refitted force field.

    >>> SamplingSystemSettings(kind="refit", refit_xml=[Path("refit/refit.xml")]).kind
    'refit'
    """

    kind: Literal["mm", "nnp", "refit"] = Field(
        "mm",
        description="'mm' (force-field XMLs or a serialized System), 'nnp' (MM System + deployed model on the "
        "region, openmm-ml 'biomol-nnp'), 'refit' (refitted ffxml of `biomol-nnp refit` loaded before the base XMLs).",
    )
    pdb: Path = Field(
        SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb",
        description="Structure (topology and starting positions); a CRYST1 box means PME, none means no cutoff.",
    )
    forcefield: list[str] = Field(
        ["amber14-all.xml", "amber14/tip3p.xml"], description="Base OpenMM force-field XML files."
    )
    system_xml: Path | None = Field(
        None, description="Serialized OpenMM System (system.xml of `biomol-nnp prepare`) used instead of `forcefield`."
    )
    refit_xml: list[Path] = Field(
        [], description="Refitted ffxml files (kind 'refit'), loaded ahead of `forcefield` so their terms win."
    )
    model_path: Path | None = Field(None, description="Deployed model.pt (kind 'nnp').")
    region_residues: list[str] = Field(
        ["ACE", "ALA", "NME"], description="Residue names of the ML region (kind 'nnp', without region_selection)."
    )
    region_selection: str | None = Field(
        None, description="MDAnalysis selection of the ML region on `pdb` (overrides region_residues)."
    )
    embedding: Literal["electrostatic", "mechanical"] = Field(
        "electrostatic", description="How the ML region couples to the MM charges (kind 'nnp')."
    )
    torch_threads: int = Field(1, ge=1, description="torch threads inside the NNP force callback.")
    nonbonded_cutoff_nm: float = Field(0.9, gt=0, description="PME direct-space cutoff of periodic systems, nm.")
    constraints: Literal["none", "HBonds"] = Field("HBonds", description="Bond constraints of force-field systems.")


class CVSettings(Settings):
    """A collective variable: a torsion (rad, periodic) or a distance (nm) between atoms.

    Atoms come from 0-based ``atoms`` or from MDAnalysis ``selections`` (one atom each) on the system's PDB.

    >>> CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14]).periodic
    True
    """

    name: str = Field("cv", description="Name used in files and plots.")
    kind: Literal["torsion", "distance"] = Field("torsion", description="'torsion' (rad) or 'distance' (nm).")
    atoms: list[int] | None = Field(None, description="0-based atom indices: 4 for a torsion, 2 for a distance.")
    selections: list[str] | None = Field(
        None, description="MDAnalysis selections, each selecting exactly one atom (instead of `atoms`)."
    )
    min_value: float | None = Field(
        None, description="Lower end of the CV range (grid, windows), rad or nm; torsion default -pi."
    )
    max_value: float | None = Field(
        None, description="Upper end of the CV range, rad or nm; torsion default pi; required for distances."
    )
    width: float = Field(0.3, gt=0, description="Metadynamics Gaussian width (standard deviation), rad or nm.")
    grid_points: int | None = Field(
        None, ge=2, description="Bias grid points over [min_value, max_value] (default: 5 per width)."
    )

    @property
    def periodic(self) -> bool:
        """Torsions are periodic on [-pi, pi)."""
        return self.kind == "torsion"


class _SamplingRunSettings(Settings):
    """Integrator and run controls shared by metadynamics and umbrella sampling."""

    system: SamplingSystemSettings = Field(
        default_factory=SamplingSystemSettings, description="The System to simulate."
    )
    temperature_k: float = Field(300.0, gt=0, description="Thermostat temperature, K.")
    timestep_fs: float = Field(2.0, gt=0, description="Langevin time step, fs.")
    friction_per_ps: float = Field(1.0, gt=0, description="Langevin friction, 1/ps.")
    seed: int = Field(1, description="Seed of velocities and the integrator (walker/window k adds k).")
    platform: Literal["CPU", "Reference"] = Field("CPU", description="OpenMM platform.")
    threads: int = Field(1, ge=1, description="CPU platform threads per simulation.")
    minimize_iterations: int = Field(100, ge=0, description="Energy-minimiser iterations before MD.")
    workers: int = Field(0, ge=0, description="Dask LocalCluster worker processes (0: run in this process).")
    scheduler_address: str | None = Field(None, description="Running Dask scheduler address; overrides `workers`.")


class MetadynamicsSettings(_SamplingRunSettings):
    """Well-tempered metadynamics (openmm.app.Metadynamics), optionally with walkers sharing the bias.

    >>> MetadynamicsSettings(cvs=[CVSettings(name="phi", atoms=[4, 6, 8, 14])], steps=1000).walkers
    1
    """

    cvs: list[CVSettings] = Field(
        default_factory=lambda: [
            CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14], width=0.35),
            CVSettings(name="psi", kind="torsion", atoms=[6, 8, 14, 16], width=0.35),
        ],
        min_length=1,
        max_length=3,
        description="1 to 3 collective variables (all torsions or all distances); default alanine dipeptide phi/psi.",
    )
    steps: int = Field(50000, ge=1, description="MD steps per walker.")
    bias_factor: float = Field(6.0, gt=1, description="Well-tempered bias factor gamma (CV temperature T*gamma).")
    height_kj_mol: float = Field(1.2, gt=0, description="Initial Gaussian height, kJ/mol.")
    frequency: int = Field(500, ge=1, description="Steps between Gaussians.")
    save_frequency: int = Field(
        5000, ge=1, description="Steps between bias/state checkpoints (a multiple of `frequency`)."
    )
    walkers: int = Field(1, ge=1, description="Walkers sharing one bias through the bias folder (Dask tasks).")
    report_interval: int = Field(100, ge=1, description="Steps between recorded CV values.")
    fes_bins: int = Field(72, ge=4, description="Bins per CV of the reweighted free-energy surface.")


class UmbrellaSettings(_SamplingRunSettings):
    """Umbrella sampling along one CV with harmonic restraints, analysed with MBAR (pymbar 4).

    >>> UmbrellaSettings(windows=12).window_centers()[:2]  # doctest: +SKIP
    """

    cv: CVSettings = Field(
        default_factory=lambda: CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14]),
        description="The CV; windows span [min_value, max_value] (a torsion: the whole circle).",
    )
    windows: int = Field(24, ge=2, description="Number of umbrella windows (evenly spaced centres).")
    force_constant: float = Field(
        200.0, gt=0, description="Harmonic restraint constant, kJ/mol/rad^2 (torsion) or kJ/mol/nm^2 (distance)."
    )
    equilibration_steps: int = Field(2000, ge=0, description="Steps per window before sampling.")
    steps: int = Field(20000, ge=1, description="Sampling steps per window.")
    sample_interval: int = Field(50, ge=1, description="Steps between recorded CV values.")
    bins: int = Field(36, ge=2, description="Bins of the MBAR free-energy profile.")


class ReplicaExchangeSettings(_SamplingRunSettings):
    """Temperature replica exchange or REST2 of a region (openmm.app.ReplicaExchangeSampler).

    >>> ReplicaExchangeSettings(kind="temperature", n_replicas=6).max_temperature_k
    450.0
    """

    kind: Literal["temperature", "rest2"] = Field(
        "rest2",
        description="'temperature' (replicas at temperatures geometric from temperature_k to max_temperature_k) or "
        "'rest2' (all at temperature_k, the region's energy scaled as if it were at those temperatures).",
    )
    n_replicas: int = Field(4, ge=2, description="Number of replicas (= thermodynamic states).")
    max_temperature_k: float = Field(450.0, gt=0, description="Highest (effective) temperature of the ladder, K.")
    iterations: int = Field(100, ge=1, description="Exchange iterations (each runs every replica steps_per_iteration).")
    steps_per_iteration: int = Field(500, ge=1, description="MD steps of each replica between exchange attempts.")
    equilibration_steps: int = Field(1000, ge=0, description="MD steps of each replica in its state before sampling.")
    report_interval: int = Field(
        1, ge=1, description="Iterations between log, energies, per-state trajectory frames and replica checkpoints."
    )
    rest2_region_selection: str | None = Field(
        None,
        description="MDAnalysis selection of the REST2 region on system.pdb; default: the ML region (kind 'nnp') or "
        "system.region_selection / system.region_residues.",
    )
    trajectories: bool = Field(True, description="Write one DCD per thermodynamic state (state_<k>.dcd).")
    max_memory_gb: float | None = Field(
        None, gt=0, description="Memory the run may use, GB; default 80 % of the memory available now."
    )


class OpesSettings(_SamplingRunSettings):
    """OPES (openmm-opes) on torsion or distance CVs, the same CV settings as metadynamics.

    >>> OpesSettings(steps=1000).barrier_kj_mol
    30.0
    """

    cvs: list[CVSettings] = Field(
        default_factory=lambda: [
            CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14], width=0.35),
            CVSettings(name="psi", kind="torsion", atoms=[6, 8, 14, 16], width=0.35),
        ],
        min_length=1,
        max_length=2,
        description="1 or 2 CVs (both torsions or both distances); `width` is the initial kernel width, rad or nm.",
    )
    steps: int = Field(50000, ge=1, description="MD steps.")
    barrier_kj_mol: float = Field(30.0, gt=0, description="Free-energy barrier the bias should overcome, kJ/mol.")
    bias_factor: float | None = Field(None, gt=1, description="Bias factor gamma (default barrier / kT).")
    explore: bool = Field(False, description="OPES-explore (samples the well-tempered distribution).")
    frequency: int = Field(500, ge=1, description="Steps between kernel depositions.")
    adaptive_width: bool = Field(
        True, description="Kernel widths from the measured CV variance (else the fixed `width` of each CV)."
    )
    save_frequency: int = Field(
        5000, ge=1, description="Steps between OPES state + simulation checkpoints (a multiple of `frequency`)."
    )
    report_interval: int = Field(100, ge=1, description="Steps between recorded CV values and bias energies.")
