"""Structural analyses of trajectories with MDAnalysis: Ramachandran histograms, hydrogen-bond occupancy, RDFs.

Each analysis returns a result object (angles in degrees, distances in nm) and has a writer that puts
JSON, CSV and a PNG plot into a folder (atomically). :func:`analyze` runs one by name; it is what
``biomol-nnp analyze TRAJ TOPOLOGY --kind ramachandran|hbonds|rdf|dielectric`` calls.

>>> result = ramachandran(load_universe("md.dcd", "topology.pdb"))  # doctest: +SKIP
>>> result.populations["alpha_R"]  # doctest: +SKIP
0.62
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.io import atomic_path, write_json_atomic, write_text_atomic
from biomol_nnp.units import ANGSTROM_TO_NM, NM_TO_ANGSTROM

logger = logging.getLogger(__name__)

KINDS = ("ramachandran", "hbonds", "rdf", "dielectric")
"""Analyses :func:`analyze` runs."""
WATER_OXYGENS = "resname HOH WAT SOL TIP3 and name O OW OH2"
"""Default selection of water oxygens (OpenMM/Amber, GROMACS and CHARMM names)."""


def load_universe(trajectory: str | os.PathLike, topology: str | os.PathLike) -> Any:
    """``MDAnalysis.Universe(topology, trajectory)`` with errors that name the missing file."""
    import MDAnalysis

    for name, path in (("topology", topology), ("trajectory", trajectory)):
        if not Path(path).is_file():
            raise InputError(f"{name} file {str(path)!r} does not exist; give a file MDAnalysis can read")
    return MDAnalysis.Universe(str(topology), str(trajectory))


def has_charges_attr(universe: Any) -> bool:
    """Whether the topology carries partial charges (PSF, PRMTOP, TPR do; PDB does not)."""
    return _has_attr(universe, "charges")


def _has_attr(universe: Any, name: str) -> bool:
    from MDAnalysis.exceptions import NoDataError

    try:
        getattr(universe.atoms, name)
    except (AttributeError, NoDataError):
        return False
    return True


def _bonded(atoms: Any) -> bool:
    """Whether every atom has a bond in the topology (a PDB's CONECT records may cover only some residues)."""
    return _has_attr(atoms.universe, "bonds") and all(len(atom.bonds) for atom in atoms)


def _frames(universe: Any, start: int, stop: int | None, step: int) -> int:
    n = len(range(*slice(start, stop, step).indices(len(universe.trajectory))))
    if n == 0:
        raise InputError(
            f"frames start={start} stop={stop} step={step} select none of the {len(universe.trajectory)} frames"
        )
    return n


def _select(universe: Any, selection: str, what: str) -> Any:
    atoms = universe.select_atoms(selection)
    if len(atoms) == 0:
        raise InputError(f"{what} selection {selection!r} matches no atom; check the residue and atom names")
    return atoms


def _save_png(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5, 4))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- Ramachandran


@dataclasses.dataclass
class RamachandranResult:
    """Backbone phi/psi of each residue in each frame and their 2-D histogram.

    Attributes
    ----------
    angles : numpy.ndarray, shape (frames, residues, 2)
        (phi, psi), degrees in [-180, 180].
    residues : list of str
        ``RESNAME RESID`` of each residue.
    edges : numpy.ndarray, shape (bins + 1,)
        Bin edges of both axes, degrees.
    density : numpy.ndarray, shape (bins, bins)
        Probability density over (phi, psi), 1/degree^2 (sums to 1 times the bin area).
    populations : dict
        Fraction of all (frame, residue) samples in ``alpha_R`` (phi < 0, -120 < psi <= 50), ``beta_ppII``
        (phi < 0, other psi) and ``alpha_L`` (phi >= 0).
    """

    angles: np.ndarray
    residues: list[str]
    edges: np.ndarray
    density: np.ndarray
    populations: dict[str, float]


