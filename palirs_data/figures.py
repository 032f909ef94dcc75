"""Every figure of the pipeline, drawn from the stages' tables and metrics (matplotlib, Agg).

Each function draws what its arguments hold and nothing else, so a stage's figures depend only
on the data they show. The ``compare`` stage draws the per-molecule comparison, the
all-molecules panels, the convergence with the production length, the scores across
temperatures and each molecule's ML spectrum at every temperature; the ``campaign`` stage the
learning curve. The MD stages draw nothing, so a plot setting never reruns MD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from palirs_data.compare import LABELS, PAIRS, MdSpectrum, ci_text
from palirs_data.experiment import Experiment
from palirs_data.config import CompareConfig
from palirs_data.names import file_stem


def _pyplot():
    """pyplot on the Agg backend with matplotlib's default style, whatever was imported before:
    mace-torch's ``mace.cli.visualise_train``, which loading a model can import, sets the
    font size to 8 for the whole process, and a figure drawn after it came out with another
    layout and other bytes."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcdefaults()
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: editable in a paper
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


def save(fig, path: Path) -> None:
    """A figure as PNG (200 dpi, for screens) and, beside it, SVG (vector, for a paper). The
    same figure gives the same bytes on every run: the SVG carries no date and its element
    ids come from a fixed salt (matplotlib's default is random), so a rerun that changes
    nothing changes no file and no hash in ``dvc.lock``."""
    import matplotlib

    path = Path(path)
    fig.savefig(path, dpi=200)
    with matplotlib.rc_context({"svg.hashsalt": "palirs-data"}):
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    _pyplot().close(fig)


def _score_text(score: dict | None, what: str) -> str:
    if not score:
        return ""
    shift = (f", shift {ci_text(score, 'centroid_shift_cm1', '+.0f')}"
             if score.get("centroid_shift_cm1") is not None else "")
    return (f"\n{what}: PCC {ci_text(score, 'pcc', '.3f')}, "
            f"WD {ci_text(score, 'wasserstein_cm1', '.0f')}{shift} cm$^{{-1}}$")


def _trace_labels(entry: dict, ml: MdSpectrum | None, reference: MdSpectrum | None,
                  experiment: Experiment | None, label_source: str) -> dict[str, str]:
    out = {}
    if ml is not None:
        out["ml"] = (f"MACE committee MD (trained on {label_source}), mean ± std of "
                     f"{ml.n_runs} runs")
    if reference is not None:
        out["reference"] = (f"{label_source} MD ({reference.n_runs} runs)"
                            + _score_text(entry.get("ml_vs_reference"), "ML vs it"))
    if experiment is not None:
        what = ("baseline corrected, convolved to the MD line shape" if experiment.fwhm_cm1
                else "baseline corrected")
        out["experiment"] = (f"experiment, gas phase ({what})"
                             + _score_text(entry.get("ml_vs_experiment"), "ML vs it"))
    return out


def _experiment_extras(ax, experiment: Experiment, grid: np.ndarray, base: float) -> None:
    """The experiment as measured (absorbance, no baseline removed, on the corrected
    trace's scale) and its saturated bands."""
    area = np.trapezoid(np.clip(np.interp(grid, experiment.corrected.wavenumber_cm1,
                                          experiment.corrected.intensity, 0, 0), 0, None),
                        grid)
    inside = ((grid >= experiment.measured.wavenumber_cm1.min())
              & (grid <= experiment.measured.wavenumber_cm1.max()))
    raw = np.interp(grid, experiment.measured.wavenumber_cm1, experiment.measured.intensity)
    ax.plot(grid[inside], base + raw[inside] / (area or 1.0), color="0.55", lw=0.5,
            zorder=0, label="experiment as measured (absorbance, same scale)")
    for i, (a, b) in enumerate(experiment.saturated_cm1):
        ax.axvspan(a - 2, b + 2, color="C1", alpha=0.2, lw=0,
                   label=(f"measured absorbance > {experiment.saturation_absorbance:g} "
                          f"(saturated; max {experiment.max_absorbance:g})"
                          if i == 0 else None))


def _sticks(ax, harmonic_cm1, harmonic_km_mol, window: tuple[float, float]) -> None:
    lo, hi = window
    nu, km = np.asarray(harmonic_cm1), np.asarray(harmonic_km_mol)
    inside = (nu >= lo) & (nu <= hi)
    ax.vlines(nu[inside], 0, km[inside], color="C2", lw=1.2,
              label="double harmonic, committee and dipole model")
    ax.set_ylabel("km mol$^{-1}$", fontsize=8)
    ax.set_ylim(0, 1.15 * max(float(km[inside].max()) if inside.any() else 1.0, 1e-9))
    ax.tick_params(labelsize=7)


