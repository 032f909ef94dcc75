"""Comparing the machine-learned IR spectra with reference MD and with experiment.

For each molecule: the ML spectrum (``ir``) against the reference-MD spectrum (``reference-md``,
label source, the same protocol and integrator) at every temperature both have, and the ML and
reference spectra at ``compare.temperature_K`` against the experimental gas-phase spectrum
(``experiment``), baseline corrected (:func:`palirs_data.experiment.corrected_experiment`) and
convolved with the MD line shape (:func:`palirs_data.spectra.convolve_to_md`: the Hann lag
window of the correlation depth, FWHM 1/(cT), 33 cm⁻¹ at 1000 fs, and the Lorentzian of the
MD's friction, FWHM γ/(2πc)), so that the experiment's rotational structure and sharp Q
branches meet the MD at its own resolution.

Each pair is put on one grid over ``compare.window_cm1`` (cut to the experiment's measured
range where an experiment takes part), normalised to unit area, and scored by Pearson's
correlation coefficient (PCC, 1 = same shape) and the Wasserstein-1 distance (WD) between the
two as distributions over wavenumber: in cm⁻¹, and dimensionless, the same distance on the
window's axis scaled to [0, 1] (WD_cm⁻¹ / window width), the form of the published tables.
Beside WD, the centroid shift (:func:`palirs_data.spectra.centroid_shift_cm1`): the first
moment of the first spectrum minus the second's on the same grid. W1 is at least its
magnitude; it is signed and linear in the spectra, so its interval can hold zero where a WD of
finite runs cannot (noise only raises a W1): on 480 real runs a WD of k runs was mostly the
noise of k runs (docs/method.md, "WD: a difference or noise?").

Uncertainty: each MD score carries a ``compare.confidence`` interval over the runs. ML and
reference runs with the same seeds (the ``ir`` protocol gives run k of both the same seed:
the same initial velocities and thermostat noise, so their mode energies, the main noise of a
spectrum, are correlated) are drawn and left out as pairs; other sets each on their own; the
experiment is fixed.

- Bootstrap (the default for both scores; :func:`palirs_data.spectra.bootstrap_weights`):
  ``compare.bootstrap_samples`` draws of the runs with replacement, each drawn run whole;
  the central percentiles of the draws' scores (:func:`percentile_interval`).
  ``compare.bootstrap_blocks`` also draws each drawn run's time blocks of
  ``compare.block_fs``, the way of the locks before 2026-12-06: on 192 real runs
  (``benchmarks/interval_calibration.py``; docs/method.md, "Do the intervals hold on real
  MD?") that was 1.3× wider and held the mean score of reruns no more often.
- Jackknife (``compare.pcc_interval`` / ``compare.wd_interval``: ``jackknife``;
  :func:`jackknife_interval`): each run (pair) left out in turn, the standard error
  sqrt((n − 1)/n · Σ (θ₍ᵢ₎ − θ̄)²) summed over the sets left out, the score ± z·se, PCC
  capped at 1: centred on the score, where the percentiles of a PCC near 1 lie below it.
- The centroid shift's interval is always the jackknife's with Student's t quantile (n − 1
  degrees of freedom, 2.20 at 12 runs, against z = 1.96): the shift is nearly linear in the
  runs' spectra, the case a t interval is made for, and the percentiles of a bootstrap of
  such a mean are too narrow at a few runs, by √((n − 1)/n) and by z < t. On 192 real paired
  runs (docs/method.md, "The shift's interval") the whole-run percentiles were 0.76–0.89×
  the scatter of reruns at 12–48 runs, the t interval 0.93–1.00×.

With the dipole model (``compare --dipole-model``, :func:`add_dipole_model_check`), each
molecule also gets ``dipole_model_on_reference_md``: the model's spectrum along the label
source's own runs against the label source's spectrum of the same runs. Only the dipoles
differ, so the MD's noise cancels and a few runs measure the intensity error that the ML
spectrum carries.

Fewer than two runs give no interval. The convergence of each molecule's ML–reference PCC
with the total ML production (the first k runs) shows whether there is enough.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
from scipy.stats import norm
from scipy.stats import t as student_t

from palirs_data.config import CompareConfig, IrConfig
from palirs_data.experiment import Experiment
from palirs_data.spectra import (CorrelationBlocks, Spectrum, bootstrap_weights, compare_spectra,
                                 correlation_blocks, pooled_spectrum)
from palirs_data.trajectory import dipoles_of

log = logging.getLogger(__name__)

PAIRS = ("ml_vs_reference", "ml_vs_experiment", "reference_vs_experiment")
#: the dipole model along the label source's MD against the label source's own dipoles there
#: (:func:`add_dipole_model_check`); a row of the tables, not a pair of spectra in the figures
DIPOLE_CHECK = "dipole_model_on_reference_md"
TABLE_ROWS = PAIRS + (DIPOLE_CHECK,)
LABELS = {"ml_vs_reference": "ML vs reference MD", "ml_vs_experiment": "ML vs experiment",
          "reference_vs_experiment": "reference MD vs experiment",
          DIPOLE_CHECK: "dipole model on ref. MD"}


@dataclass
class MdSpectrum:
    wavenumber_cm1: np.ndarray
    intensity: np.ndarray
    std: np.ndarray
    n_runs: int


def spectra_by_key(table: pa.Table | None) -> dict[tuple[str, float], MdSpectrum]:
    """A spectrum table (:data:`palirs_data.tables.SPECTRUM_SCHEMA`) by (molecule, T)."""
    if table is None or table.num_rows == 0:
        return {}
    d = table.to_pydict()
    out: dict[tuple[str, float], list[int]] = {}
    for i, key in enumerate(zip(d["molecule"], d["temperature_K"])):
        out.setdefault(key, []).append(i)
    result = {}
    for key, rows in out.items():
        rows = np.asarray(rows)
        nu = np.asarray(d["wavenumber_cm1"])[rows]
        order = np.argsort(nu)
        result[key] = MdSpectrum(nu[order], np.asarray(d["intensity"])[rows][order],
                                 np.asarray(d["std"])[rows][order], int(d["n_runs"][rows[0]]))
    return result


@dataclass
class MdRuns:
    """The runs of one molecule and temperature as correlation blocks
    (:class:`~palirs_data.spectra.CorrelationBlocks`), and their dipoles (for shorter cuts)."""

    blocks: list[CorrelationBlocks]
    dipoles: list[np.ndarray] = field(repr=False)
    timestep_fs: float
    zero_padding: int
    seeds: list[int] | None = None  # each run's seed: runs of two sets with equal seeds pair

    def spectrum(self, weights=None) -> tuple[np.ndarray, np.ndarray]:
        return pooled_spectrum(self.blocks, zero_padding=self.zero_padding, weights=weights)

    def draw(self, rng: np.random.Generator, blocks: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
        return self.spectrum(bootstrap_weights(self.blocks, rng, blocks=blocks))

    def leave_out(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The spectrum of every run but run ``i``."""
        return self.spectrum([np.full(b.n_blocks, float(j != i))
                              for j, b in enumerate(self.blocks)])

    def pairs_with(self, other: MdRuns) -> bool:
        """Whether run k of both sets started from the same seed (module docstring)."""
        return self.seeds is not None and self.seeds == other.seeds

    @classmethod
    def from_dipoles(cls, dipoles: list[np.ndarray], timestep_fs: float, ir: IrConfig,
                     block_fs: float, seeds: list[int] | None = None) -> MdRuns:
        """Runs from their dipole series (frames ``timestep_fs`` apart)."""
        return cls([correlation_blocks(d, timestep_fs, block_fs=block_fs,
                                       max_correlation_fs=ir.max_correlation_fs)
                    for d in dipoles], list(dipoles), timestep_fs, ir.zero_padding,
                   None if seeds is None else list(seeds))


