"""Settings files for ``forcefield-refit torsions|cmap|hbonds`` (pydantic v2, ``extra="forbid"``, YAML or JSON).

Energies kJ/mol, distances nm, angles degrees. A typo in a key is an error, not a silently ignored option.

Example (``torsions.yaml``)::

    reference: {forcefield: [amber14-all.xml]}
    base_forcefield: [amber99sb.xml]
    label_by: class
    profiles:
      - {name: ala_phi, pdb: systems/dipeptides/ala.pdb, dihedral: phi}
    output: {directory: refit_out, formats: [frcmod, prm, itp, ffxml]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forcefield_refit.exceptions import RefitInputError

Format = Literal["frcmod", "prm", "itp", "ffxml", "prmtop"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceSettings(_Strict):
    """Where target energies come from: OpenMM force-field files, or a Python factory ``module:function``."""

    forcefield: list[str] | None = Field(None, description="ffxml files of a reference force field (closed loops)")
    factory: str | None = Field(
        None,
        description="'package.module:function'; called as function(molecule) -> EnergyFunction (an NNP, a QM engine)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ReferenceSettings:
        if (self.forcefield is None) == (self.factory is None):
            raise ValueError("give exactly one of reference.forcefield or reference.factory")
        return self


class OutputSettings(_Strict):
    """Which files to write, and where."""

    directory: Path = Field(description="output folder (created if missing)")
    formats: list[Format] = Field(
        ["frcmod", "prm", "itp", "ffxml"],
        description="parameter file formats; 'prmtop' (cmap only): one Amber prmtop + inpcrd per profile molecule "
        "with the fitted CMAP, since a frcmod cannot hold CMAP",
    )
    prefix: str = Field("refit", description="file name stem")
    overwrite: bool = Field(False, description="replace existing files")
    plots: bool = Field(True, description="one PNG per profile (target, original, refit)")


class TorsionProfileSettings(_Strict):
    """One 1-D scan."""

    name: str = Field(description="profile label, used in file names")
    pdb: Path = Field(description="molecule with bonds (PDB), nm positions")
    dihedral: Literal["phi", "psi", "chi1"] | list[int] = Field(
        description="backbone name (ACE-X-NME) or four 0-based atom indices"
    )
    fit_types: list[list[str]] | None = Field(
        None, description="type quadruples to refit; default: the scanned dihedral's own types"
    )


class ScanSettings(_Strict):
    """Relaxed restrained scan options."""

    step_deg: float = Field(15.0, gt=0, le=120, description="grid spacing, degrees")
    restraint_k: float = Field(2000.0, gt=0, description="kJ/mol/rad^2")
    max_iterations: int = Field(400, ge=1, description="L-BFGS-B iterations per point")


class TorsionFitSettings(_Strict):
    """Fourier fit options."""

    periodicities: list[int] = Field([1, 2, 3, 4, 5, 6], description="1..6")
    ridge: float = Field(0.0, ge=0, description="ridge penalty on the Fourier amplitudes (0: plain least squares)")
    prior: Literal["base", "zero"] = Field(
        "base",
        description="what the ridge pulls toward: 'base' = the base force field's terms of each fitted quadruple "
        "(directions the scans do not determine stay at the starting parameters), 'zero' = plain ridge",
    )
    temperature_k: float | None = Field(None, gt=0, description="Boltzmann weighting temperature, K")
    phases: Literal["free", "0/180"] = Field("free", description="free phases or 0/180 only")


class TorsionsSettings(_Strict):
    """``forcefield-refit torsions``."""

    reference: ReferenceSettings
    base_forcefield: list[str] = Field(["amber14-all.xml"], description="force field being refit")
    label_by: Literal["type", "class"] = Field("type", description="'class' for amber99sb.xml")
    profiles: list[TorsionProfileSettings] = Field(min_length=1)
    only_differing: bool = Field(
        False,
        description="fit only the dihedral classes whose terms differ between base_forcefield and "
        "reference.forcefield on the profile molecules (profiles[].fit_types ignored; needs reference.forcefield); "
        "classes whose instances disagree are left at the base terms and listed in the report",
    )
    scan: ScanSettings = ScanSettings()
    fit: TorsionFitSettings = TorsionFitSettings()
    output: OutputSettings


class CmapProfileSettings(_Strict):
    """One 2-D phi/psi scan of a capped dipeptide."""

    name: str
    pdb: Path


class CmapSettings(_Strict):
    """``forcefield-refit cmap``: one map fitted jointly to all profiles (they must share the five types)."""

    reference: ReferenceSettings
    base_forcefield: list[str] = Field(["amber14-all.xml"])
    profiles: list[CmapProfileSettings] = Field(min_length=1)
    n_grid: int = Field(24, ge=4, description="scan points per angle (even); coarser than 24 is interpolated")
    resolution: int = Field(24, ge=4, description="CMAP grid written")
    order: int | None = Field(None, ge=1, description="2-D Fourier order; default from the number of points")
    ridge: float = Field(1e-6, ge=0)
    restraint_k: float = Field(2000.0, gt=0)
    max_iterations: int = Field(300, ge=1)
    output: OutputSettings


class DimerSettings(_Strict):
    """One rigid H-bond dimer scan; a monomer is 'water' (TIP3P geometry) or a PDB path."""

    name: str
    donor: str = Field(description="'water' or PDB path of the donor monomer")
    acceptor: str = Field(description="'water' or PDB path of the acceptor monomer")
    donor_atoms: list[int] = Field(min_length=3, max_length=3, description="[heavy, H, plane atom] in the donor")
    acceptor_atom: int
    acceptor_back: list[int] = Field(min_length=1, description="acceptor atoms bonded to the acceptor atom")


class HbondsSettings(_Strict):
    """``forcefield-refit hbonds``."""

    reference: ReferenceSettings
    base_forcefield: list[str] = Field(["amber14-all.xml", "amber14/tip3p.xml"])
    dimers: list[DimerSettings] = Field(min_length=1)
    distances_nm: list[float] = Field([0.25, 0.27, 0.29, 0.31, 0.34, 0.38, 0.43])
    angles_deg: list[float] = Field([-30.0, 0.0, 30.0])
    nbfix_pairs: list[list[str]] = Field([], description="type pairs for NBFIX")
    hbond_terms: list[list[str]] = Field([], description="[donor heavy type, H type, acceptor type] per term")
    hbond_form: Literal["12-10", "12-10-6"] = Field(
        "12-10",
        description="'12-10': c12, c10 >= 0 (a classic H-bond well); '12-10-6': c12 >= 0, c10 and c6 of either sign "
        "(a short-range correction that can also weaken binding)",
    )
    angle_power: Literal[0, 1, 2, 4] = Field(2, description="p of the (-cos theta_DHA)^p factor; 0: no angle")
    fit_window_kcal: float | None = Field(
        None, gt=0, description="fit H-bond terms only on points within this many kcal/mol of each target minimum"
    )
    temperature_k: float | None = Field(1000.0, gt=0)
    output: OutputSettings


def load_settings(path: str | os.PathLike[str], model: type[BaseModel]) -> BaseModel:
    """Read a YAML (``.yaml``/``.yml``) or JSON settings file into ``model``.

    Raises
    ------
    RefitInputError
        Naming the file and pydantic's field-by-field report.
    """
    source = Path(path)
    if source.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise RefitInputError(f"settings={source}; allowed suffixes: .yaml, .yml, .json. Hint: see docs.")
    text = source.read_text()
    if source.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RefitInputError(
            f"settings={source} is not a valid {model.__name__}: {error}. Hint: unknown keys are rejected; "
            "see forcefield_refit/settings.py for every field."
        ) from error


def apply_overrides(settings: BaseModel, overrides: dict[str, object]) -> BaseModel:
    """A copy of ``settings`` with dotted keys replaced (``{"fit.ridge": 0.1}``), validated again.

    Raises
    ------
    RefitInputError
        Naming an unknown key or an invalid value.
    """
    data = settings.model_dump()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None  # type: ignore[assignment]
        if not isinstance(node, dict) or leaf not in node:
            raise RefitInputError(
                f"override {dotted}={value!r}: no such setting in {type(settings).__name__}; allowed: existing "
                "dotted keys such as 'fit.ridge'. Hint: see forcefield_refit/settings.py."
            )
        node[leaf] = value
    try:
        return type(settings).model_validate(data)
    except ValidationError as error:
        raise RefitInputError(
            f"overrides {overrides} are not valid for {type(settings).__name__}: {error}. Hint: see the flag's help."
        ) from error