def comparison_figure(molecule: str, metrics: dict, ml: MdSpectrum | None,
                      reference: MdSpectrum | None, experiment: Experiment | None,
                      harmonic_cm1: np.ndarray | None, harmonic_km_mol: np.ndarray | None,
                      config: CompareConfig, path: Path, *,
                      label_source: str = "label source") -> None:
    """ML mean ± std, the label source's MD and the experiment, stacked and normalised to unit
    area over the window; the experiment as compared (convolved with the MD line shape)
    over the measured absorbance; the committee's double-harmonic lines on their own axis in
    km/mol; the scores with their intervals and units, and the experiment's source, below
    the data. PNG and SVG (:func:`save`)."""
    plt = _pyplot()
    lo, hi = config.window_cm1
    grid = np.arange(lo, hi + config.step_cm1 / 2, config.step_cm1)
    entry = metrics["molecules"].get(molecule, {})
    labels = _trace_labels(entry, ml, reference, experiment, label_source)
    sticks = harmonic_cm1 is not None and len(harmonic_cm1) > 0
    fig, axes = plt.subplots(2 if sticks else 1, 1, sharex=True, squeeze=False,
                             figsize=(7.5, 6.4 if sticks else 5.6), layout="constrained",
                             gridspec_kw={"height_ratios": [4, 1] if sticks else [1]})
    ax = axes[0, 0]
    specs = [(k, s) for k, s in (("ml", ml), ("reference", reference)) if s is not None]
    curves = [(k, *_normalised(s.wavenumber_cm1, s.intensity, grid, s.std)) for k, s in specs]
    if experiment is not None:
        curves.append(("experiment", *_normalised(experiment.compared.wavenumber_cm1,
                                                  experiment.compared.intensity, grid)))
    offset = 1.15 * max([float(np.max(y + (sd if sd is not None else 0)))
                         for _, y, sd in curves] or [1.0])
    colors = {"ml": "C0", "reference": "C3", "experiment": "k"}
    for k, (kind, y, sd) in enumerate(curves):
        base = (len(curves) - 1 - k) * offset
        ax.plot(grid, base + y, color=colors[kind], lw=1.0, label=labels[kind])
        if sd is not None:
            ax.fill_between(grid, base + y - sd, base + y + sd, color=colors[kind], alpha=0.3,
                            lw=0)
        if kind == "experiment":
            _experiment_extras(ax, experiment, grid, base)
    ax.set_ylabel("intensity (unit area, offset)")
    ax.set_yticks([])
    ax.set_title(f"{molecule}, {config.temperature_K:g} K "
                 f"({int(100 * metrics.get('confidence', 0.95))} % intervals over runs)")
    if sticks:
        _sticks(axes[1, 0], harmonic_cm1, harmonic_km_mol, (lo, hi))
    axes[-1, 0].set_xlim(hi, lo)  # chemists' convention: wavenumber decreasing to the right
    axes[-1, 0].set_xlabel("wavenumber / cm$^{-1}$")
    handles = [h for a in axes[:, 0] for h in a.get_legend_handles_labels()[0]]
    names = [n for a in axes[:, 0] for n in a.get_legend_handles_labels()[1]]
    credit = (f"Experiment: {experiment.measured.source}." if experiment is not None
              and experiment.measured.source else "")
    fig.legend(handles, names, loc="outside lower center", fontsize=6.5, frameon=False,
               title=credit or None, title_fontsize=6)
    save(fig, path)


def _interval(s: dict | None, key: str) -> list[float] | None:
    """A score's interval: its interval over runs, or ± its std over molecules (a mean)."""
    if not s:
        return None
    if s.get(f"{key}_ci"):
        return s[f"{key}_ci"]
    std = s.get(f"{key}_std")
    return [s[key] - std, s[key] + std] if std is not None else None


def _errorbar(ax, x, score_list: list[dict], key: str, **kwargs) -> None:
    y = np.array([s[key] if s else np.nan for s in score_list], dtype=float)
    ci = [_interval(s, key) for s in score_list]
    lo = np.array([y[i] - c[0] if c else 0.0 for i, c in enumerate(ci)])
    hi = np.array([c[1] - y[i] if c else 0.0 for i, c in enumerate(ci)])
    kwargs.setdefault("capsize", 3)
    ax.errorbar(x, y, yerr=np.clip([lo, hi], 0, None), **kwargs)


