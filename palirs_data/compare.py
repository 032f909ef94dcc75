"""Comparing the machine-learned IR spectra with reference MD and with experiment.

For each molecule: the ML spectrum (``ir``, mean over runs) against the reference-MD spectrum
(``reference-md``, label source, same protocol) at every temperature both have, and the ML and
reference spectra at ``compare.temperature_K`` against the experimental gas-phase spectrum
(``experiment``), baseline corrected (:func:`palirs_data.spectra.corrected_experiment`).
Each pair is put on one grid over ``compare.window_cm1`` (cut to the experiment's measured
range where an experiment takes part), normalised to unit area, and scored by Pearson's
correlation coefficient (PCC, 1 = same shape) and the Wasserstein distance (WD, cm⁻¹, 0 = same
distribution of intensity); :func:`palirs_data.spectra.compare_spectra`. The metrics hold
each molecule and the mean over molecules.

Figures (matplotlib, PNG): per molecule, the ML mean with its ±1 standard-deviation band over
runs, the reference MD, the experiment and the double-harmonic lines of the committee; a
summary of PCC and WD across molecules; for ``ir``, each molecule's temperature series.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from palirs_data.config import CompareConfig
from palirs_data.experiment import file_stem, read_sources
from palirs_data.spectra import Spectrum, compare_spectra, corrected_experiment, read_jcamp

log = logging.getLogger(__name__)

PAIRS = ("ml_vs_reference", "ml_vs_experiment", "reference_vs_experiment")
LABELS = {"ml_vs_reference": "ML vs reference MD", "ml_vs_experiment": "ML vs experiment",
          "reference_vs_experiment": "reference MD vs experiment"}


@dataclass
class MdSpectrum:
    wavenumber_cm1: np.ndarray
    intensity: np.ndarray
    std: np.ndarray
    n_runs: int


def spectra_by_key(table: pa.Table | None) -> dict[tuple[str, float], MdSpectrum]:
    """A spectrum table (:data:`palirs_data.ir.SPECTRUM_SCHEMA`) by (molecule, T)."""
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


def experimental_spectra(directory: Path, config: CompareConfig) -> dict[str, Spectrum]:
    """Baseline-corrected absorbance of each molecule the experiment directory holds."""
    sources = read_sources(directory)
    out = {}
    for molecule, entry in sources["molecules"].items():
        raw = read_jcamp(Path(directory) / entry["file"])
        out[molecule] = corrected_experiment(
            raw, step_cm1=config.step_cm1, floor=config.baseline_floor,
            smoothness=config.baseline_smoothness, asymmetry=config.baseline_asymmetry)
    return out


def _window(config: CompareConfig, experiment: Spectrum | None) -> tuple[float, float]:
    lo, hi = config.window_cm1
    if experiment is not None:
        lo = max(lo, float(experiment.wavenumber_cm1.min()))
        hi = min(hi, float(experiment.wavenumber_cm1.max()))
    return lo, hi


def _score(first, second, window, config) -> dict:
    scores = compare_spectra(first, second, window_cm1=window, step_cm1=config.step_cm1)
    return {"pcc": round(scores["pcc"], 4),
            "wasserstein_cm1": round(scores["wasserstein_cm1"], 2),
            "window_cm1": [round(window[0], 1), round(window[1], 1)]}


def compare(ml: pa.Table, reference: pa.Table | None, experiment: dict[str, Spectrum],
            config: CompareConfig) -> dict:
    """The comparison metrics (module docstring)."""
    ml_spectra = spectra_by_key(ml)
    ref_spectra = spectra_by_key(reference)
    t = float(config.temperature_K)
    molecules = sorted({m for m, _ in ml_spectra})
    per_molecule: dict[str, dict] = {}
    for molecule in molecules:
        entry: dict = {}
        exp = experiment.get(molecule)
        mine = ml_spectra.get((molecule, t))
        ref = ref_spectra.get((molecule, t))
        if mine is not None and ref is not None:
            entry["ml_vs_reference"] = _score((mine.wavenumber_cm1, mine.intensity),
                                              (ref.wavenumber_cm1, ref.intensity),
                                              _window(config, None), config)
        if mine is not None and exp is not None:
            entry["ml_vs_experiment"] = _score((mine.wavenumber_cm1, mine.intensity),
                                               (exp.wavenumber_cm1, exp.intensity),
                                               _window(config, exp), config)
        if ref is not None and exp is not None:
            entry["reference_vs_experiment"] = _score((ref.wavenumber_cm1, ref.intensity),
                                                      (exp.wavenumber_cm1, exp.intensity),
                                                      _window(config, exp), config)
        by_t = {}
        for (m, temperature), spectrum in sorted(ml_spectra.items()):
            other = ref_spectra.get((m, temperature))
            if m == molecule and other is not None:
                by_t[f"{temperature:g}K"] = _score(
                    (spectrum.wavenumber_cm1, spectrum.intensity),
                    (other.wavenumber_cm1, other.intensity), _window(config, None), config)
        if by_t:
            entry["ml_vs_reference_by_temperature"] = by_t
        if mine is None:
            log.warning("compare: no ML spectrum of '%s' at %g K", molecule, t)
        per_molecule[molecule] = entry
    mean = {}
    for pair in PAIRS:
        values = [e[pair] for e in per_molecule.values() if pair in e]
        if values:
            mean[pair] = {"pcc": round(float(np.mean([v["pcc"] for v in values])), 4),
                          "wasserstein_cm1": round(float(np.mean(
                              [v["wasserstein_cm1"] for v in values])), 2),
                          "n_molecules": len(values)}
    return {"temperature_K": t, "window_cm1": list(config.window_cm1),
            "molecules": per_molecule, "mean": mean,
            "without_experiment": sorted(set(molecules) - set(experiment)),
            "without_reference": sorted(m for m in molecules if (m, t) not in ref_spectra)}


def summary_csv(metrics: dict) -> str:
    """One row per molecule and comparison: molecule, comparison, pcc, wasserstein_cm1."""
    lines = ["molecule,comparison,pcc,wasserstein_cm1"]
    for molecule, entry in metrics["molecules"].items():
        for pair in PAIRS:
            if pair in entry:
                lines.append(f'"{molecule}",{pair},{entry[pair]["pcc"]},'
                             f'{entry[pair]["wasserstein_cm1"]}')
    return "\n".join(lines) + "\n"


# --- figures ------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _normalised(nu, intensity, grid, std=None):
    """On ``grid`` with unit area; ``std`` scaled by the same factor."""
    values = np.interp(grid, nu, intensity, left=0.0, right=0.0)
    area = np.trapezoid(np.clip(values, 0, None), grid)
    scale = 1.0 / area if area > 0 else 1.0
    out = values * scale
    if std is None:
        return out, None
    return out, np.interp(grid, nu, std, left=0.0, right=0.0) * scale


def comparison_figure(molecule: str, metrics: dict, ml: MdSpectrum | None,
                      reference: MdSpectrum | None, experiment: Spectrum | None,
                      harmonic_cm1: np.ndarray | None, harmonic_km_mol: np.ndarray | None,
                      config: CompareConfig, path: Path) -> None:
    """ML mean ± std, reference MD and experiment, stacked, all normalised to unit area over
    the window; double-harmonic lines as sticks under the ML trace; PCC/WD in the legend."""
    plt = _pyplot()
    lo, hi = config.window_cm1
    grid = np.arange(lo, hi + config.step_cm1 / 2, config.step_cm1)
    entry = metrics["molecules"].get(molecule, {})
    fig, ax = plt.subplots(figsize=(7.0, 4.8), constrained_layout=True)
    traces = []
    if ml is not None:
        traces.append(("ml", ml))
    if reference is not None:
        traces.append(("reference", reference))
    if experiment is not None:
        traces.append(("experiment", experiment))
    peak = 0.0
    curves = []
    for kind, spectrum in traces:
        std = getattr(spectrum, "std", None)
        y, s = _normalised(spectrum.wavenumber_cm1, spectrum.intensity, grid, std)
        curves.append((kind, y, s))
        peak = max(peak, float(np.max(y + (s if s is not None else 0))))
    offset = 1.1 * peak if peak > 0 else 1.0
    colors = {"ml": "C0", "reference": "C3", "experiment": "k"}
    for k, (kind, y, s) in enumerate(curves):
        base = (len(curves) - 1 - k) * offset
        if kind == "ml":
            n = ml.n_runs
            label = f"MACE committee MD (mean ± std of {n} runs)"
        elif kind == "reference":
            score = entry.get("ml_vs_reference")
            label = f"reference MD, label source ({reference.n_runs} runs)"
            if score:
                label += f"; ML vs ref: PCC {score['pcc']:.2f}, WD {score['wasserstein_cm1']:.0f}"
        else:
            score = entry.get("ml_vs_experiment")
            label = "experiment (gas phase, baseline corrected)"
            if score:
                label += f"; ML vs exp: PCC {score['pcc']:.2f}, " \
                         f"WD {score['wasserstein_cm1']:.0f}"
        ax.plot(grid, base + y, color=colors[kind], lw=1.0, label=label)
        if s is not None:
            ax.fill_between(grid, base + y - s, base + y + s, color=colors[kind], alpha=0.3,
                            lw=0)
        if kind == "ml" and harmonic_cm1 is not None and len(harmonic_cm1):
            inside = (harmonic_cm1 >= lo) & (harmonic_cm1 <= hi)
            heights = np.asarray(harmonic_km_mol)[inside]
            if heights.size and heights.max() > 0:
                heights = 0.25 * offset * heights / heights.max()
                ax.vlines(harmonic_cm1[inside], base - heights, base, color="C2", lw=1.0,
                          label="double harmonic (committee)")
    ax.set_xlim(hi, lo)  # chemists' convention: wavenumber decreasing to the right
    ax.set_xlabel("wavenumber / cm$^{-1}$")
    ax.set_ylabel("intensity (unit area, offset)")
    ax.set_yticks([])
    ax.set_title(f"{molecule}, {config.temperature_K:g} K")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def summary_figure(metrics: dict, path: Path) -> None:
    """PCC and Wasserstein distance per molecule and comparison, as grouped bars."""
    plt = _pyplot()
    molecules = list(metrics["molecules"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(molecules) + 3), 3.6),
                               constrained_layout=True)
    width = 0.8 / len(PAIRS)
    x = np.arange(len(molecules))
    for k, pair in enumerate(PAIRS):
        pcc = [metrics["molecules"][m].get(pair, {}).get("pcc", np.nan) for m in molecules]
        wd = [metrics["molecules"][m].get(pair, {}).get("wasserstein_cm1", np.nan)
              for m in molecules]
        a.bar(x + (k - 1) * width, pcc, width, label=LABELS[pair])
        b.bar(x + (k - 1) * width, wd, width, label=LABELS[pair])
    for ax, name in ((a, "Pearson correlation"), (b, "Wasserstein distance / cm$^{-1}$")):
        ax.set_xticks(x, molecules, rotation=30, ha="right")
        ax.set_ylabel(name)
    a.set_ylim(0, 1)
    a.legend(fontsize=7, frameon=False, loc="lower left")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def temperature_figure(molecule: str, spectra: dict[float, MdSpectrum],
                       window_cm1: tuple[float, float], path: Path) -> None:
    """One molecule's ML spectrum at each temperature (mean ± std), stacked."""
    plt = _pyplot()
    lo, hi = window_cm1
    grid = np.arange(lo, hi + 0.5, 1.0)
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 1.1 * len(spectra)), constrained_layout=True)
    curves = [(t, *_normalised(s.wavenumber_cm1, s.intensity, grid, s.std), s.n_runs)
              for t, s in sorted(spectra.items())]
    offset = 1.1 * max(float(np.max(y + sd)) for _, y, sd, _ in curves)
    cmap = plt.get_cmap("coolwarm")
    for k, (t, y, sd, n) in enumerate(curves):
        color = cmap(k / max(1, len(curves) - 1))
        ax.plot(grid, k * offset + y, color=color, lw=1.0, label=f"{t:g} K ({n} runs)")
        ax.fill_between(grid, k * offset + y - sd, k * offset + y + sd, color=color,
                        alpha=0.3, lw=0)
    ax.set_xlim(hi, lo)
    ax.set_xlabel("wavenumber / cm$^{-1}$")
    ax.set_ylabel("intensity (unit area, offset)")
    ax.set_yticks([])
    ax.set_title(f"{molecule}: MACE committee MD, mean ± std over runs")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def figure_name(molecule: str) -> str:
    return f"{file_stem(molecule)}.png"