def md_runs(store, ir: IrConfig, config: CompareConfig, dipoles: Callable = dipoles_of
            ) -> dict[tuple[str, float], MdRuns]:
    """Every (molecule, T) of a trajectory store (``ir`` or ``reference-md``) as
    :class:`MdRuns`; runs shorter than twice the correlation depth are left out, as in
    :func:`palirs_data.md_analysis.spectra_table`. ``dipoles`` gives a trajectory's dipole
    series (by default the stored one; another model's along the same frames: the runs
    keep their seeds, so they pair with the stored ones)."""
    dt = ir.timestep_fs * ir.write_every
    depth = int(round(ir.max_correlation_fs / dt))
    grouped: dict[tuple[str, float], list[tuple[int, np.ndarray]]] = {}
    for key in sorted(store.keys(), key=lambda k: (k.rsplit("/", 1)[0],
                                                   int(k.rsplit("/", 1)[1]))):
        traj = store[key]
        stored = dipoles_of(traj)
        if stored is None or traj.n_frames < 2 * depth:
            continue
        series = stored if dipoles is dipoles_of else dipoles(traj)
        attrs = traj.attrs
        grouped.setdefault((attrs["molecule"], float(attrs["temperature_K"])), []).append(
            (attrs.get("seed"), series))
    return {key: MdRuns.from_dipoles([d for _, d in runs], dt, ir, config.block_fs,
                                     seeds=[s for s, _ in runs])
            for key, runs in sorted(grouped.items())}


