"""biomol_nnp.simulate: production MD of NNP/MM (or pure MM) Systems.

- `runner`: `run_md` (NVT/NPT Langevin, checkpoints, ``--resume``), `benchmark_ns_per_day`, System builders;
- `systems`: the System a run integrates (shipped dipeptide or a `biomol-nnp prepare` folder, HMR, barostat,
  region-water restraints, link-atom caps, force groups);
- `reporters`: OpenMM reporters (log with per-term energies and uncertainty, NaN guard, uncertainty guard,
  checkpoints, progress);
- `checkpoint`: atomic checkpoints and the file truncation that makes resume exact;
- `uncertainty`: `ensemble_uncertainty` of a deployed model and the in-run `ModelMonitor`;
- `nve`: `check_nve` / `nve_drift`, the energy-conservation check.
"""