def ramachandran(
    universe: Any, selection: str = "protein", bins: int = 72, start: int = 0, stop: int | None = None, step: int = 1
) -> RamachandranResult:
    """phi/psi of the residues in ``selection`` that have both neighbours (MDAnalysis ``Ramachandran``)."""
    from MDAnalysis.analysis.dihedrals import Ramachandran

    atoms = _select(universe, selection, "Ramachandran")
    _frames(universe, start, stop, step)
    if bins < 2:
        raise InputError(f"bins={bins} is not allowed; give at least 2 bins per angle")
    try:
        analysis = Ramachandran(atoms, check_protein=False).run(start=start, stop=stop, step=step)
    except ValueError as err:
        raise InputError(
            f"Ramachandran of {selection!r}: {err}; select residues that have a preceding C and a following N "
            "(caps such as ACE/NME count as neighbours)"
        ) from err
    angles = np.asarray(analysis.results.angles, dtype=float)
    residues = [f"{r.resname} {r.resid}" for r in analysis.ag3.residues]  # ag1..ag4: C(i-1), N, CA, C
    edges = np.linspace(-180.0, 180.0, bins + 1)
    flat = angles.reshape(-1, 2)
    density, _, _ = np.histogram2d(flat[:, 0], flat[:, 1], bins=[edges, edges], density=True)
    phi, psi = flat[:, 0], flat[:, 1]
    alpha = (phi < 0) & (psi > -120) & (psi <= 50)
    populations = {
        "alpha_R": float(np.mean(alpha)),
        "beta_ppII": float(np.mean((phi < 0) & ~alpha)),
        "alpha_L": float(np.mean(phi >= 0)),
    }
    logger.info("Ramachandran: %d residues x %d frames; populations %s", len(residues), len(angles), populations)
    return RamachandranResult(angles, residues, edges, density, populations)


def write_ramachandran(result: RamachandranResult, output_dir: str | os.PathLike) -> dict[str, Path]:
    """``ramachandran.json`` (histogram, populations), ``ramachandran.csv`` (per frame/residue), ``.png``."""
    out = Path(output_dir)
    rows = [
        [frame, residue, round(float(a[0]), 3), round(float(a[1]), 3)]
        for frame, per_frame in enumerate(result.angles)
        for residue, a in zip(result.residues, per_frame, strict=True)
    ]
    paths = {
        "csv": _write_csv(out / "ramachandran.csv", ["frame", "residue", "phi_deg", "psi_deg"], rows),
        "json": write_json_atomic(
            out / "ramachandran.json",
            {
                "residues": result.residues,
                "frames": int(result.angles.shape[0]),
                "edges_deg": result.edges.tolist(),
                "density_per_deg2": result.density.tolist(),
                "populations": result.populations,
            },
        ),
    }
    fig, ax = _figure()
    mesh = ax.pcolormesh(result.edges, result.edges, result.density.T, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="probability density (1/deg$^2$)")
    ax.set_xlabel("phi (deg)")
    ax.set_ylabel("psi (deg)")
    ax.set_title(f"Ramachandran, {len(result.residues)} residues")
    paths["png"] = _save_png(fig, out / "ramachandran.png")
    return paths


# ---------------------------------------------------------------- hydrogen bonds


@dataclasses.dataclass
class HBondResult:
    """Occupancy of each donor-hydrogen...acceptor triple over the analysed frames.

    Attributes
    ----------
    rows : list of dict
        One per triple seen at least once: ``donor``, ``hydrogen``, ``acceptor`` (labels ``RESNAME RESID
        ATOM``), their 0-based ``*_index`` and ``occupancy`` (fraction of frames), sorted by occupancy.
    frames : int
    distance_cutoff_nm, angle_cutoff_deg : float
    """

    rows: list[dict[str, Any]]
    frames: int
    distance_cutoff_nm: float
    angle_cutoff_deg: float


def _label(atom: Any) -> str:
    return f"{atom.resname} {atom.resid} {atom.name}"