def _window(config: CompareConfig, experiment: Experiment | None) -> tuple[float, float]:
    lo, hi = config.window_cm1
    if experiment is not None:
        x = experiment.compared.wavenumber_cm1
        lo = max(lo, float(x.min()))
        hi = min(hi, float(x.max()))
    return lo, hi


def percentile_interval(draws, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` interval of bootstrap ``draws`` (percentiles). On synthetic
    runs of one amplitude each (``benchmarks/interval_coverage.py``) it covered 0.975 at 12
    runs; on real MD, drawing runs and their blocks, it was 1.4–2.5× the scatter of reruns for
    PCC and 1.3–1.5× for WD, drawing whole runs 1.1–1.8× and 1.1–1.3× (docs/method.md, "Do the
    intervals hold on real MD?")."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.size == 0:
        return None
    q = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(draws, [q, 100 - q])
    return float(lo), float(hi)


def jackknife_interval(point: float, left_out: list[list[float]], confidence: float,
                       bounds: tuple[float, float], *, student: bool = False
                       ) -> tuple[float, float] | None:
    """``point`` ± z·se, se the jackknife's standard error summed over the sets in
    ``left_out`` (each: the score with one of that set's runs left out in turn), cut to
    ``bounds``; None where a set has fewer than two runs. With ``student``, Student's t
    quantile in place of the normal z: n − 1 degrees of freedom for one set of n runs, the
    Welch–Satterthwaite ones for several (the interval of a mean of few samples)."""
    if not left_out or any(len(v) < 2 for v in left_out):
        return None
    parts = [(len(v) - 1) / len(v) * float(((np.asarray(v) - np.mean(v)) ** 2).sum())
             for v in left_out]
    var = sum(parts)
    q = 0.5 + confidence / 2
    if student and var > 0:
        dof = var ** 2 / sum(w ** 2 / (len(v) - 1) for w, v in zip(parts, left_out))
        half = float(student_t.ppf(q, dof) * np.sqrt(var))
    else:
        half = float(norm.ppf(q) * np.sqrt(var))
    return max(bounds[0], point - half), min(bounds[1], point + half)


def _rounded_pair(bounds: tuple[float, float] | None, digits: int) -> list[float] | None:
    return None if bounds is None else [round(bounds[0], digits), round(bounds[1], digits)]


def score(first: MdRuns | Spectrum, second: MdRuns | Spectrum, window: tuple[float, float],
          config: CompareConfig, rng: np.random.Generator, *, samples: int | None = None
          ) -> dict:
    """PCC, WD (cm⁻¹ and dimensionless) and the centroid shift of two spectra with their
    intervals (module docstring; the shift's is always the jackknife's with Student's t); an
    :class:`MdRuns` is left out or drawn run by run, a :class:`Spectrum` is fixed."""

    def point(x):
        if isinstance(x, MdRuns):
            return x.spectrum()
        return x.wavenumber_cm1, x.intensity

    def scores(a, b) -> tuple[float, float, float]:
        s = compare_spectra(a, b, window_cm1=window, step_cm1=config.step_cm1)
        return s["pcc"], s["wasserstein_cm1"], s["centroid_shift_cm1"]

    paired = isinstance(first, MdRuns) and isinstance(second, MdRuns) \
        and first.pairs_with(second)
    md = [x for x in (first, second) if isinstance(x, MdRuns)]
    enough = all(len(x.blocks) >= 2 for x in md)

    def draws():
        blocks = config.bootstrap_blocks
        if paired:
            both = bootstrap_weights(first.blocks, rng, paired=second.blocks, blocks=blocks)
            w1, w2 = both[:len(first.blocks)], both[len(first.blocks):]
            return first.spectrum(w1), second.spectrum(w2)
        return tuple(x.draw(rng, blocks) if isinstance(x, MdRuns) else
                     (x.wavenumber_cm1, x.intensity) for x in (first, second))

    def left_out() -> list[list[tuple[float, float, float]]]:
        if paired:
            return [[scores(first.leave_out(i), second.leave_out(i))
                     for i in range(len(first.blocks))]]
        return [[scores(x.leave_out(i), whole[1]) if x is first else
                 scores(whole[0], x.leave_out(i)) for i in range(len(x.blocks))]
                for x in md]

    width = window[1] - window[0]
    whole = point(first), point(second)  # each side's spectrum, computed once
    best = scores(*whole)
    methods = (config.pcc_interval, config.wd_interval, "jackknife_t")
    n = config.bootstrap_samples if samples is None else samples
    intervals: list[tuple[float, float] | None] = [None, None, None]
    if enough and md:
        sets = left_out()
        for j, bounds in ((0, (-1.0, 1.0)), (1, (0.0, np.inf)), (2, (-np.inf, np.inf))):
            if methods[j].startswith("jackknife"):
                intervals[j] = jackknife_interval(best[j], [[v[j] for v in one] for one in sets],
                                                  config.confidence, bounds,
                                                  student=methods[j] == "jackknife_t")
    if (enough or config.bootstrap_blocks) and "bootstrap" in methods and n > 0:
        drawn = np.array([scores(*draws()) for _ in range(n)])
        for j in (0, 1, 2):
            if methods[j] == "bootstrap":
                intervals[j] = percentile_interval(drawn[:, j], config.confidence)
    pcc_ci, wd_ci = _rounded_pair(intervals[0], 4), _rounded_pair(intervals[1], 2)
    return {"pcc": round(best[0], 4),
            "pcc_ci": pcc_ci,
            "wasserstein_cm1": round(best[1], 2),
            "wasserstein_cm1_ci": wd_ci,
            "wasserstein": round(best[1] / width, 4),
            "wasserstein_ci": None if wd_ci is None else [round(v / width, 4) for v in wd_ci],
            "centroid_shift_cm1": round(best[2], 2),
            "centroid_shift_cm1_ci": _rounded_pair(intervals[2], 2),
            "window_cm1": [round(window[0], 1), round(window[1], 1)],
            "runs": [len(x.blocks) if isinstance(x, MdRuns) else None
                     for x in (first, second)],
            "paired": paired}


def _first(runs: MdRuns, k: int) -> MdRuns:
    return MdRuns(runs.blocks[:k], runs.dipoles[:k], runs.timestep_fs, runs.zero_padding,
                  None if runs.seeds is None else runs.seeds[:k])


def convergence(ml: MdRuns, reference: MdRuns, config: CompareConfig,
                rng: np.random.Generator) -> list[dict]:
    """ML–reference PCC and WD (with intervals) from the first k runs, k = 1, 2, 3, 6, 12,
    … up to all of them: the scores against the total ML production (ps). The reference is
    cut to its first k runs too where its runs pair with the ML runs (the same lengths
    policy), else taken whole. Where the scores still move at the full count, the spectra
    are not converged."""
    n = len(ml.blocks)
    counts = [k for k in (1, 2, 3, 6, 12, 24, 48, 96, 192) if k < n] + [n]
    paired = ml.pairs_with(reference)
    out = []
    for k in counts:
        s = score(_first(ml, k), _first(reference, k) if paired else reference,
                  config.window_cm1, config, rng, samples=config.bootstrap_samples // 4)
        total = sum(len(d) for d in ml.dipoles[:k]) * ml.timestep_fs
        out.append({"runs": k, "produce_ps": round(total / 1000, 2), **{
            key: s[key] for key in ("pcc", "pcc_ci", "wasserstein_cm1", "wasserstein_cm1_ci")}})
    return out


def compare(ml: dict[tuple[str, float], MdRuns], reference: dict[tuple[str, float], MdRuns],
            experiment: dict[str, Experiment], config: CompareConfig,
            ir: IrConfig | None = None) -> dict:
    """The comparison metrics (module docstring) from the ML and reference runs
    (:func:`md_runs`) and the experiments
    (:func:`palirs_data.experiment.experimental_spectra`)."""
    ir = ir or IrConfig()
    rng = np.random.default_rng(config.seed)
    t = float(config.temperature_K)
    molecules = sorted({m for m, _ in ml})
    per_molecule: dict[str, dict] = {}
    for molecule in molecules:
        entry: dict = {}
        exp = experiment.get(molecule)
        mine, ref = ml.get((molecule, t)), reference.get((molecule, t))
        if mine is not None and ref is not None:
            entry["ml_vs_reference"] = score(mine, ref, _window(config, None), config, rng)
        if mine is not None and exp is not None:
            entry["ml_vs_experiment"] = score(mine, exp.compared, _window(config, exp), config,
                                              rng)
        if ref is not None and exp is not None:
            entry["reference_vs_experiment"] = score(ref, exp.compared, _window(config, exp),
                                                     config, rng)
        if exp is not None:
            entry["experiment"] = {"convolved_fwhm_cm1": _rounded(exp.fwhm_cm1, 1),
                                   "convolved_friction_fwhm_cm1": _rounded(
                                       exp.friction_fwhm_cm1, 1),
                                   "max_absorbance": exp.max_absorbance,
                                   "saturated_cm1": exp.saturated_cm1}
        by_t = {}
        for (m, temperature), runs in sorted(ml.items()):
            other = reference.get((m, temperature))
            if m == molecule and other is not None:
                by_t[f"{temperature:g}K"] = (entry["ml_vs_reference"] if temperature == t
                                             and "ml_vs_reference" in entry else
                                             score(runs, other, _window(config, None), config,
                                                   rng))
        if by_t:
            entry["ml_vs_reference_by_temperature"] = by_t
        if mine is not None and ref is not None:
            entry["convergence"] = convergence(mine, ref, config, rng)
        if mine is None:
            log.warning("compare: no ML spectrum of '%s' at %g K", molecule, t)
        per_molecule[molecule] = entry
    mean = over_molecules(per_molecule)
    return {"temperature_K": t, "window_cm1": list(config.window_cm1),
            "wasserstein_definition": "W1 between the unit-area spectra over the window; "
                                      "dimensionless: cm-1 / window width (axis scaled to "
                                      "[0, 1])",
            "confidence": config.confidence,
            "intervals": {"pcc": config.pcc_interval, "wasserstein": config.wd_interval,
                          "centroid_shift": "jackknife_t"},
            "bootstrap_samples": config.bootstrap_samples,
            "bootstrap_blocks": config.bootstrap_blocks, "block_fs": config.block_fs,
            "molecules": per_molecule, "mean": mean,
            "without_experiment": sorted(set(molecules) - set(experiment)),
            "without_reference": sorted(m for m in molecules if (m, t) not in reference)}


def over_molecules(per_molecule: dict[str, dict], pairs: tuple[str, ...] = PAIRS
                   ) -> dict[str, dict]:
    """Per comparison: mean and standard deviation (ddof 1; None for one molecule) over the
    molecules that have it, of PCC and both WDs (the published table's summary rows) and of
    the centroid shift (a mean far from zero against its spread: the spectra of one side sit
    lower or higher than the other's for most molecules, a systematic shift)."""
    mean = {}
    for pair in pairs:
        values = [e[pair] for e in per_molecule.values() if pair in e]
        if not values:
            continue
        mean[pair] = {}
        for key in ("pcc", "wasserstein_cm1", "wasserstein", "centroid_shift_cm1"):
            v = np.array([x[key] for x in values], dtype=float)
            mean[pair][key] = round(float(v.mean()), 4)
            mean[pair][f"{key}_std"] = round(float(v.std(ddof=1)), 4) if len(v) > 1 else None
        mean[pair]["n_molecules"] = len(values)
    return mean


def add_dipole_model_check(metrics: dict, model_runs: dict[tuple[str, float], MdRuns],
                           reference: dict[tuple[str, float], MdRuns], config: CompareConfig
                           ) -> dict:
    """Adds to each molecule of ``metrics`` (from :func:`compare`) the dipole model's spectrum
    along the label source's own MD against the label source's spectrum of the same runs
    (``dipole_model_on_reference_md``, at ``compare.temperature_K``), and its mean over the
    molecules. The trajectories are the same, so the MD's noise cancels: what is left is the
    dipole model's error in the intensities, which the ML spectrum carries too (its RMSE
    does not show it: on the demo's lock the model gave the O–H stretch two thirds of its
    intensity at 10.7 mDebye; docs/method.md, "The shift's interval, and where the lock's
    shift comes from"). Its own random stream, so the other scores' draws are unchanged."""
    rng = np.random.default_rng([config.seed, 1])
    t = float(config.temperature_K)
    entries = {}
    for molecule, entry in metrics["molecules"].items():
        mine, ref = model_runs.get((molecule, t)), reference.get((molecule, t))
        if mine is not None and ref is not None:
            if not mine.pairs_with(ref):  # the same runs by construction: paired by position
                if len(mine.blocks) != len(ref.blocks):
                    raise ValueError(f"{molecule}: the dipole model's runs are not the "
                                     "reference's")
                mine = replace(mine, seeds=list(range(len(mine.blocks))))
                ref = replace(ref, seeds=list(range(len(ref.blocks))))
            entry[DIPOLE_CHECK] = score(mine, ref, _window(config, None), config, rng)
            entries[molecule] = entry
    if entries:
        metrics["mean"].update(over_molecules(entries, (DIPOLE_CHECK,)))
    return metrics


def add_committee_spread(metrics: dict, store, baseline=None) -> dict:
    """``metrics`` (of :func:`compare`) with each molecule's committee force spread along its
    ML runs at the compared temperature (:func:`palirs_data.md_analysis.committee_spread` of
    the ``ir`` store ``store``): the warning sign beside every score. With ``baseline`` (the
    campaign's ``ir`` store, for the transfer set) also the ratio of each molecule's median
    spread to the median over the campaign molecules' frames: well above 1, the spectrum is
    an extrapolation."""
    from palirs_data.md_analysis import committee_spread
    from palirs_data.trajectory import run_group

    spread = committee_spread(store)
    t = float(metrics["temperature_K"])
    reference = None
    if baseline is not None:
        temperature = "/" + run_group("any", t).split("/")[1]  # "/300K"
        values = [s["median_eVA"] for group, s in committee_spread(baseline).items()
                  if group.endswith(temperature)]
        reference = float(np.median(values)) if values else None
        metrics["campaign_committee_force_std_median_eVA"] = reference
    for molecule, entry in metrics["molecules"].items():
        group = run_group(molecule, t)
        if group in spread:
            entry["committee_force_std_max_eVA"] = dict(spread[group])
            if reference:
                entry["committee_force_std_max_eVA"]["median_vs_campaign"] = round(
                    spread[group]["median_eVA"] / reference, 2)
    return metrics


def _rounded(value, digits):
    return None if value is None else round(float(value), digits)


def summary_csv(metrics: dict) -> str:
    """The table of all comparisons: one row per molecule and comparison (PCC and WD with
    their intervals, the committee's median force spread along the ML runs, the centroid
    shift with its interval), then one row per comparison with the mean and standard
    deviation over molecules (molecule ``mean``; the ``_std`` columns)."""
    lines = ["molecule,comparison,pcc,pcc_lo,pcc_hi,wasserstein_cm1,wasserstein_cm1_lo,"
             "wasserstein_cm1_hi,wasserstein,pcc_std,wasserstein_cm1_std,wasserstein_std,"
             "n_molecules,committee_force_std_median_eVA,centroid_shift_cm1,"
             "centroid_shift_cm1_lo,centroid_shift_cm1_hi,centroid_shift_cm1_std"]
    for molecule, entry in metrics["molecules"].items():
        spread = (entry.get("committee_force_std_max_eVA") or {}).get("median_eVA", "")
        for pair in TABLE_ROWS:
            if pair in entry:
                e = entry[pair]
                pci = e.get("pcc_ci") or ["", ""]
                wci = e.get("wasserstein_cm1_ci") or ["", ""]
                cci = e.get("centroid_shift_cm1_ci") or ["", ""]
                lines.append(f'"{molecule}",{pair},{e["pcc"]},{pci[0]},{pci[1]},'
                             f'{e["wasserstein_cm1"]},{wci[0]},{wci[1]},{e["wasserstein"]},'
                             f',,,1,{spread},{e.get("centroid_shift_cm1", "")},{cci[0]},'
                             f'{cci[1]},')
    for pair, e in metrics.get("mean", {}).items():
        std = [("" if e.get(f"{k}_std") is None else e[f"{k}_std"])
               for k in ("pcc", "wasserstein_cm1", "wasserstein", "centroid_shift_cm1")]
        lines.append(f'"mean",{pair},{e["pcc"]},,,{e["wasserstein_cm1"]},,,{e["wasserstein"]},'
                     f'{std[0]},{std[1]},{std[2]},{e["n_molecules"]},,'
                     f'{e.get("centroid_shift_cm1", "")},,,{std[3]}')
    return "\n".join(lines) + "\n"


def ci_text(score: dict, key: str, fmt: str) -> str:
    """``value [lo, hi]`` of a score and its interval, formatted with ``fmt``."""
    ci = score.get(f"{key}_ci")
    value = format(score[key], fmt)
    return value if not ci else f"{value} [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"