def summary_figure(metrics: dict, path: Path) -> None:
    """Every molecule's PCC and Wasserstein distance per comparison, with their intervals,
    and their mean over molecules; the better direction marked on each axis."""
    plt = _pyplot()
    molecules = list(metrics["molecules"])
    columns = molecules + (["mean"] if len(molecules) > 1 else [])
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(7.0, 0.55 * len(columns) + 5), 3.8),
                               layout="constrained")
    x = np.arange(len(columns))
    for k, pair in enumerate(PAIRS):
        scores = [metrics["molecules"][m].get(pair) for m in molecules]
        if len(molecules) > 1:
            scores.append(metrics.get("mean", {}).get(pair))
        shift = (k - 1) * 0.2
        for ax, key in ((a, "pcc"), (b, "wasserstein_cm1")):
            _errorbar(ax, x + shift, scores, key, fmt="o", ms=4, capsize=2, lw=0.8,
                      color=f"C{k}", label=LABELS[pair] if ax is a else None)
    for ax, name in ((a, "Pearson correlation\n(higher is better ↑)"),
                     (b, "Wasserstein distance / cm$^{-1}$\n(lower is better ↓)")):
        ax.set_xticks(x, columns, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        if len(molecules) > 1:
            ax.axvline(len(molecules) - 0.5, color="0.6", lw=0.6)
    a.set_ylim(min(0.0, a.get_ylim()[0]), 1.0)
    b.set_ylim(0, None)
    fig.suptitle(f"IR spectra at {metrics['temperature_K']:g} K, "
                 f"{int(100 * metrics.get('confidence', 0.95))} % intervals over runs"
                 + ("; mean: ± std over molecules" if len(molecules) > 1 else ""), fontsize=9)
    fig.legend(loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    save(fig, path)


def _mean_pcc_panel(ax, metrics: dict, n_molecules: int, t: float) -> None:
    """Mean ± std of PCC over molecules per comparison."""
    pairs = [p for p in PAIRS if p in metrics.get("mean", {})]
    for k, pair in enumerate(pairs):
        m = metrics["mean"][pair]
        ax.errorbar([k], [m["pcc"]], yerr=[[m["pcc_std"] or 0.0]], fmt="o", capsize=3,
                    color=f"C{k}")
    ax.set_xticks(range(len(pairs)), [LABELS[p].replace(" vs ", "\nvs ") for p in pairs],
                  fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("PCC (mean ± std over molecules)", fontsize=7)
    ax.set_title(f"{n_molecules} molecule{'s' if n_molecules > 1 else ''}, "
                 f"{t:g} K (higher is better)", fontsize=9)


def molecules_figure(metrics: dict, ml: dict, reference: dict, experiment: dict,
                     config: CompareConfig, path: Path, *,
                     label_source: str = "label source") -> None:
    """One panel per molecule (ML mean ± std, reference MD, experiment as compared; unit area,
    offset; ML–ref and ML–exp PCC in the corner), then the mean ± std of PCC over molecules per
    comparison: the table of all comparisons at a glance. ``ml``/``reference`` map
    (molecule, T) to :class:`MdSpectrum`, ``experiment`` molecule to :class:`Experiment`."""
    plt = _pyplot()
    t = float(config.temperature_K)
    molecules = list(metrics["molecules"])
    n = len(molecules) + 1
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows),
                             constrained_layout=True, squeeze=False)
    lo, hi = config.window_cm1
    grid = np.arange(lo, hi + config.step_cm1 / 2, config.step_cm1)
    for ax, molecule in zip(axes.flat, molecules):
        entry = metrics["molecules"][molecule]
        traces = [("MACE committee MD", ml.get((molecule, t)), "C0"),
                  (f"{label_source} MD", reference.get((molecule, t)), "C3")]
        exp = experiment.get(molecule)
        curves = [(label, *_normalised(s.wavenumber_cm1, s.intensity, grid, s.std), color)
                  for label, s, color in traces if s is not None]
        if exp is not None:
            y, _ = _normalised(exp.compared.wavenumber_cm1, exp.compared.intensity, grid)
            curves.append(("experiment (as compared)", y, None, "k"))
        top = max([float(np.max(y)) for _, y, _, _ in curves] or [1.0])
        for k, (label, y, sd, color) in enumerate(curves):
            base = (len(curves) - 1 - k) * 1.1 * top
            ax.plot(grid, base + y, color=color, lw=0.8, label=label)
            if sd is not None:
                ax.fill_between(grid, base + y - sd, base + y + sd, color=color, alpha=0.3,
                                lw=0)
        text = [f"{short}: PCC {entry[pair]['pcc']:.2f}" for pair, short in
                (("ml_vs_reference", "ML–ref"), ("ml_vs_experiment", "ML–exp"))
                if pair in entry]
        ax.text(0.02, 0.97, "\n".join(text), transform=ax.transAxes, va="top", fontsize=6.5)
        ax.set_title(molecule, fontsize=9)
        ax.set_xlim(hi, lo)
        ax.set_xlabel("wavenumber / cm$^{-1}$", fontsize=7)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    _mean_pcc_panel(axes.flat[len(molecules)], metrics, len(molecules), t)
    for ax in list(axes.flat)[len(molecules) + 1:]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    save(fig, path)


def empty_figure(path: Path, text: str) -> None:
    """A figure that says why there is nothing to draw (an empty molecule set): a plots
    directory always holds a figure, so git and DVC keep it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    save(fig, path)


def convergence_figure(molecule: str, rows: list[dict], path: Path) -> None:
    """ML–reference PCC and WD (with intervals) against the total ML production (the first
    k runs)."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.0, 3.0), constrained_layout=True)
    x = [r["produce_ps"] for r in rows]
    _errorbar(a, x, rows, "pcc", marker="o", color="C0")
    _errorbar(b, x, rows, "wasserstein_cm1", marker="o", color="C3")
    for ax, name in ((a, "PCC, ML vs reference MD"), (b, "WD / cm$^{-1}$")):
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel("ML production, all runs / ps")
        ax.set_ylabel(name)
    fig.suptitle(f"{molecule}: convergence with the ML production (first k runs)",
                 fontsize=9)
    save(fig, path)


def temperature_series_figure(molecule: str, by_temperature: dict[str, dict],
                              path: Path) -> None:
    """ML–reference PCC and WD (with intervals) at each temperature of the series."""
    plt = _pyplot()
    temps = sorted(by_temperature, key=lambda k: float(k[:-1]))
    x = [float(k[:-1]) for k in temps]
    rows = [by_temperature[k] for k in temps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.0, 3.0), constrained_layout=True)
    _errorbar(a, x, rows, "pcc", marker="o", color="C0")
    _errorbar(b, x, rows, "wasserstein_cm1", marker="o", color="C3")
    for ax, name in ((a, "PCC, ML vs reference MD"), (b, "WD / cm$^{-1}$")):
        ax.set_xlabel("temperature / K")
        ax.set_ylabel(name)
    fig.suptitle(f"{molecule}: ML vs reference MD across temperatures", fontsize=9)
    save(fig, path)


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
    save(fig, path)


