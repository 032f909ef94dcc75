"""Do whole campaigns with different seeds give the same spectra, within their intervals?

Run: python benchmarks/campaign_spectra.py metrics /path/to/seed1/metrics /path/to/seed2/metrics

Each argument is the ``metrics/`` folder of one ``palirs run`` (a campaign seed: its own
samples, committee seeds, acquisition, test set, dipole model and ir seed; see
docs/method.md, "Campaign seeds with spectra"). Per molecule it prints each run's campaign
figures (stop iteration, labels, the molecule's committee-mean frequency MAE, test RMSEs,
dipole RMSE along the label source's MD) and its scores from ``compare.json`` with their
95 % intervals, then for every score the mean ± std over the runs and how many ordered pairs
of runs (a, b) have a's point inside b's interval. The interval of ``compare`` is a bootstrap
over one committee's runs and time blocks, so it leaves out the committee and its data: this
counts how often that matters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from palirs_data.names import group_name

PAIRS = ("ml_vs_reference", "ml_vs_experiment", "reference_vs_experiment")


def _load(folder: Path) -> dict:
    out = {}
    for name in ("compare", "campaign", "dipole", "ir"):
        path = folder / f"{name}.json"
        out[name] = json.loads(path.read_text()) if path.exists() else {}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [_load(f) for f in args.folders]
    molecules = sorted(set().union(*(r["compare"].get("molecules", {}) for r in runs)))
    for mol in molecules:
        print(f"\n## {mol}\n")
        print("| run | stop / labels | MAE cm-1 | test E meV/atom / F meV/A | dipole mD "
              "(test / along ref. MD) | ML T K | " + " | ".join(
                  f"{p} PCC [95 %] / WD cm-1" for p in PAIRS) + " |")
        print("|---" * (6 + len(PAIRS)) + "|")
        for folder, r in zip(args.folders, runs):
            c, m = r["campaign"], r["compare"]["molecules"].get(mol, {})
            ref_md = (r["dipole"].get("reference_md") or {}).get(f"{mol}/300K", {})
            pooled = r["ir"].get("kinetic_temperature", {}).get("pooled", {}).get(
                f"{group_name(mol)}/300K", {})  # keyed by trajectory group
            mae = (c.get("molecules") or {}).get(mol, {}).get(
                "frequency_mae_cm1", c.get("frequency_mae_cm1", float("nan")))
            cells = [f"{c.get('converged_at', c.get('iterations'))} / {c.get('n_train')}",
                     f"{mae:.2f}",
                     f"{c.get('test_energy_rmse_meV_per_atom', float('nan')):.2f} / "
                     f"{c.get('test_force_rmse_meV_A', float('nan')):.1f}",
                     f"{r['dipole'].get('test_rmse_dipole_mD', float('nan')):.1f} / "
                     f"{ref_md.get('dipole_rmse_mD', float('nan')):.1f}",
                     f"{pooled.get('mean_K', float('nan')):.0f} ± "
                     f"{pooled.get('stderr_K', float('nan')):.0f}"]
            for p in PAIRS:
                s = m.get(p)
                cells.append("-" if not s else
                             f"{s['pcc']:.3f} [{s['pcc_ci'][0]:.3f}, {s['pcc_ci'][1]:.3f}] / "
                             f"{s['wasserstein_cm1']:.0f}")
            print(f"| {folder} | " + " | ".join(cells) + " |")
        print()
        for p in PAIRS:
            scores = [r["compare"]["molecules"].get(mol, {}).get(p) for r in runs]
            scores = [s for s in scores if s]
            if len(scores) < 2:
                continue
            for key, unit in (("pcc", ""), ("wasserstein_cm1", " cm-1")):
                print(f"- {p}, {key}: " + _agreement(scores, key, unit))


def _agreement(scores: list[dict], key: str, unit: str) -> str:
    """Mean ± std over the runs; for every ordered pair (a, b) whether a's point lies inside,
    above or below b's interval; for every unordered pair whether the difference lies within
    the two half-widths combined, sqrt(h_a² + h_b²) (a two-sample check: the percentile
    interval of a near-1 PCC sits below its point, so the first count is strict)."""
    points = np.array([s[key] for s in scores])
    ci = np.array([s[f"{key}_ci"] for s in scores])
    half = (ci[:, 1] - ci[:, 0]) / 2
    n = len(scores)
    inside = above = below = 0
    for a in range(n):
        for b in range(n):
            if a != b:
                inside += ci[b, 0] <= points[a] <= ci[b, 1]
                above += points[a] > ci[b, 1]
                below += points[a] < ci[b, 0]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    within = sum(abs(points[a] - points[b]) <= np.hypot(half[a], half[b]) for a, b in pairs)
    digits = 3 if key == "pcc" else 0
    return (f"{points.mean():.{digits}f} ± {points.std(ddof=1):.{digits}f}{unit} (mean ± std "
            f"over {n} runs; mean half-width {half.mean():.{digits}f}); a's point in b's "
            f"interval {inside}/{n * (n - 1)} (above {above}, below {below}); |a - b| within the combined "
            f"half-widths {within}/{len(pairs)}")

if __name__ == "__main__":
    main()