# --- the report printed at the end of the demo --------------------------------------------------


def report(metrics_path: Path = Path("metrics/compare.json"),
           figures: Path = Path("metrics/figures/compare")) -> str:
    """A plain-text table of PCC and WD per molecule and comparison, and the figures."""
    import json

    from palirs_data.errors import PalirsInputError

    try:
        metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
        molecules = metrics["molecules"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PalirsInputError(f"{metrics_path}: no comparison metrics (run the compare "
                               f"stage)") from None
    lines = [f"IR spectra at {metrics['temperature_K']:g} K: Pearson correlation (PCC) and "
             f"Wasserstein distance (WD, cm-1), {metrics['window_cm1'][0]:g}-"
             f"{metrics['window_cm1'][1]:g} cm-1",
             f"{'molecule':<20} {'comparison':<28} {'PCC':>6} {'WD':>8}"]
    rows = [(m, p, e[p]) for m, e in molecules.items() for p in PAIRS if p in e]
    rows += [("mean", p, v) for p, v in metrics.get("mean", {}).items()]
    for molecule, pair, score in rows:
        lines.append(f"{molecule:<20} {LABELS[pair]:<28} {score['pcc']:>6.3f} "
                     f"{score['wasserstein_cm1']:>8.1f}")
    lines += [f"figure: {p}" for p in sorted(Path(figures).glob("*.png"))]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from palirs_data.errors import PalirsInputError

    try:
        print(report(*[Path(a) for a in sys.argv[1:3]]))
    except PalirsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
