"""Do the intervals of ``compare`` hold on real MD? Rerun scatter against bootstrap width.

``benchmarks/interval_coverage.py`` checks the intervals on synthetic runs whose lines keep
one amplitude for a whole run. Real runs also vary within a run: a mode keeps its energy
for about 1/γ (333 fs at the ``ir`` protocol's 0.003 fs⁻¹), a tenth of a 3 ps run. This
script measures the intervals on the real thing: ``--runs`` paired runs of the ``ir``
protocol (``params.yaml``, seeds from ``--seed``) by the final committee with the dipole model
(``ml_ir``, as the ``ir`` stage) and by the label source (``reference_ir``, as
``reference-md``), kept in ``--store``. They are cut into disjoint sets of k runs (run k of
the ML and of the reference side share their seed, as in the pipeline), each set scored ML vs
reference as ``compare`` scores it. The scatter of the sets' scores is the spread a rerun with
other seeds shows; each set's interval says what it expects that spread to be. Two ways of
drawing, and two other intervals, are compared:

- ``runs, then blocks``: ``compare``'s (:func:`palirs_data.spectra.bootstrap_weights`),
  runs with replacement, then each drawn run's ``compare.block_fs`` blocks with replacement;
- ``runs only``: runs with replacement, each drawn run whole;
- ``runs only, bias-corrected``: the bias-corrected percentiles of the same draws;
- ``jackknife over runs``: each pair of runs left out in turn, the score ± 1.96 standard errors;
- ``jackknife, Student t``: the same standard error times the t quantile of k − 1 degrees of
  freedom (2.20 at k = 12), the textbook interval for a mean of few samples.

Printed per k: the sets' mean score and its scatter (standard deviation over sets), and per
interval its width over 3.92 (a standard deviation, for a normal interval) and its ratio to
the scatter (1 is calibrated, above 1 too wide), the mean width of the 95 % interval, and how
many sets' intervals hold the mean over sets (the expected score of k runs). The same for the
signed shift of the spectrum's centroid, ML minus reference (W1 is at least its magnitude; it
shows whether a WD is a difference or noise), with how many sets' shift intervals hold zero;
and for all runs pooled their scores as ``compare`` scores them.

    python benchmarks/interval_calibration.py --runs 96 --seed 1000 --store /tmp/calib
    python benchmarks/interval_calibration.py --runs 96 --seed 2000 --store /tmp/calib_b
    python benchmarks/interval_calibration.py --store /tmp/calib /tmp/calib_b --sizes 12 24 48
    # 2026-12-07: three more sets (seeds 3000, 4000, 5000 into /tmp/calib_c, _d, _e), then
    python benchmarks/interval_calibration.py --store /tmp/calib /tmp/calib_b /tmp/calib_c \
        /tmp/calib_d /tmp/calib_e --sizes 12 48 96 240
    # 2026-12-07, later: the lock of 91302cc (the MD's noise a function of seed and step, so
    # the pairs share it), 96 + 96 runs (seeds 7000, 8000 into /tmp/calnew_a, _b), then
    python benchmarks/interval_calibration.py --store /tmp/calnew_a /tmp/calnew_b --sizes 12 48 96
    # 2026-12-07, last: the lock of f5d2a0c (the dipole model on 90 MD frames; the same
    # committee, so the same trajectories): three more sets (seeds 9000, 10000, 11000 into
    # /tmp/calnew_c, _d, _e), and the first two sets' ML dipoles redrawn with the new model:
    python benchmarks/interval_calibration.py --store /tmp/calnew_a /tmp/calnew_b \
        /tmp/calnew_c /tmp/calnew_d /tmp/calnew_e --sizes 12 48 96 240 \
        --dipole-model data/models/dipole.model --redraw /tmp/calnew_a /tmp/calnew_b
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from palirs_data import structures
from palirs_data.compare import MdRuns, jackknife_interval, md_runs, score
from palirs_data.compute import Executor, dask_client
from palirs_data.config import LabelerConfig, load_params
from palirs_data.ir import ml_ir
from palirs_data.reference_md import reference_ir
from palirs_data.spectra import bootstrap_weights, compare_spectra
from palirs_data.trajectory import TrajectoryStore, dipoles_of

Z = norm.ppf(0.975)


def generate(store: Path, runs: int, seed: int, params: Path) -> None:
    """The paired ML and reference runs, unless ``store`` has them already."""
    if (store / "ir.zarr").exists() and (store / "reference.zarr").exists():
        return
    p = load_params(params)
    ir = p.ir.model_copy(update={"seed": seed, "trajectories": runs})
    equilibrium = structures.read_table("data/sample/equilibrium.parquet")
    store.mkdir(parents=True, exist_ok=True)
    with dask_client(p.compute) as client:
        t0 = time.perf_counter()
        ml_ir("data/models/committee", "data/models/dipole.model", equilibrium, ir,
              TrajectoryStore(store / "ir.zarr"), executor=Executor(client, p.compute),
              progress=True)
        t1 = time.perf_counter()
        reference_ir(equilibrium, ir, p.labeler or LabelerConfig(),
                     TrajectoryStore(store / "reference.zarr"), executor=Executor(client))
        t2 = time.perf_counter()
    print(f"generated {runs} paired runs: ML MD {t1 - t0:.0f} s, reference MD {t2 - t1:.0f} s")


def subset(runs: MdRuns, index: list[int]) -> MdRuns:
    return MdRuns([runs.blocks[i] for i in index], [runs.dipoles[i] for i in index],
                  runs.timestep_fs, runs.zero_padding,
                  None if runs.seeds is None else [runs.seeds[i] for i in index])


def joined(first: MdRuns, second: MdRuns) -> MdRuns:
    """The runs of both, ``first``'s then ``second``'s."""
    return MdRuns(first.blocks + second.blocks, first.dipoles + second.dipoles,
                  first.timestep_fs, first.zero_padding,
                  None if first.seeds is None or second.seeds is None
                  else first.seeds + second.seeds)


KEYS = ("pcc", "wasserstein_cm1", "centroid_shift_cm1")


def scores(ml, ref, window, step, keys=KEYS):
    s = compare_spectra(ml, ref, window_cm1=window, step_cm1=step)
    return np.array([s[key] for key in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--store", type=Path, nargs="+", required=True,
                        help="where the runs are kept; several: their runs pooled "
                             "(generated only into a single, new one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dipole-model", type=Path, default=None,
                        help="put this dipole model on the stored ML trajectories instead of "
                             "their recorded dipoles (runs drawn before the model changed; "
                             "the committee and so the trajectories are the same)")
    parser.add_argument("--redraw", type=Path, nargs="+", default=None,
                        help="with --dipole-model: only these of --store (the others keep "
                             "their recorded dipoles, drawn with that model already)")
    args = parser.parse_args()
    if len(args.store) == 1:
        generate(args.store[0], args.runs, args.seed, args.params)
    p = load_params(args.params)
    window, step = tuple(p.compare.window_cm1), p.compare.step_cm1
    if args.dipole_model is None:
        ml_dipoles = dipoles_of
    else:
        from palirs_data.committee import load_model
        from palirs_data.config import torch_dtype
        from palirs_data.evaluation import model_dipoles

        model = load_model(args.dipole_model, dtype=torch_dtype(p.ir.dtype))

        def ml_dipoles(traj):
            return model_dipoles(model, traj.numbers, traj.read("positions_A"))
    ml_all, ref_all = {}, {}
    for store in args.store:
        redrawn = args.redraw is None or store in args.redraw
        for name, pooled, along in (("ir.zarr", ml_all, ml_dipoles if redrawn else dipoles_of),
                                    ("reference.zarr", ref_all, dipoles_of)):
            for key, runs in md_runs(TrajectoryStore(store / name, mode="r"), p.ir,
                                     p.compare, dipoles=along).items():
                pooled[key] = runs if key not in pooled else joined(pooled[key], runs)
    rng = np.random.default_rng(0)
    for key in sorted(ml_all):
        ml, ref = ml_all[key], ref_all[key]
        assert ml.pairs_with(ref), "ML and reference runs must share their seeds"
        n = len(ml.blocks)
        whole = score(ml, ref, window, p.compare, np.random.default_rng(p.compare.seed))
        print(f"{key[0]} {key[1]:g} K: {n} paired runs, {ml.blocks[0].n_blocks} blocks each; "
              f"all {n}, as compare scores them: PCC {whole['pcc']:.4f} {whole['pcc_ci']}, "
              f"WD {whole['wasserstein_cm1']:.1f} {whole['wasserstein_cm1_ci']} cm-1, "
              f"centroid shift {whole['centroid_shift_cm1']:+.1f} "
              f"{whole.get('centroid_shift_cm1_ci')} cm-1")
        for k in args.sizes:
            sets = [list(range(i, i + k)) for i in range(0, n - k + 1, k)]
            if len(sets) < 2:
                print(f"  k = {k}: fewer than two sets of {k} in {n} runs; no scatter")
                continue
            pairs = [(subset(ml, s), subset(ref, s)) for s in sets]
            points = np.array([scores(a.spectrum(), b.spectrum(), window, step)
                               for a, b in pairs])
            shifts = points[:, 2]
            expected, scatter = points.mean(0), points.std(0, ddof=1)
            print(f"  k = {k}: {len(sets)} sets; PCC {expected[0]:.4f}, scatter "
                  f"{scatter[0]:.4f}; WD {expected[1]:.1f}, scatter {scatter[1]:.1f} cm-1 "
                  f"(a scatter over {len(sets)} sets is itself uncertain by "
                  f"~{100 / np.sqrt(2 * (len(sets) - 1)):.0f} %)")
            print(f"    centroid shift, ML - reference: mean {shifts.mean():+.1f}, scatter "
                  f"{shifts.std(ddof=1):.1f} cm-1 (WD >= |shift|)")
            ways = ("runs, then blocks", "runs only", "runs only, bias-corrected",
                    "jackknife over runs", "jackknife, Student t")
            t_over_z = student_t.ppf(0.975, k - 1) / Z
            sd, width, hits = ({w: np.zeros(3) for w in ways} for _ in range(3))
            zero = {w: 0 for w in ways}
            for (a, b), point in zip(pairs, points):
                drawn = {}
                for way in ways[:2]:
                    draws = []
                    for _ in range(args.draws):
                        both = bootstrap_weights(a.blocks, rng, paired=b.blocks,
                                                 blocks=way != "runs only")
                        w1, w2 = both[:k], both[k:]
                        draws.append(scores(a.spectrum(w1), b.spectrum(w2), window, step))
                    drawn[way] = np.array(draws)
                share = np.clip((drawn["runs only"] < point).mean(0), 0.5 / args.draws,
                                1 - 0.5 / args.draws)
                z0 = norm.ppf(share)
                jack = np.array([scores(a.leave_out(i), b.leave_out(i), window, step)
                                 for i in range(k)])
                bounds = {way: np.percentile(drawn[way], [2.5, 97.5], axis=0)
                          for way in ways[:2]}
                bounds["runs only, bias-corrected"] = np.array([np.quantile(
                    drawn["runs only"][:, j], norm.cdf([2 * z0[j] - Z, 2 * z0[j] + Z]))
                    for j in range(3)]).T
                bounds["jackknife over runs"] = np.array([jackknife_interval(
                    point[j], [list(jack[:, j])], 0.95, (-np.inf, np.inf))
                    for j in range(3)]).T
                mid = bounds["jackknife over runs"].mean(0)
                half = (bounds["jackknife over runs"][1] - mid) * t_over_z
                bounds["jackknife, Student t"] = np.array([mid - half, mid + half])
                for way, (lo, hi) in bounds.items():
                    sd[way] += (hi - lo) / (2 * Z) / len(pairs)
                    width[way] += (hi - lo) / len(pairs)
                    hits[way] += (lo <= expected) & (expected <= hi)
                    zero[way] += int(lo[2] <= 0 <= hi[2])
            for way in ways:
                print(f"    {way:<27} width/3.92: PCC {sd[way][0]:.4f} "
                      f"({sd[way][0] / scatter[0]:.2f}x the scatter), WD {sd[way][1]:.1f} cm-1 "
                      f"({sd[way][1] / scatter[1]:.2f}x); 95 % width PCC {width[way][0]:.4f}, "
                      f"WD {width[way][1]:.1f} cm-1; holds the mean in {hits[way][0]:.0f}/"
                      f"{len(pairs)} (PCC), {hits[way][1]:.0f}/{len(pairs)} (WD)")
                print(f"    {'':<27} shift: width/3.92 {sd[way][2]:.1f} cm-1 "
                      f"({sd[way][2] / scatter[2]:.2f}x the scatter), 95 % width "
                      f"{width[way][2]:.1f} cm-1, holds the mean in {hits[way][2]:.0f}/"
                      f"{len(pairs)}, holds zero in {zero[way]:.0f}/{len(pairs)}", flush=True)

if __name__ == "__main__":
    main()