def hbond_occupancy(
    universe: Any,
    selection: str = "protein",
    donors_sel: str | None = None,
    hydrogens_sel: str | None = None,
    acceptors_sel: str | None = None,
    distance_cutoff_nm: float = 0.3,
    angle_cutoff_deg: float = 150.0,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
) -> HBondResult:
    """Hydrogen-bond occupancy with ``MDAnalysis.analysis.hydrogenbonds.HydrogenBondAnalysis``.

    Without explicit selections, hydrogens and acceptors of ``selection`` are guessed by MDAnalysis from
    masses and charges when the topology has charges (PSF, PRMTOP, TPR), else taken by element (H; N, O);
    donors are the atoms bonded to those hydrogens, or (atoms without bonds in the topology) the N and O
    within 0.12 nm.
    Criteria: donor-acceptor distance <= ``distance_cutoff_nm`` (nm) and donor-hydrogen-acceptor angle
    >= ``angle_cutoff_deg`` (degrees).
    """
    from MDAnalysis.analysis.hydrogenbonds import HydrogenBondAnalysis

    atoms = _select(universe, selection, "hydrogen-bond")
    frames = _frames(universe, start, stop, step)
    if distance_cutoff_nm <= 0 or not 90.0 <= angle_cutoff_deg <= 180.0:
        raise InputError(
            f"distance_cutoff_nm={distance_cutoff_nm}, angle_cutoff_deg={angle_cutoff_deg}: need a positive "
            "distance (nm, typically 0.3-0.35) and an angle in [90, 180] degrees (typically 120-150)"
        )
    has_charges = has_charges_attr(universe)
    analysis = HydrogenBondAnalysis(
        universe,
        donors_sel=donors_sel or (None if _bonded(atoms) else f"({selection}) and (element O or element N)"),
        hydrogens_sel=hydrogens_sel or (None if has_charges else f"({selection}) and element H"),
        acceptors_sel=acceptors_sel or (None if has_charges else f"({selection}) and (element O or element N)"),
        d_a_cutoff=distance_cutoff_nm * NM_TO_ANGSTROM,
        d_h_a_angle_cutoff=angle_cutoff_deg,
    )
    if has_charges:  # MDAnalysis guesses from masses and charges, restricted to the selection
        analysis.hydrogens_sel = hydrogens_sel or analysis.guess_hydrogens(selection)
        analysis.acceptors_sel = acceptors_sel or analysis.guess_acceptors(selection)
    analysis.run(start=start, stop=stop, step=step)
    rows: list[dict[str, Any]] = []
    found = np.asarray(analysis.results.hbonds).reshape(-1, 6)  # frame, donor, hydrogen, acceptor, distance, angle
    triples, counts = np.unique(found[:, 1:4].astype(np.int64), axis=0, return_counts=True)
    atoms = universe.atoms
    for (donor, hydrogen, acceptor), count in zip(triples, counts, strict=True):
        rows.append(
            {
                "donor": _label(atoms[donor]),
                "hydrogen": _label(atoms[hydrogen]),
                "acceptor": _label(atoms[acceptor]),
                "donor_index": int(donor),
                "hydrogen_index": int(hydrogen),
                "acceptor_index": int(acceptor),
                "occupancy": float(count) / frames,
            }
        )
    rows.sort(key=lambda row: -row["occupancy"])
    logger.info("hydrogen bonds: %d distinct over %d frames", len(rows), frames)
    return HBondResult(rows, frames, distance_cutoff_nm, angle_cutoff_deg)


def write_hbonds(result: HBondResult, output_dir: str | os.PathLike, top: int = 20) -> dict[str, Path]:
    """``hbonds.csv`` (all triples), ``hbonds.json`` (criteria + rows), ``hbonds.png`` (the ``top`` most occupied)."""
    out = Path(output_dir)
    header = ["donor", "hydrogen", "acceptor", "donor_index", "hydrogen_index", "acceptor_index", "occupancy"]
    paths = {
        "csv": _write_csv(out / "hbonds.csv", header, [[row[key] for key in header] for row in result.rows]),
        "json": write_json_atomic(out / "hbonds.json", dataclasses.asdict(result)),
    }
    fig, ax = _figure()
    shown = result.rows[:top]
    ax.barh([f"{r['donor']} -> {r['acceptor']}" for r in shown][::-1], [r["occupancy"] for r in shown][::-1])
    ax.set_xlabel(f"occupancy over {result.frames} frames")
    ax.set_xlim(0, 1)
    ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    paths["png"] = _save_png(fig, out / "hbonds.png")
    return paths


# ---------------------------------------------------------------- radial distribution functions


@dataclasses.dataclass
class RDFResult:
    """Radial distribution function g(r) between two selections.

    Attributes
    ----------
    r_nm : numpy.ndarray, shape (bins,)
        Bin centres, nm.
    g : numpy.ndarray, shape (bins,)
        g(r), normalised to 1 for an uncorrelated (ideal-gas) pair density.
    first_peak_nm, first_peak_height : float
        Position (nm) and height of the maximum of g.
    first_minimum_nm : float
        First minimum after the peak, nm.
    coordination_number : float
        4 pi rho int_0^{first minimum} g r^2 dr (partners of a ``selection2`` kind around one ``selection1`` atom).
    """

    r_nm: np.ndarray
    g: np.ndarray
    first_peak_nm: float
    first_peak_height: float
    first_minimum_nm: float
    coordination_number: float
    selection1: str
    selection2: str
    frames: int


