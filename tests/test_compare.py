"""Comparing spectra: ML vs reference MD vs experiment (metrics, windows, figures), and the
experimental spectra themselves (from the jcamp source distribution or the user's files)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from conftest import run_stage, write_params
from palirs_data.app import spectra_text
from palirs_data.compare import MdRuns, compare, score, spectra_by_key, summary_csv
from palirs_data.config import CompareConfig, ExperimentConfig, IrConfig
from palirs_data.errors import PalirsInputError
from palirs_data.experiment import collect, experimental_spectra
from palirs_data.names import file_stem
from palirs_data.experiment import read_jcamp
from palirs_data.spectra import Spectrum
from palirs_data.tables import (HARMONIC_IR_SCHEMA, SPECTRUM_SCHEMA, write_harmonic,
                                write_spectra)
from palirs_data.units import SPEED_OF_LIGHT_CM_FS
from test_spectra import _jcamp

BANDS = [(1030.0, 1.0, 15.0), (1450.0, 0.3, 20.0), (2950.0, 0.6, 25.0), (3680.0, 0.4, 15.0)]


def _bands(grid, shift=0.0, width=None):
    """Gaussian bands of area ∝ a (a / w at the peak, times the largest w)."""
    return sum(a * 25.0 / (width or w) * np.exp(-0.5 * ((grid - c - shift) / (width or w)) ** 2)
               for c, a, w in BANDS) / (25.0 / 15.0)


def _table(spectra: dict[tuple[str, float], np.ndarray], grid: np.ndarray) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in SPECTRUM_SCHEMA}
    for (molecule, t), y in spectra.items():
        cols["molecule"] += [molecule] * len(grid)
        cols["temperature_K"] += [t] * len(grid)
        cols["wavenumber_cm1"] += grid.tolist()
        cols["intensity"] += y.tolist()
        cols["std"] += (0.05 * y).tolist()
        cols["n_runs"] += [3] * len(grid)
    return pa.Table.from_pydict(cols, schema=SPECTRUM_SCHEMA)


IR = IrConfig(max_correlation_fs=500.0, produce_fs=4000.0)
DT = 0.5


def _dipoles(shift=0.0, *, runs=3, frames=8000, seed=0, spread=0.0):
    """Dipole series whose spectrum has the lines of BANDS (area ∝ amplitude), moved by
    ``shift``: every line a cosine of random phase; ``spread`` the relative run-to-run spread
    of the line amplitudes (as runs at different energies give)."""
    rng = np.random.default_rng(seed)
    t = DT * np.arange(frames)
    out = []
    for _ in range(runs):
        mu = np.zeros((frames, 3))
        for k, (centre, area, _) in enumerate(BANDS):
            nu = centre + shift
            amp = np.sqrt(area) / nu * (1 + spread * rng.normal())
            mu[:, k % 3] += amp * np.cos(2 * np.pi * SPEED_OF_LIGHT_CM_FS * nu * t
                                         + rng.uniform(0, 2 * np.pi))
        out.append(mu)
    return out


def _runs(shift=0.0, **kwargs) -> MdRuns:
    return MdRuns.from_dipoles(_dipoles(shift, **kwargs), DT, IR, 1000.0)


def _experiment_dir(tmp_path, shift: float, width: float | None = None, peak: float = 0.5):
    """A user's own JCAMP-DX file for methanol: %-transmittance over 450-3800 cm-1 of the
    bands shifted by ``shift`` (all ``width`` wide, if given; the highest ``peak``
    absorbance), on a sloping baseline; collected as the stage does."""
    x = np.arange(450.0, 3800.5, 1.0)
    absorbance = peak * _bands(x, shift, width) + 0.02 + 1e-5 * (x - 450)
    own = _jcamp(tmp_path / "own.jdx", x, 100 * 10 ** -absorbance, xunits="1/CM",
                 yunits="TRANSMITTANCE")
    out = tmp_path / "experiment"
    collect(["methanol", "pyridine"], ExperimentConfig(files={"methanol": str(own)}), out,
            work_dir=tmp_path / "work")
    return out


def test_identical_md_spectra_agree_and_a_shifted_experiment_is_as_far_as_its_shift(tmp_path):
    ml = {("methanol", 300.0): _runs(), ("methanol", 500.0): _runs(),
          ("pyridine", 300.0): _runs(30)}
    ref = {("methanol", 300.0): _runs(), ("methanol", 500.0): _runs(10),
           ("pyridine", 300.0): _runs()}
    config = CompareConfig(bootstrap_samples=40)
    experiment = experimental_spectra(_experiment_dir(tmp_path, shift=20.0, width=2.0),
                                      config, IR)
    assert list(experiment) == ["methanol"]
    result = compare(ml, ref, experiment, config, IR)

    methanol = result["molecules"]["methanol"]
    same = methanol["ml_vs_reference"]
    assert same["pcc"] == pytest.approx(1.0, abs=1e-4) and same["pcc_ci"][0] > 0.99
    assert same["wasserstein_cm1"] == pytest.approx(0.0, abs=0.01)
    # the experiment is measured to 3800 cm-1 only: the window is cut there
    assert methanol["ml_vs_experiment"]["window_cm1"] == [500.0, 3800.0]
    # baseline removed and convolved to the MD line shape, the experiment is the same bands
    # 20 cm-1 higher: as far as the shift, in cm-1 and as a fraction of the window
    far = methanol["ml_vs_experiment"]
    assert far["wasserstein_cm1"] == pytest.approx(20.0, abs=3.0)
    assert far["wasserstein"] == pytest.approx(far["wasserstein_cm1"] / 3300, abs=1e-4)
    assert far["pcc"] < same["pcc"]
    assert methanol["reference_vs_experiment"]["pcc"] == pytest.approx(far["pcc"], abs=1e-3)
    assert methanol["experiment"]["convolved_fwhm_cm1"] == pytest.approx(66.7, abs=0.1)
    by_t = methanol["ml_vs_reference_by_temperature"]
    assert by_t["300K"]["wasserstein_cm1"] == pytest.approx(0.0, abs=0.01)
    assert by_t["500K"]["wasserstein_cm1"] == pytest.approx(10.0, abs=1.0)
    # the convergence with the ML production: the first 1, 2 and 3 runs of 4 ps
    assert [(r["runs"], r["produce_ps"]) for r in methanol["convergence"]] == [
        (1, 4.0), (2, 8.0), (3, 12.0)]

    pyridine = result["molecules"]["pyridine"]
    assert set(pyridine) == {"ml_vs_reference", "ml_vs_reference_by_temperature",
                             "convergence"}
    assert pyridine["ml_vs_reference"]["wasserstein_cm1"] == pytest.approx(30.0, abs=1.0)
    assert result["without_experiment"] == ["pyridine"] and result["without_reference"] == []
    mean = result["mean"]["ml_vs_reference"]
    assert mean["n_molecules"] == 2
    assert mean["wasserstein_cm1"] == pytest.approx(15.0, abs=0.5)
    # the spread over molecules: WD 0 and 30 cm-1 -> sample std 21.2
    assert mean["wasserstein_cm1_std"] == pytest.approx(30 / np.sqrt(2), abs=1.0)
    assert result["mean"]["ml_vs_experiment"]["n_molecules"] == 1
    assert result["mean"]["ml_vs_experiment"]["pcc_std"] is None  # one molecule: no spread
    rows = summary_csv(result).splitlines()
    assert rows[0].startswith("molecule,comparison,pcc,pcc_lo,pcc_hi,")
    # 4 per-molecule rows, then one mean row per comparison present (3)
    assert len(rows) == 1 + 4 + 3
    mean_row = next(r for r in rows if r.startswith('"mean",ml_vs_reference,')).split(",")
    header = rows[0].split(",")
    assert float(mean_row[header.index("wasserstein_cm1_std")]) == pytest.approx(
        mean["wasserstein_cm1_std"])
    assert mean_row[header.index("n_molecules")] == "2"
    assert all(len(r.split(",")) == len(header) for r in rows)
    # ML's pyridine bands 30 cm-1 above the reference's: its centroid too, with the sign
    pyridine_row = next(r for r in rows if r.startswith('"pyridine",ml_vs_reference,'))
    assert float(pyridine_row.split(",")[header.index("centroid_shift_cm1")]) == \
        pytest.approx(30.0, abs=1.0)
    assert pyridine["ml_vs_reference"]["centroid_shift_cm1"] == pytest.approx(30.0, abs=1.0)
    # over molecules: shifts 0 and +30 -> mean +15, spread 21.2, in the json and the mean row
    assert mean["centroid_shift_cm1"] == pytest.approx(15.0, abs=0.5)
    assert mean["centroid_shift_cm1_std"] == pytest.approx(30 / np.sqrt(2), abs=1.0)
    assert float(mean_row[header.index("centroid_shift_cm1")]) == mean["centroid_shift_cm1"]
    assert float(mean_row[header.index("centroid_shift_cm1_std")]) == \
        mean["centroid_shift_cm1_std"]

    # no reference MD (disabled): experiment comparisons only
    alone = compare(ml, {}, experiment, config, IR)
    assert set(alone["molecules"]["methanol"]) == {"ml_vs_experiment", "experiment"}
    assert alone["without_reference"] == ["methanol", "pyridine"]


def test_the_bootstrap_interval_shrinks_as_runs_are_added():
    """Runs whose line amplitudes spread from run to run (different energies) against the
    exact spectrum: the interval of PCC and WD narrows with more runs, and holds the value."""
    grid = np.arange(0.0, 4500.0, 1.0)
    exact = MdRuns.from_dipoles(_dipoles(runs=1), DT, IR, 1000.0)
    truth = Spectrum(*exact.spectrum())
    config = CompareConfig(bootstrap_samples=300)
    widths = []
    for n in (3, 12, 48):
        s = score(_runs(runs=n, spread=0.3, seed=n), truth, (500.0, 4000.0), config,
                  np.random.default_rng(0))
        widths.append((s["pcc_ci"][1] - s["pcc_ci"][0],
                       s["wasserstein_cm1_ci"][1] - s["wasserstein_cm1_ci"][0]))
        assert s["pcc_ci"][0] <= s["pcc"] + 1e-9 and s["wasserstein_cm1_ci"][0] <= \
            s["wasserstein_cm1"] + 1e-9
    assert widths[0][0] > widths[1][0] > widths[2][0]
    assert widths[0][1] > widths[1][1] > widths[2][1]
    assert grid.size  # the grid is the comparison's own (window, 1 cm-1)


def test_spectra_by_key_restores_each_spectrum():
    grid = np.arange(0.0, 100.0, 1.0)
    table = _table({("a", 300.0): grid ** 2, ("b", 100.0): grid}, grid)
    table = table.take(np.random.default_rng(0).permutation(table.num_rows))  # any row order
    got = spectra_by_key(table)
    np.testing.assert_array_equal(got[("a", 300.0)].wavenumber_cm1, grid)
    np.testing.assert_array_equal(got[("a", 300.0)].intensity, grid ** 2)
    np.testing.assert_allclose(got[("b", 100.0)].std, 0.05 * grid)
    assert got[("b", 100.0)].n_runs == 3


def test_experimental_spectra_from_the_jcamp_source_distribution(tmp_path):
    """``pip download`` of the jcamp sdist: methanol's Coblentz gas-phase spectrum; a molecule
    it does not ship is listed as missing."""
    out = tmp_path / "experiment"
    record = collect(["methanol", "pyridine"], ExperimentConfig(), out,
                     work_dir=tmp_path / "work")
    assert record["missing"] == ["pyridine"]
    entry = record["molecules"]["methanol"]
    assert entry["origin"] == "jcamp==1.3.2 sdist: data/infrared_spectra/methanol.jdx"
    assert entry["title"] == "METHANOL" and len(entry["sha256"]) == 64
    assert not (tmp_path / "work").exists()  # the archive is scratch
    spectrum = read_jcamp(out / "methanol.jdx")
    assert 400 < spectrum.wavenumber_cm1.min() < 500 < 3700 < spectrum.wavenumber_cm1.max()
    # the grating spectrum's C-O band is near saturation: flagged, where it is
    assert entry["saturated"] and entry["max_absorbance"] > 1.5
    assert entry["saturated_cm1"] and all(1020 < a <= b < 1070 for a, b in entry["saturated_cm1"])
    corrected = experimental_spectra(out, CompareConfig())["methanol"].corrected
    # the strongest bands of gas-phase methanol: C-O stretch (~1033) and C-H stretches
    top = corrected.wavenumber_cm1[np.argmax(corrected.intensity)]
    assert 1000 < top < 1060
    ch = (corrected.wavenumber_cm1 > 2800) & (corrected.wavenumber_cm1 < 3050)
    assert corrected.intensity[ch].max() > 0.1 * corrected.intensity.max()
    assert file_stem("1,3-butadiene") == "1-3-butadiene"


def test_a_bad_experimental_file_is_one_line_naming_it_and_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.jdx"
    bad.write_text("##TITLE=x\n##DATA TYPE=MASS SPECTRUM\n##XYDATA=(X++(Y..Y))\n1 2\n##END=\n")
    with pytest.raises(PalirsInputError, match="bad.jdx"):
        collect(["methanol"], ExperimentConfig(files={"methanol": str(bad)}),
                tmp_path / "direct", work_dir=tmp_path / "w")
    params = write_params(tmp_path / "params.yaml", molecules={"names": ["methanol"]},
                          experiment={"files": {"methanol": str(bad)}})
    result = run_stage("experiment", "--params", str(params), "--output", "out",
                       "--work-dir", "work", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: experiment: ") and "bad.jdx" in lines[-1]
    assert not (tmp_path / "out").exists()
    missing = write_params(tmp_path / "p2.yaml", experiment={"files": {"methanol": "nope.jdx"}})
    result = run_stage("experiment", "--params", str(missing), "--output", "out",
                       "--work-dir", "work", cwd=tmp_path)
    assert result.returncode == 1 and "experiment.files.methanol: nope.jdx: no such file" \
        in result.stderr
    assert not (tmp_path / "out").exists()


def _store(path, runs: dict[tuple[str, float], list[np.ndarray]]):
    from palirs_data.trajectory import TrajectoryStore, trajectory_key

    store = TrajectoryStore(path)
    for (molecule, t), dipoles in runs.items():
        for k, d in enumerate(dipoles):
            traj = store.create(trajectory_key(molecule, t, k), numbers=[8, 1, 1],
                                molecule=molecule, timestep_fs=DT, temperature_K=t,
                                arrays=["dipole_eA", "time_fs"])
            traj.append(dipole_eA=d, time_fs=DT * np.arange(1, len(d) + 1))
    return path


def test_compare_stage_writes_metrics_table_and_figures(tmp_path):
    grid = np.arange(0.0, 4500.0, 2.0)
    write_spectra(_table({("methanol", 300.0): _bands(grid)}, grid), tmp_path / "ml.parquet")
    write_spectra(_table({("methanol", 300.0): _bands(grid, 5)}, grid), tmp_path / "ref.parquet")
    _store(tmp_path / "ml.zarr", {("methanol", 300.0): _dipoles(runs=2),
                                  ("methanol", 500.0): _dipoles(runs=2)})
    _store(tmp_path / "ref.zarr", {("methanol", 300.0): _dipoles(5, runs=2, seed=1),
                                   ("methanol", 500.0): _dipoles(runs=2, seed=1)})
    modes = pa.Table.from_pydict({"molecule": ["methanol"] * 3, "mode": [0, 1, 2],
                                  "frequency_cm1": [1040.0, 2990.0, 3700.0],
                                  "intensity_km_mol": [100.0, 30.0, 20.0]},
                                 schema=HARMONIC_IR_SCHEMA)
    write_harmonic(modes, tmp_path / "harmonic.parquet")
    _experiment_dir(tmp_path, shift=10.0, peak=2.0)  # saturated: shaded in the figure
    params = write_params(tmp_path / "params.yaml", compare={"bootstrap_samples": 20},
                          ir={"max_correlation_fs": 500.0, "produce_fs": 4000.0})
    args = ["--params", str(params), "--ml", "ml.parquet", "--harmonic", "harmonic.parquet",
            "--reference", "ref.parquet", "--ml-trajectories", "ml.zarr",
            "--reference-trajectories", "ref.zarr", "--experiment", "experiment",
            "--metrics", "m/compare.json", "--table", "m/compare.csv", "--figures", "m/fig"]
    result = run_stage("compare", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ML vs reference MD: PCC" in result.stdout and "ML vs experiment" in result.stdout
    metrics = json.loads((tmp_path / "m/compare.json").read_text())
    methanol = metrics["molecules"]["methanol"]
    assert methanol["ml_vs_reference"]["wasserstein_cm1"] == pytest.approx(5.0, abs=0.5)
    assert methanol["experiment"]["saturated_cm1"]
    figures = sorted(p.name for p in (tmp_path / "m/fig").glob("*.png"))
    assert figures == ["methanol.png", "methanol_convergence.png", "methanol_temperatures.png",
                       "molecules.png", "summary.png"]
    for name in figures:
        assert (tmp_path / "m/fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "m/fig" / name).with_suffix(".svg").is_file()  # vector, beside it
    # fit for a paper: the method by its name, units on the numbers, sticks in km/mol, the
    # better direction on the summary
    drawn = (tmp_path / "m/fig/methanol.svg").read_text()
    assert "GFN2-xTB MD (" in drawn and "label source" not in drawn
    assert "km mol" in drawn and "] cm$^{-1}$" in drawn  # WD with its unit
    summary = (tmp_path / "m/fig/summary.svg").read_text()
    assert "higher is better" in summary and "lower is better" in summary

    printed = spectra_text(tmp_path / "m/compare.json", tmp_path / "m/fig").splitlines()
    assert all(len(line) <= 100 for line in printed[:-2])
    row = printed[4].split()  # ... WD [lo, hi] WD/width shift [lo, hi]
    assert row[:4] == ["methanol", "ML", "vs", "reference"]
    assert float(row[-4]) == pytest.approx(5.0 / 3500, abs=2e-4)
    assert float(row[-3]) == pytest.approx(
        methanol["ml_vs_reference"]["centroid_shift_cm1"], abs=0.5)
    assert printed[-2] == f"figures (PNG and SVG) in {tmp_path / 'm/fig'}/:"
    assert printed[-1] == ("  methanol, methanol_convergence, methanol_temperatures, molecules, "
                           "summary")
    with pytest.raises(PalirsInputError, match="nothing.json: no comparison metrics"):
        spectra_text(tmp_path / "nothing.json")

    # a broken ML table: one error line naming it, and nothing written
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    args[args.index("ml.parquet")] = "broken.parquet"
    args = [a.replace("m/", "n/") for a in args]
    result = run_stage("compare", *args, cwd=tmp_path)
    assert result.returncode == 1 and "broken.parquet" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "n").exists()


def test_runs_started_from_the_same_seeds_are_resampled_as_pairs():
    """Run k of the ML and of the reference MD share their seed (velocities and thermostat
    noise): their noise is correlated, and the bootstrap must draw them together. Two sets
    that differ only in a 10 cm-1 shift, with run-to-run intensity spread: drawn as pairs,
    every draw keeps the shift only and the interval is narrow; drawn independently, the
    runs' spread enters and it is wide."""
    config = CompareConfig(bootstrap_samples=200)
    scores = {}
    for paired in (True, False):
        seeds = list(range(6)) if paired else None
        ml = MdRuns.from_dipoles(_dipoles(runs=6, spread=0.3, seed=4), DT, IR, 1000.0,
                                 seeds=seeds)
        ref = MdRuns.from_dipoles(_dipoles(10, runs=6, spread=0.3, seed=4), DT, IR, 1000.0,
                                  seeds=None if seeds is None else list(seeds))
        scores[paired] = score(ml, ref, (500.0, 4000.0), config, np.random.default_rng(0))
    assert scores[True]["paired"] and not scores[False]["paired"]
    assert scores[True]["pcc"] == scores[False]["pcc"]  # the point does not change
    width = {k: v["pcc_ci"][1] - v["pcc_ci"][0] for k, v in scores.items()}
    assert width[True] < 0.2 * width[False]
    wd = {k: v["wasserstein_cm1_ci"] for k, v in scores.items()}
    assert 8.0 < wd[True][0] <= wd[True][1] < 12.0  # the shift, and nothing else
    assert wd[False][1] - wd[False][0] > 20.0