def figure_name(molecule: str) -> str:
    return f"{file_stem(molecule)}.png"


def learning_curve_figure(rows: list[dict], stop: float, path: Path) -> None:
    """Committee-mean harmonic-frequency MAE against labels, one line per molecule with the
    members' spread as error bars, the stop rule as a dashed line."""
    plt = _pyplot()
    names = sorted({n for r in rows for n in r["molecules"]})
    fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
    for k, name in enumerate(names):
        points = [(r["molecules"][name]["labels"], r["molecules"][name]["frequency_mae_cm1"],
                   r["molecules"][name]["frequency_member_mae_std_cm1"] or 0.0)
                  for r in rows if name in r["molecules"]]
        x, y, e = map(np.array, zip(*points))
        ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, lw=1, color=f"C{k % 10}",
                    label=name)
    ax.axhline(stop, color="k", ls="--", lw=0.8, label=f"stop rule ({stop:g} cm$^{{-1}}$)")
    ax.set_xlabel("labelled structures of the molecule")
    ax.set_ylabel("harmonic-frequency MAE / cm$^{-1}$\n(committee mean; bars: members' std)")
    ax.set_yscale("log")
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter() if ax.get_ylim()[1] / ax.get_ylim()[0] < 3
                                 else plt.NullFormatter())
    ax.legend(fontsize=7, frameon=False, ncol=2)
    save(fig, path)
