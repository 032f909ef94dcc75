"""IR spectra from dipole series: peaks where the sinusoids are, ω² weights, comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from palirs_data.spectra import compare_spectra, ir_spectrum, on_grid, pearson, wasserstein_cm1
from palirs_data.units import SPEED_OF_LIGHT_CM_FS


def _sinusoids(components, n_frames=20000, dt=0.5, seed=0):
    """Dipoles (e·Å) of sinusoids {component: [(wavenumber, amplitude), ...]}, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * dt
    mu = np.zeros((n_frames, 3))
    for c, lines in components.items():
        for nu, a in lines:
            mu[:, c] += a * np.sin(2 * np.pi * SPEED_OF_LIGHT_CM_FS * nu * t
                                   + rng.uniform(0, 2 * np.pi))
    return mu


def _peak(wavenumber, intensity, near, half_width=150.0):
    sel = np.abs(wavenumber - near) < half_width
    k = np.argmax(np.where(sel, intensity, -np.inf))
    return wavenumber[k], intensity[k]


@pytest.mark.parametrize("same_component", [False, True])
def test_sinusoids_give_peaks_at_their_wavenumbers_weighted_by_omega_squared(same_component):
    lines = [(1000.0, 0.10), (1700.0, 0.05), (3000.0, 0.10)]
    components = ({0: lines} if same_component
                  else {k: [line] for k, line in enumerate(lines)})
    dt = 0.5
    nu, intensity = ir_spectrum(_sinusoids(components, dt=dt), dt)
    spacing = nu[1] - nu[0]
    peaks = [_peak(nu, intensity, w) for w, _ in lines]
    for (w, _), (found, _) in zip(lines, peaks):
        assert abs(found - w) <= spacing, (w, found, spacing)
    # the derivative weights each line by ω² (amplitude² ω²); np.gradient's central difference
    # scales ω by sin(ωΔt)/(ωΔt), which is part of the expectation
    def weight(w, a):
        x = 2 * np.pi * SPEED_OF_LIGHT_CM_FS * w * dt
        return (a * w * np.sin(x) / x) ** 2

    expected = np.array([weight(w, a) for w, a in lines])
    found = np.array([p[1] for p in peaks])
    np.testing.assert_allclose(found / found[0], expected / expected[0], rtol=0.03)
    # far from any line there is (almost) nothing
    assert np.all(intensity[(nu > 2200) & (nu < 2600)] < 1e-3 * found.max())


def test_dipoles_every_2_fs_give_the_spectrum_of_every_step():
    """The ir stage records every 4th step (2 fs): the lines of a series subsampled so stay
    where they are with their weights, the central difference's loss divided out."""
    lines = [(1000.0, 0.10), (1700.0, 0.05), (3000.0, 0.10), (3700.0, 0.05)]
    mu = _sinusoids({0: [lines[0], lines[3]], 1: [lines[1]], 2: [lines[2]]}, n_frames=40000)
    fine, coarse = ir_spectrum(mu, 0.5), ir_spectrum(mu[::4], 2.0)
    for w, _ in lines:
        (f_nu, f_i), (c_nu, c_i) = _peak(*fine, w), _peak(*coarse, w)
        assert abs(f_nu - c_nu) <= coarse[0][1] - coarse[0][0]
        # the uncorrected central difference at 2 fs would keep 0.64 of the 3000 cm-1 line
        assert c_i / f_i == pytest.approx(1.0, rel=0.01), w
    result = compare_spectra(fine, coarse)
    assert result["pcc"] > 0.9999 and result["wasserstein_cm1"] < 1.0


def test_components_keep_their_relative_weight():
    small = ir_spectrum(_sinusoids({0: [(1500.0, 0.01)], 1: [(1500.0, 0.1)]}), 0.5)[1]
    big = ir_spectrum(_sinusoids({0: [(1500.0, 0.1)], 1: [(1500.0, 0.1)]}), 0.5)[1]
    assert small.max() / big.max() == pytest.approx((0.01**2 + 0.1**2) / (2 * 0.1**2), rel=0.02)


def test_correlation_depth_sets_the_line_width():
    mu = _sinusoids({0: [(1500.0, 0.1)]})
    widths = []
    for depth in (500.0, 1000.0):
        nu, intensity = ir_spectrum(mu, 0.5, max_correlation_fs=depth, zero_padding=32)
        above = nu[intensity > intensity.max() / 2]
        widths.append(above.max() - above.min())
    # a Hann window spanning ±T: full width at half maximum 2/(2T) in frequency, 1/(c T)
    assert widths[0] == pytest.approx(2 * widths[1], rel=0.05)
    assert widths[1] == pytest.approx(1 / (SPEED_OF_LIGHT_CM_FS * 1000.0), rel=0.05)