def test_a_figure_saved_twice_gives_the_same_bytes(tmp_path):
    """A rerun that changes nothing must change no figure (and no hash in dvc.lock): the SVG
    has no date and no random element ids, the PNG no timestamp, and a style another package
    set before (loading a mace-torch model sets the font size) does not reach it."""
    from palirs_data.figures import convergence_figure

    rows = [{"runs": k, "produce_ps": 3.0 * k, "pcc": 0.9 + 0.01 * k, "pcc_ci": [0.8, 0.95],
             "wasserstein_cm1": 50.0 / k, "wasserstein_cm1_ci": [10.0, 90.0]}
            for k in (1, 2, 3)]
    import matplotlib

    for run in ("a", "b", "c"):
        (tmp_path / run).mkdir()
        if run == "c":  # as mace-torch's visualise_train does when a model is loaded
            matplotlib.rcParams.update({"font.size": 8})
        convergence_figure("methanol", rows, tmp_path / run / "c.png")
    for name in ("c.png", "c.svg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    assert b"<dc:date>" not in (tmp_path / "a" / "c.svg").read_bytes()


def test_the_jackknife_interval_of_a_mean_is_its_standard_error():
    """Left out one by one, the mean's jackknife standard error is s/sqrt(n) exactly; the
    interval is the point ± z·se, cut to the score's bounds, and none from one run."""
    from palirs_data.compare import jackknife_interval

    x = np.random.default_rng(1).normal(0.9, 0.05, size=12)
    left = [(x.sum() - v) / (x.size - 1) for v in x]
    lo, hi = jackknife_interval(float(x.mean()), [left], 0.95, (-1.0, 1.0))
    half = 1.959964 * x.std(ddof=1) / np.sqrt(x.size)
    assert hi - x.mean() == pytest.approx(half, rel=1e-6)
    assert x.mean() - lo == pytest.approx(half, rel=1e-6)
    # two independent sets: their variances add
    lo2, hi2 = jackknife_interval(float(x.mean()), [left, left], 0.95, (-1.0, 1.0))
    assert hi2 - lo2 == pytest.approx(np.sqrt(2) * (hi - lo), rel=1e-6)
    assert jackknife_interval(0.99, [left], 0.95, (-1.0, 1.0))[1] == 1.0  # PCC <= 1
    assert jackknife_interval(0.9, [[0.9]], 0.95, (-1.0, 1.0)) is None
    # Student's t: n - 1 degrees of freedom for one set (2.201 at 12 runs), Welch's for two
    # sets of equal variance and size (2 (n - 1) = 22: 2.074)
    lo, hi = jackknife_interval(float(x.mean()), [left], 0.95, (-9.0, 9.0), student=True)
    assert hi - x.mean() == pytest.approx(2.200985 * x.std(ddof=1) / np.sqrt(x.size), rel=1e-6)
    lo2, hi2 = jackknife_interval(float(x.mean()), [left, left], 0.95, (-9.0, 9.0),
                                  student=True)
    assert hi2 - lo2 == pytest.approx(np.sqrt(2) * (hi - lo) * 2.073873 / 2.200985, rel=1e-6)


def test_the_bootstrap_draws_whole_runs_and_the_jackknife_is_centred():
    """The default intervals draw whole runs (no block of a run drawn apart from the others);
    the jackknife's PCC interval is centred on the score; one run gives no interval; the way
    of earlier locks (blocks drawn too) stays an option."""
    from palirs_data.spectra import bootstrap_weights

    ml = _runs(runs=8, spread=0.3, seed=21)
    ref = _runs(40.0, runs=8, spread=0.3, seed=22)  # 40 cm-1 apart: PCC well below 1
    config = CompareConfig(bootstrap_samples=100, pcc_interval="jackknife")
    s = score(ml, ref, (500.0, 4000.0), config, np.random.default_rng(0))
    lo, hi = s["pcc_ci"]
    assert lo < s["pcc"] < hi < 1.0
    assert s["pcc"] - lo == pytest.approx(hi - s["pcc"], abs=2e-4)
    assert s["wasserstein_cm1_ci"][0] < s["wasserstein_cm1_ci"][1]
    for w in bootstrap_weights(ml.blocks, np.random.default_rng(3), blocks=False):
        assert np.all(w == w[0])  # a drawn run is taken whole, however often
    assert sum(w[0] for w in bootstrap_weights(ml.blocks, np.random.default_rng(3),
                                               blocks=False)) == len(ml.blocks)
    one = score(_runs(runs=1, seed=23), ref, (500.0, 4000.0), config,
                np.random.default_rng(0))
    assert one["pcc_ci"] is None and one["wasserstein_cm1_ci"] is None
    default = score(ml, ref, (500.0, 4000.0), CompareConfig(bootstrap_samples=100),
                    np.random.default_rng(0))
    before = score(ml, ref, (500.0, 4000.0),
                   CompareConfig(bootstrap_samples=100, bootstrap_blocks=True),
                   np.random.default_rng(0))
    assert default["pcc"] == before["pcc"] == s["pcc"]
    assert default["wasserstein_cm1_ci"] != before["wasserstein_cm1_ci"]


def test_the_centroid_shift_is_signed_and_its_interval_holds_zero_for_the_same_physics():
    """Every band moved by 25 cm-1: the centroid shift is the shift, with its sign, and W1
    its magnitude. Two sets of the same physics whose line amplitudes spread from run to run:
    the shift's interval holds zero, while W1, which noise only raises, stays above zero; the
    shift's interval is the jackknife's with Student's t whatever WD's kind: centred, and
    wider than the normal one by t/z."""
    window = (500.0, 4000.0)
    config = CompareConfig(bootstrap_samples=200)
    up = score(_runs(), _runs(25.0), window, config, np.random.default_rng(0))
    assert up["centroid_shift_cm1"] == pytest.approx(-25.0, abs=1.0)
    assert up["wasserstein_cm1"] == pytest.approx(25.0, abs=1.0)
    first, second = _runs(runs=12, spread=0.3, seed=31), _runs(runs=12, spread=0.3, seed=32)
    same = score(first, second, window, config, np.random.default_rng(0))
    lo, hi = same["centroid_shift_cm1_ci"]
    assert lo < 0.0 < hi
    assert same["wasserstein_cm1_ci"][0] > 0.0
    assert same["wasserstein_cm1"] >= abs(same["centroid_shift_cm1"]) - 1e-6
    jack = score(first, second, window, CompareConfig(bootstrap_samples=0,
                                                      wd_interval="jackknife"),
                 np.random.default_rng(0))
    assert jack["centroid_shift_cm1_ci"] == same["centroid_shift_cm1_ci"]  # not WD's kind
    lo, hi = jack["centroid_shift_cm1_ci"]
    assert jack["centroid_shift_cm1"] - lo == pytest.approx(hi - jack["centroid_shift_cm1"],
                                                           abs=0.02)
    # two unpaired sets of 12 runs: the normal interval of the same left-out shifts times t/z,
    # t of the Welch degrees of freedom (between 11 and 22)
    from palirs_data.compare import jackknife_interval
    from palirs_data.spectra import compare_spectra

    def shift(a, b):
        return compare_spectra(a, b, window_cm1=window)["centroid_shift_cm1"]

    whole = first.spectrum(), second.spectrum()
    sets = [[shift(first.leave_out(i), whole[1]) for i in range(12)],
            [shift(whole[0], second.leave_out(i)) for i in range(12)]]
    z_lo, z_hi = jackknife_interval(shift(*whole), sets, 0.95, (-np.inf, np.inf))
    assert 2.0738 / 1.96 - 1e-3 < (hi - lo) / (z_hi - z_lo) < 2.2010 / 1.96 + 1e-3


def test_the_dipole_model_check_scores_the_same_runs_so_their_noise_cancels(tmp_path):
    """The dipole model's spectrum along the label source's own runs against theirs
    (``compare --dipole-model``): a model that gives the 2950 cm-1 line (along z) 0.8 of its
    dipole, 0.64 of its intensity, moves the centroid down; the runs' amplitudes spread by
    30 % from run to run, but the two spectra come from the same runs (paired by position
    where the runs carry no seed), so that noise cancels and the interval is narrow, where
    two sets of other runs with the same difference read an interval ten times wider. The
    model that gives the stored dipoles reads PCC 1 and no shift."""
    from palirs_data.compare import DIPOLE_CHECK, add_dipole_model_check, md_runs
    from palirs_data.trajectory import TrajectoryStore, dipoles_of

    _store(tmp_path / "ref.zarr", {("methanol", 300.0): _dipoles(runs=8, spread=0.3, seed=41)})
    store = TrajectoryStore(tmp_path / "ref.zarr", mode="r")
    config = CompareConfig(bootstrap_samples=100)
    ref = md_runs(store, IR, config)
    assert ref[("methanol", 300.0)].seeds == [None] * 8  # no seeds: paired by position
    weak = md_runs(store, IR, config, dipoles=lambda traj: dipoles_of(traj) * [1.0, 1.0, 0.8])
    metrics = {"molecules": {"methanol": {}, "ethanol": {}}, "mean": {}}
    add_dipole_model_check(metrics, weak, ref, config)
    check = metrics["molecules"]["methanol"][DIPOLE_CHECK]
    assert DIPOLE_CHECK not in metrics["molecules"]["ethanol"]  # no runs of it
    assert check["paired"] and check["runs"] == [8, 8]
    lo, hi = check["centroid_shift_cm1_ci"]
    assert check["centroid_shift_cm1"] < -50.0 and hi < 0.0  # measured: -104 [-133, -75]
    assert metrics["mean"][DIPOLE_CHECK]["centroid_shift_cm1"] == check["centroid_shift_cm1"]
    weaker = MdRuns.from_dipoles([d * [1.0, 1.0, 0.8] for d in _dipoles(runs=8, spread=0.3,
                                                                      seed=42)], DT, IR, 1000.0)
    apart = score(weaker, _runs(runs=8, spread=0.3, seed=43), (500.0, 4000.0), config,
                  np.random.default_rng(0))["centroid_shift_cm1_ci"]
    assert apart[1] - apart[0] > 5 * (hi - lo)  # measured: 11x
    same = {"molecules": {"methanol": {}}, "mean": {}}
    add_dipole_model_check(same, md_runs(store, IR, config, dipoles=dipoles_of), ref, config)
    exact = same["molecules"]["methanol"][DIPOLE_CHECK]
    assert exact["pcc"] == 1.0 and exact["centroid_shift_cm1"] == 0.0
    assert exact["centroid_shift_cm1_ci"] == [0.0, 0.0]


def test_compare_stage_checks_the_dipole_model_along_the_reference_runs(
        tmp_path, tiny_dipole_model, methanol_data):
    """``compare --dipole-model``: two reference runs whose recorded dipoles are the model's
    own along their frames (and a third run's scaled by 0.9 along z) read the check: the
    model's spectrum on those frames against theirs, in compare.json, the table, ``palirs
    show`` and the summary line."""
    from palirs_data import structures
    from palirs_data.evaluation import model_dipoles
    from palirs_data.trajectory import TrajectoryStore, trajectory_key

    rows = structures.from_table(methanol_data["labelled"])[:100]
    numbers = rows[0].numbers
    store = TrajectoryStore(tmp_path / "ref.zarr")
    for k in range(2):
        pos = np.tile(np.array([s.positions_A for s in rows[k::2]]), (50, 1, 1))  # 2500 frames
        mu = model_dipoles(tiny_dipole_model["model"], numbers, pos)
        traj = store.create(trajectory_key("methanol", 300.0, k), numbers=numbers,
                            molecule="methanol", timestep_fs=DT, temperature_K=300.0,
                            arrays=["positions_A", "dipole_eA", "time_fs"], seed=10 + k)
        traj.append(positions_A=pos, dipole_eA=mu * [1.0, 1.0, 0.9 if k else 1.0],
                    time_fs=DT * np.arange(1, len(pos) + 1))
    grid = np.arange(0.0, 4500.0, 2.0)
    write_spectra(_table({("methanol", 300.0): _bands(grid)}, grid), tmp_path / "ml.parquet")
    write_spectra(_table({("methanol", 300.0): _bands(grid)}, grid), tmp_path / "ref.parquet")
    _store(tmp_path / "ml.zarr", {("methanol", 300.0): _dipoles(runs=2, frames=2500)})
    write_harmonic(pa.Table.from_pydict({"molecule": [], "mode": [], "frequency_cm1": [],
                                         "intensity_km_mol": []}, schema=HARMONIC_IR_SCHEMA),
                   tmp_path / "harmonic.parquet")
    _experiment_dir(tmp_path, shift=0.0)
    params = write_params(tmp_path / "params.yaml", compare={"bootstrap_samples": 20},
                          ir={"max_correlation_fs": 500.0, "produce_fs": 1250.0})
    result = run_stage("compare", "--params", str(params), "--ml", "ml.parquet",
                       "--harmonic", "harmonic.parquet", "--reference", "ref.parquet",
                       "--ml-trajectories", "ml.zarr", "--reference-trajectories", "ref.zarr",
                       "--experiment", "experiment", "--dipole-model",
                       str(tiny_dipole_model["report"].model), "--metrics", "m/compare.json",
                       "--table", "m/compare.csv", "--figures", "m/fig", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dipole model along the reference MD: PCC" in result.stdout
    metrics = json.loads((tmp_path / "m/compare.json").read_text())
    check = metrics["molecules"]["methanol"]["dipole_model_on_reference_md"]
    assert check["paired"] and check["runs"] == [2, 2]
    assert check["pcc"] > 0.9 and check["centroid_shift_cm1"] != 0.0  # run 1 differs along z
    lo, hi = check["centroid_shift_cm1_ci"]
    assert lo <= check["centroid_shift_cm1"] <= hi
    assert metrics["mean"]["dipole_model_on_reference_md"]["n_molecules"] == 1
    assert metrics["intervals"]["centroid_shift"] == "jackknife_t"
    table = (tmp_path / "m/compare.csv").read_text()
    assert '"methanol",dipole_model_on_reference_md,' in table
    assert "dipole model on ref. MD" in spectra_text(tmp_path / "m/compare.json", None)
