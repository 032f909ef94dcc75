"""Do the intervals of ``compare`` hold what they claim? A coverage check on synthetic runs.

Each synthetic run is a dipole series of four lines (methanol-like wavenumbers, random
phases). Two models of how a run's line intensities vary:

- ``--gamma 0`` (the first check): each line keeps one amplitude for the whole run, spread from
  run to run by ``--spread`` (as MD runs at different energies do); 2000 fs runs, 500 fs
  correlation depth, 1000 fs blocks.
- ``--gamma`` γ > 0 (fs⁻¹): each line is a weakly damped mode under a Langevin thermostat, its
  complex amplitude an Ornstein–Uhlenbeck process started from its stationary distribution,
  so the mode's energy is exponentially distributed and decorrelates over 1/γ, within a run as
  in real MD; the ``ir`` protocol's lengths (3000 fs runs, 1000 fs depth and blocks).

Many independent sets of ``--runs`` runs give the true distribution of PCC and WD against a
fixed spectrum; for some of those sets the script computes four 95 % intervals — the
percentile bootstrap of ``compare`` (runs, then blocks), the same drawing runs only, the
bias-corrected percentile bootstrap, and the jackknife over runs — and counts how often each
holds the expected score. Prints coverage (nominal 0.95) and mean width per method.

    python benchmarks/interval_coverage.py --runs 3 12
    python benchmarks/interval_coverage.py --runs 12 --gamma 0.003
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter
from scipy.stats import norm

from palirs_data.compare import MdRuns
from palirs_data.config import IrConfig
from palirs_data.spectra import bootstrap_weights, compare_spectra
from palirs_data.units import SPEED_OF_LIGHT_CM_FS

LINES = [(1030.0, 1.0), (1450.0, 0.3), (2950.0, 0.6), (3680.0, 0.4)]  # cm-1, area
DT = 0.5
IR = IrConfig(max_correlation_fs=500.0, produce_fs=2000.0)
IR_PROTOCOL = IrConfig()  # 1000 fs depth, 3000 fs production
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


def langevin_runs(n: int, frames: int, gamma: float, seed: int) -> list[np.ndarray]:
    """Runs whose lines are Langevin-damped modes: amplitude z(t) with z(t + dt) =
    a z(t) + sqrt(1 − a²) ξ, a = exp(−γ dt / 2), ξ complex normal; signal Re(z e^{iωt})."""
    rng = np.random.default_rng(seed)
    t = DT * np.arange(frames)
    a = np.exp(-gamma * DT / 2)
    runs = []
    for _ in range(n):
        mu = np.zeros((frames, 3))
        for k, (nu, area) in enumerate(LINES):
            xi = (rng.normal(size=frames) + 1j * rng.normal(size=frames)) / np.sqrt(2)
            z = np.empty(frames, dtype=complex)
            z[0] = xi[0]
            z[1:] = lfilter([np.sqrt(1 - a * a)], [1.0, -a], xi[1:], zi=[a * xi[0]])[0]
            mu[:, k % 3] += np.sqrt(area) / nu * np.real(
                z * np.exp(2j * np.pi * SPEED_OF_LIGHT_CM_FS * nu * t))
        runs.append(mu)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[3, 12])
    parser.add_argument("--spread", type=float, default=0.3)
    parser.add_argument("--sets", type=int, default=120)
    parser.add_argument("--checked", type=int, default=40)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--gamma", type=float, default=0.0,
                        help="fs^-1: Langevin-damped lines (0: one amplitude per run)")
    args = parser.parse_args()
    if args.gamma > 0:
        ir, frames = IR_PROTOCOL, int(IR_PROTOCOL.produce_fs / DT)

        def make(n, seed):
            return langevin_runs(n, frames, args.gamma, seed)
    else:
        ir, frames = IR, 4000

        def make(n, seed):
            return synthetic_runs(n, frames, args.spread, seed)
    truth = MdRuns.from_dipoles(synthetic_runs(1, frames, 0.0, 0), DT, ir, 1000.0).spectrum()

    def scores(spectrum):
        s = compare_spectra(spectrum, truth, window_cm1=WINDOW)
        return np.array([s["pcc"], s["wasserstein_cm1"]])

    z = norm.ppf(0.975)
    print(f"{'runs':>4} {'method':<22} {'coverage PCC':>12} {'WD':>6} {'width PCC':>10} "
          f"{'WD cm-1':>8}")
    for n in args.runs:
        sets = [MdRuns.from_dipoles(make(n, 1000 + k), DT, ir, 1000.0)
                for k in range(args.sets)]
        points = np.array([scores(s.spectrum()) for s in sets])
        expected = points.mean(0)
        print(f"{n:>4} {'scatter over sets':<22} {'':>12} {'':>6} "
              f"{2 * 1.96 * points[:, 0].std(ddof=1):>10.4f} "
              f"{2 * 1.96 * points[:, 1].std(ddof=1):>8.1f}  (±1.96 sd, for the widths)")
        rng = np.random.default_rng(0)
        hits = {m: np.zeros(2) for m in ("percentile bootstrap", "runs only", "bias-corrected",
                                         "jackknife")}
        widths = {m: np.zeros(2) for m in hits}
        for s in sets[:args.checked]:
            point = scores(s.spectrum())
            draws = np.array([scores(s.draw(rng)) for _ in range(args.draws)])
            whole = np.array([scores(s.spectrum(bootstrap_weights(s.blocks, rng, blocks=False)))
                              for _ in range(args.draws)])
            share = np.clip((draws < point).mean(0), 0.5 / args.draws, 1 - 0.5 / args.draws)
            z0 = norm.ppf(share)
            jack = np.array([scores(s.spectrum([np.ones(b.n_blocks) * (k != i)
                                                for k, b in enumerate(s.blocks)]))
                             for i in range(len(s.blocks))])
            se = np.sqrt((n - 1) / n * ((jack - jack.mean(0)) ** 2).sum(0))
            bounds = {
                "percentile bootstrap": np.percentile(draws, [2.5, 97.5], axis=0),
                "runs only": np.percentile(whole, [2.5, 97.5], axis=0),
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
