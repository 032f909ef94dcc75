"""Do the intervals of ``compare`` hold what they claim? A coverage check on synthetic runs.

Each synthetic run is a dipole series of four cosine lines (methanol-like wavenumbers, random
phases) whose amplitudes spread from run to run by ``--spread`` (as MD runs at different
energies do). Many independent sets of ``--runs`` runs give the true distribution of PCC and
WD against the exact spectrum; for some of those sets the script computes three 95 %
intervals — the percentile bootstrap of ``compare`` (runs, then blocks), the bias-corrected
percentile bootstrap, and the jackknife over runs — and counts how often each holds the
expected score. Prints coverage (nominal 0.95) and mean width per method.

    python benchmarks/interval_coverage.py --runs 3 12
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm

from palirs_data.compare import MdRuns
from palirs_data.config import IrConfig
from palirs_data.spectra import compare_spectra
from palirs_data.units import SPEED_OF_LIGHT_CM_FS

LINES = [(1030.0, 1.0), (1450.0, 0.3), (2950.0, 0.6), (3680.0, 0.4)]  # cm-1, area
DT = 0.5
IR = IrConfig(max_correlation_fs=500.0, produce_fs=2000.0)
WINDOW = (500.0, 4000.0)


def synthetic_runs(n: int, frames: int, spread: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = DT * np.arange(frames)
    runs = []
    for _ in range(n):
        mu = np.zeros((frames, 3))
        for k, (nu, area) in enumerate(LINES):
            amp = np.sqrt(area) / nu * (1 + spread * rng.normal())
            mu[:, k % 3] += amp * np.cos(2 * np.pi * SPEED_OF_LIGHT_CM_FS * nu * t
                                         + rng.uniform(0, 2 * np.pi))
        runs.append(mu)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[3, 12])
    parser.add_argument("--spread", type=float, default=0.3)
    parser.add_argument("--sets", type=int, default=120)
    parser.add_argument("--checked", type=int, default=40)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    truth = MdRuns.from_dipoles(synthetic_runs(1, 4000, 0.0, 0), DT, IR, 1000.0).spectrum()

    def scores(spectrum):
        s = compare_spectra(spectrum, truth, window_cm1=WINDOW)
        return np.array([s["pcc"], s["wasserstein_cm1"]])

    z = norm.ppf(0.975)
    print(f"{'runs':>4} {'method':<22} {'coverage PCC':>12} {'WD':>6} {'width PCC':>10} "
          f"{'WD cm-1':>8}")
    for n in args.runs:
        sets = [MdRuns.from_dipoles(synthetic_runs(n, 4000, args.spread, 1000 + k), DT, IR,
                                    1000.0) for k in range(args.sets)]
        expected = np.mean([scores(s.spectrum()) for s in sets], axis=0)
        rng = np.random.default_rng(0)
        hits = {m: np.zeros(2) for m in ("percentile bootstrap", "bias-corrected", "jackknife")}
        widths = {m: np.zeros(2) for m in hits}
        for s in sets[:args.checked]:
            point = scores(s.spectrum())
            draws = np.array([scores(s.draw(rng)) for _ in range(args.draws)])
            share = np.clip((draws < point).mean(0), 0.5 / args.draws, 1 - 0.5 / args.draws)
            z0 = norm.ppf(share)
            jack = np.array([scores(s.spectrum([np.ones(b.n_blocks) * (k != i)
                                                for k, b in enumerate(s.blocks)]))
                             for i in range(len(s.blocks))])
            se = np.sqrt((n - 1) / n * ((jack - jack.mean(0)) ** 2).sum(0))
            bounds = {
                "percentile bootstrap": np.percentile(draws, [2.5, 97.5], axis=0),
                "bias-corrected": np.array([np.quantile(draws[:, j], norm.cdf(
                    [2 * z0[j] - z, 2 * z0[j] + z])) for j in range(2)]).T,
                "jackknife": np.array([point - z * se, point + z * se])}
            for method, (lo, hi) in bounds.items():
                hits[method] += (lo <= expected) & (expected <= hi)
                widths[method] += (hi - lo) / args.checked
        for method in hits:
            cover = hits[method] / args.checked
            print(f"{n:>4} {method:<22} {cover[0]:>12.3f} {cover[1]:>6.3f} "
                  f"{widths[method][0]:>10.4f} {widths[method][1]:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