def water_rdf(
    universe: Any,
    selection1: str = WATER_OXYGENS,
    selection2: str | None = None,
    r_max_nm: float = 1.0,
    bins: int = 100,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
) -> RDFResult:
    """g(r) between ``selection1`` and ``selection2`` (default: the same, water O-O) with ``InterRDF``.

    Pairs within one residue are excluded (so an atom is never its own partner). The trajectory must be
    periodic; ``r_max_nm`` must stay below half the shortest box edge.
    """
    from MDAnalysis.analysis.rdf import InterRDF

    group1 = _select(universe, selection1, "RDF")
    group2 = _select(universe, selection2 or selection1, "RDF")
    frames = _frames(universe, start, stop, step)
    dimensions = universe.trajectory.ts.dimensions
    if dimensions is None:
        raise InputError("the trajectory has no periodic box; an RDF needs one (its density comes from the volume)")
    half_box = 0.5 * float(np.min(dimensions[:3])) * ANGSTROM_TO_NM
    if not 0 < r_max_nm <= half_box or bins < 2:
        raise InputError(
            f"r_max_nm={r_max_nm}, bins={bins}: need 0 < r_max_nm <= half the shortest box edge ({half_box:.3f} nm) "
            "and at least 2 bins"
        )
    analysis = InterRDF(
        group1, group2, nbins=bins, range=(0.0, r_max_nm * NM_TO_ANGSTROM), exclusion_block=None, exclude_same="residue"
    ).run(start=start, stop=stop, step=step)
    r = np.asarray(analysis.results.bins) * ANGSTROM_TO_NM
    g = np.asarray(analysis.results.rdf)
    peak = int(np.argmax(g))
    after = g[peak:]
    minimum = peak + int(np.argmin(after)) if len(after) > 1 else peak
    volume_nm3 = float(universe.trajectory.ts.volume) * ANGSTROM_TO_NM**3
    density = len(group2) / volume_nm3
    dr = r[1] - r[0]
    shell = 4.0 * np.pi * density * g[: minimum + 1] * r[: minimum + 1] ** 2 * dr
    return RDFResult(
        r, g, float(r[peak]), float(g[peak]), float(r[minimum]), float(np.sum(shell)), selection1,
        selection2 or selection1, frames,
    )  # fmt: skip


def write_rdf(result: RDFResult, output_dir: str | os.PathLike, stem: str = "rdf") -> dict[str, Path]:
    """``rdf.csv`` (r nm, g), ``rdf.json`` (peak, minimum, coordination number), ``rdf.png``."""
    out = Path(output_dir)
    data = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("r_nm", "g")}
    paths = {
        "csv": _write_csv(
            out / f"{stem}.csv",
            ["r_nm", "g"],
            [[round(float(a), 5), float(b)] for a, b in zip(result.r_nm, result.g, strict=True)],
        ),
        "json": write_json_atomic(out / f"{stem}.json", data),
    }
    fig, ax = _figure()
    ax.plot(result.r_nm, result.g)
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("r (nm)")
    ax.set_ylabel("g(r)")
    ax.set_title(f"{result.selection1} / {result.selection2}", fontsize=8)
    paths["png"] = _save_png(fig, out / f"{stem}.png")
    return paths


# ---------------------------------------------------------------- one entry point


def analyze(
    trajectory: str | os.PathLike,
    topology: str | os.PathLike,
    kind: str,
    output_dir: str | os.PathLike,
    selection: str | None = None,
    start: int = 0,
    temperature_k: float = 300.0,
    system_xml: str | None = None,
    n_blocks: int = 5,
) -> dict[str, Path]:
    """Run one analysis (``kind`` in :data:`KINDS`) on a trajectory and write its files into ``output_dir``.

    ``selection`` replaces the default atoms (``protein`` for Ramachandran and H-bonds, water oxygens for the
    RDF, water residues for the dielectric constant); ``temperature_k`` (K), ``system_xml`` (charges) and
    ``n_blocks`` are for ``dielectric``. Returns the written files by type.
    """
    if kind not in KINDS:
        raise InputError(f"kind={kind!r} is not an analysis; choose one of {list(KINDS)}")
    if kind == "dielectric":
        from biomol_nnp.analysis.dielectric import WATER_RESNAMES, charges_from_system, dielectric_from_trajectory

        load_universe(trajectory, topology)  # file checks
        result = dielectric_from_trajectory(
            str(trajectory),
            str(topology),
            temperature_k,
            charges_e=charges_from_system(system_xml) if system_xml else None,
            selection=selection or "resname " + " ".join(WATER_RESNAMES),
            n_blocks=n_blocks,
            start=start,
        )
        return {"json": write_json_atomic(Path(output_dir) / "dielectric.json", result.to_dict())}
    universe = load_universe(trajectory, topology)
    if kind == "ramachandran":
        return write_ramachandran(ramachandran(universe, selection or "protein", start=start), output_dir)
    if kind == "hbonds":
        return write_hbonds(hbond_occupancy(universe, selection or "protein", start=start), output_dir)
    return write_rdf(water_rdf(universe, selection or WATER_OXYGENS, start=start), output_dir)