def test_bad_dipole_series_are_refused():
    with pytest.raises(ValueError, match="shape"):
        ir_spectrum(np.zeros((100, 2)), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        ir_spectrum(np.full((100, 3), np.nan), 0.5)
    with pytest.raises(ValueError, match="positive"):
        ir_spectrum(np.zeros((100, 3)), 0.0)


def _gaussian(grid, centre, width=20.0):
    return np.exp(-0.5 * ((grid - centre) / width) ** 2)


def test_a_spectrum_agrees_with_itself():
    grid = np.arange(0.0, 5000.0, 2.0)
    spectrum = _gaussian(grid, 1200) + 0.5 * _gaussian(grid, 2900, 40)
    result = compare_spectra((grid, spectrum), (grid, spectrum))
    assert result["pcc"] == pytest.approx(1.0, abs=1e-12)
    assert result["wasserstein_cm1"] == pytest.approx(0.0, abs=1e-9)
    assert result["centroid_shift_cm1"] == pytest.approx(0.0, abs=1e-9)


def test_a_shifted_spectrum_is_as_far_as_the_shift():
    grid = np.arange(0.0, 5000.0, 1.0)
    spectrum = _gaussian(grid, 1200) + 0.5 * _gaussian(grid, 2900, 40)
    shifted = _gaussian(grid, 1225) + 0.5 * _gaussian(grid, 2925, 40)
    result = compare_spectra((grid, spectrum), (grid, shifted))
    assert result["wasserstein_cm1"] == pytest.approx(25.0, abs=0.1)
    assert result["centroid_shift_cm1"] == pytest.approx(-25.0, abs=0.1)  # the first lies lower
    assert compare_spectra((grid, shifted), (grid, spectrum))["centroid_shift_cm1"] == \
        pytest.approx(25.0, abs=0.1)
    assert result["pcc"] < 0.9
    # normalised to unit area on the comparison grid, negative parts clipped
    window = np.arange(500.0, 4001.0)
    values = on_grid(grid, spectrum - 0.01, window)
    assert np.trapezoid(values, window) == pytest.approx(1.0) and values.min() >= 0
    assert pearson(values, values) == pytest.approx(1.0)
    assert wasserstein_cm1(window, values, values) == pytest.approx(0.0, abs=1e-9)


# --- experimental spectra -------------------------------------------------------------------

def _jcamp(path, x, y, *, xunits, yunits, data_type="INFRARED SPECTRUM"):
    lines = ["##TITLE=test", "##JCAMP-DX=4.24", f"##DATA TYPE={data_type}",
             f"##XUNITS={xunits}", f"##YUNITS={yunits}", "##XFACTOR=1.0", "##YFACTOR=1.0",
             f"##FIRSTX={x[0]}", f"##LASTX={x[-1]}", f"##NPOINTS={len(x)}",
             f"##DELTAX={(x[-1] - x[0]) / (len(x) - 1)}", "##XYDATA=(X++(Y..Y))"]
    lines += [f"{xi:.6f} {yi:.6f}" for xi, yi in zip(x, y)]
    lines.append("##END=")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jcamp_transmittance_in_percent_and_micrometres_becomes_absorbance_per_cm(tmp_path):
    from palirs_data.experiment import read_jcamp

    microns = np.linspace(2.5, 20.0, 300)  # 4000 .. 500 cm-1
    percent = np.full_like(microns, 90.0)
    percent[150] = 10.0  # one strong band
    spectrum = read_jcamp(_jcamp(tmp_path / "t.jdx", microns, percent, xunits="MICROMETERS",
                                 yunits="TRANSMITTANCE"))
    assert np.all(np.diff(spectrum.wavenumber_cm1) > 0)
    np.testing.assert_allclose(spectrum.wavenumber_cm1[[0, -1]], [500.0, 4000.0], rtol=1e-6)
    k = np.argmax(spectrum.intensity)
    assert spectrum.wavenumber_cm1[k] == pytest.approx(1e4 / microns[150], rel=1e-6)
    assert spectrum.intensity[k] == pytest.approx(1.0)  # -log10(0.10)
    assert spectrum.intensity.min() == pytest.approx(-np.log10(0.9))


def test_jcamp_absorption_coefficient_spectra_are_read_and_never_called_saturated(tmp_path):
    """PNNL's quantitative gas-phase spectra ((µmol/mol)^-1 m^-1, base 10: acetonitrile,
    ethylene oxide, acetone, 1,3-butadiene in the jcamp sdist) are proportional to
    absorbance: read as they are, their units kept, no saturation verdict (the first
    multi-molecule run stopped at ethylene oxide's file)."""
    from palirs_data.experiment import saturation
    from palirs_data.experiment import read_jcamp

    x = np.linspace(500, 4000, 200)
    y = 1e-3 * np.exp(-((x - 1050) / 20) ** 2) + 1e-5
    spectrum = read_jcamp(_jcamp(tmp_path / "eo.jdx", x, y, xunits="cm-1",
                                 yunits="(micromol/mol)-1m-1 (base 10)"))
    assert spectrum.units == "absorption coefficient"
    np.testing.assert_allclose(spectrum.intensity, y, atol=1e-6)  # the file has 6 decimals
    report = saturation(spectrum, 1.0)
    assert report["saturated"] is None and report["max_absorbance"] is None
    assert report["intensity_units"] == "absorption coefficient"
    absorbance = read_jcamp(_jcamp(tmp_path / "a.jdx", x, 2 * y / y.max(), xunits="1/CM",
                                   yunits="ABSORBANCE"))
    assert absorbance.units == "absorbance" and saturation(absorbance, 1.0)["saturated"]


def test_jcamp_errors_name_the_file(tmp_path):
    from palirs_data.errors import PalirsInputError
    from palirs_data.experiment import read_jcamp

    x = np.linspace(500, 4000, 50)
    with pytest.raises(PalirsInputError, match="XUNITS"):
        read_jcamp(_jcamp(tmp_path / "hz.jdx", x, x * 0 + 0.5, xunits="HZ",
                          yunits="ABSORBANCE"))
    with pytest.raises(PalirsInputError, match="not an infrared"):
        read_jcamp(_jcamp(tmp_path / "uv.jdx", x, x * 0 + 0.5, xunits="1/CM",
                          yunits="ABSORBANCE", data_type="UV/VIS SPECTRUM"))
    with pytest.raises(PalirsInputError, match="missing.jdx: no such file"):
        read_jcamp(tmp_path / "missing.jdx")


@pytest.mark.parametrize("method, noise", [("asls", 0.0), ("arpls", 1e-3)])
def test_baseline_correction_recovers_bands_on_a_curved_baseline(method, noise):
    """Both pybaselines methods find the bands under a sloping, curved baseline. arPLS
    estimates the noise from the points below the curve: it needs some (a measured spectrum
    always has it; on noise-free data its baseline rises into the bands, WD ~80 cm⁻¹)."""
    from palirs_data.experiment import corrected_experiment
    from palirs_data.spectra import Spectrum

    grid = np.arange(500.0, 4001.0)
    bands = _gaussian(grid, 1050, 15) + 0.6 * _gaussian(grid, 1450, 25) \
        + 0.8 * _gaussian(grid, 2950, 30) + 0.3 * _gaussian(grid, 3680, 10)
    baseline = 0.2 + 1e-4 * (grid - 500) + 0.1 * np.sin(grid / 900.0)
    measured = bands + baseline + noise * np.random.default_rng(0).normal(size=grid.size)
    corrected = corrected_experiment(Spectrum(grid, measured), method=method)
    result = compare_spectra((grid, bands), (corrected.wavenumber_cm1, corrected.intensity))
    assert result["pcc"] > 0.99
    assert result["wasserstein_cm1"] < 5.0
    uncorrected = compare_spectra((grid, bands), (grid, bands + baseline))
    assert uncorrected["wasserstein_cm1"] > 10 * result["wasserstein_cm1"]  # baseline spoils it


# --- block sums, the MD line shape ------------------------------------------------------------

def test_block_sums_pool_to_the_spectrum_of_the_runs():
    """Summed over its blocks, a run's correlation sums give its spectrum exactly; pooled over
    runs of equal length, the mean of their spectra; a run of other length counts by its
    length."""
    from palirs_data.spectra import correlation_blocks, pooled_spectrum

    rng = np.random.default_rng(3)
    runs = [np.cumsum(rng.normal(size=(n, 3)), axis=0) for n in (3000, 3000, 1700)]
    blocks = [correlation_blocks(d, 0.5, max_correlation_fs=200.0, block_fs=150.0)
              for d in runs]
    assert [b.n_blocks for b in blocks] == [10, 10, 6]  # the short remainder joins its block
    for d, b in zip(runs, blocks):
        nu, one = ir_spectrum(d, 0.5, max_correlation_fs=200.0)
        np.testing.assert_allclose(pooled_spectrum([b])[1], one, rtol=1e-9, atol=1e-12)
    mean = np.mean([ir_spectrum(d, 0.5, max_correlation_fs=200.0)[1] for d in runs[:2]], 0)
    np.testing.assert_allclose(pooled_spectrum(blocks[:2])[1], mean, rtol=1e-9, atol=1e-12)
    # all blocks once each is the point estimate; a bootstrap draw weights them
    weights = [np.ones(b.n_blocks) for b in blocks]
    np.testing.assert_allclose(pooled_spectrum(blocks, weights=weights)[1],
                               pooled_spectrum(blocks)[1])


def test_a_delta_line_convolved_to_the_md_line_shape():
    """The experiment's convolution kernel is the line an undamped oscillator gets from
    ir_spectrum (Hann lag window over ±T): FWHM 1/(cT), area kept."""
    from palirs_data.spectra import (Spectrum, convolve_to_md,
                                     md_line_fwhm_cm1)

    grid = np.arange(500.0, 3500.0, 0.5)
    delta = np.where(grid == 2000.0, 1.0 / 0.5, 0.0)  # unit area
    line = convolve_to_md(Spectrum(grid, delta), 1000.0).intensity
    assert md_line_fwhm_cm1(1000.0) == pytest.approx(33.36, abs=0.01)
    half = grid[line >= line.max() / 2]
    assert half.max() - half.min() == pytest.approx(33.36, abs=1.0)
    assert grid[np.argmax(line)] == 2000.0
    assert np.trapezoid(line, grid) == pytest.approx(1.0, rel=1e-3)
    # the same shape as an MD line: a pure cosine's spectrum (no derivative)
    t = 0.5 * np.arange(400000)
    mu = np.zeros((len(t), 3))
    mu[:, 0] = np.cos(2 * np.pi * SPEED_OF_LIGHT_CM_FS * 2000.0 * t)
    nu, md = ir_spectrum(mu, 0.5, max_correlation_fs=1000.0, derivative=False,
                         zero_padding=16)
    near = np.abs(grid - 2000.0) < 60
    md_line = np.interp(grid[near], nu, md)
    assert np.corrcoef(md_line, line[near])[0, 1] > 0.999


def test_the_friction_broadens_the_convolution_kernel_as_it_broadens_md_lines():
    from palirs_data.spectra import Spectrum, convolve_to_md, friction_fwhm_cm1

    assert friction_fwhm_cm1(0.001) == pytest.approx(5.31, abs=0.01)
    grid = np.arange(500.0, 3500.0, 0.5)
    delta = np.where(grid == 2000.0, 1.0 / 0.5, 0.0)
    widths = []
    for friction in (0.0, 0.005):
        line = convolve_to_md(Spectrum(grid, delta), 1000.0, friction).intensity
        half = grid[line >= line.max() / 2]
        widths.append(half.max() - half.min())
        assert np.trapezoid(line, grid) == pytest.approx(1.0, rel=1e-3)
    # a Voigt-like profile: wider than either part, narrower than their sum
    assert max(33.4, friction_fwhm_cm1(0.005)) < widths[1] < 33.4 + friction_fwhm_cm1(0.005)
    assert widths[0] == pytest.approx(33.4, abs=1.0)


def test_a_kernel_wider_than_the_spectrum_keeps_its_grid():
    """A short correlation depth gives a line shape wider than a narrow experiment: the
    convolution still returns the experiment's grid, centred (the tiny pipeline's case)."""
    from palirs_data.spectra import Spectrum, convolve_to_md

    grid = np.arange(1000.0, 1400.5, 1.0)  # symmetric about 1200
    y = np.exp(-0.5 * ((grid - 1200.0) / 5.0) ** 2)
    out = convolve_to_md(Spectrum(grid, y), 50.0)  # FWHM 667 cm-1
    assert out.intensity.shape == grid.shape
    assert grid[np.argmax(out.intensity)] == pytest.approx(1200.0, abs=1.0)
    np.testing.assert_allclose(out.intensity, out.intensity[::-1], rtol=1e-6, atol=1e-12)
