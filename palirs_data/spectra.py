"""IR spectra from dipole time series, and how to compare spectra.

:func:`ir_spectrum` computes the spectrum as the PALIRS paper does: the time derivative of the
dipole, its autocorrelation by FFT (Wiener-Khinchin, zero padded so nothing wraps around),
truncated at a maximum correlation depth, a Hann window, zero padding, and a Fourier
transform to wavenumbers in cm⁻¹. The three Cartesian components are summed with their own
weights (no per-component normalisation). Using the derivative multiplies the dipole
spectrum by ω², which equals the harmonic quantum correction up to a constant, so no further
correction is applied by default.

Comparison (:func:`compare_spectra`): both spectra are interpolated onto one grid over a stated
window, clipped at zero and normalised to unit area; then Pearson's correlation coefficient,
the Wasserstein (earth mover's) distance in cm⁻¹ (``scipy.stats.wasserstein_distance``) and
the centroid shift in cm⁻¹ (:func:`centroid_shift_cm1`: first moment of the first minus the
second's; signed, and at most the Wasserstein distance in magnitude).

Units: dipoles e·Å, time fs, wavenumbers cm⁻¹; intensities are in arbitrary units
((e·Å/fs)² fs), meaningful relative to each other within one spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from palirs_data.units import INVCM_EV, SPEED_OF_LIGHT_CM_FS


@dataclass(frozen=True)
class Spectrum:
    wavenumber_cm1: np.ndarray
    intensity: np.ndarray
    #: what ``intensity`` is, for a measured spectrum: ``absorbance``, or ``absorption
    #: coefficient`` (decadic, per µmol/mol and metre: absorbance without its concentration
    #: and path length, so its saturation cannot be judged)
    units: str = "absorbance"
    #: who measured it, for a credit line (from the file's OWNER, SOURCE REFERENCE, ORIGIN,
    #: DATE headers; NIST's files say so)
    source: str = ""


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Unbiased autocorrelation of ``x`` (n_frames, n_components), summed over components,
    for lags 0..max_lag, by FFT with zero padding to at least twice the length (no
    wrap-around): C(τ) = Σ_c Σ_t x_c(t) x_c(t+τ) / (n − τ)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    n_fft = _next_pow2(2 * n)
    f = np.fft.rfft(x, n=n_fft, axis=0)
    acf = np.fft.irfft((f * f.conj()).real.sum(axis=1), n=n_fft)[:max_lag + 1]
    return acf / (n - np.arange(max_lag + 1))


def ir_spectrum(dipoles_eA: np.ndarray, timestep_fs: float, *,
                max_correlation_fs: float = 1000.0, zero_padding: int = 4,
                derivative: bool = True, quantum_correction: str | None = None,
                temperature_K: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IR spectrum of a dipole series.

    Parameters
    ----------
    dipoles_eA : array (n_frames, 3)
        Dipole moments at equal time steps, e·Å.
    timestep_fs : float
        Time between frames, fs.
    max_correlation_fs : float
        Correlation depth T: lags beyond this are dropped (the paper uses 1000 fs). It sets
        the resolution: with the Hann window over ±T a line's full width at half maximum is
        1/(c T) (33 cm⁻¹ at 1000 fs).
    zero_padding : int
        The windowed correlation function (length 2·depth) is padded to ``zero_padding`` times
        its length (next power of two) before the transform: a finer grid, not more
        resolution.
    derivative : bool
        Correlate dμ/dt (default, as the paper) rather than μ.
    quantum_correction : None, "harmonic", "standard" or "schofield"
        Optional factor on top (:func:`quantum_correction_factor`, needs ``temperature_K``).
        Off by default: with ``derivative=True`` the spectrum already carries the ω² of the
        harmonic correction.
    temperature_K : float, optional
        Temperature for the quantum correction.

    Returns
    -------
    wavenumber_cm1, intensity : arrays
        From 0 to the Nyquist wavenumber 1/(2 c Δt) (≈ 33 356 cm⁻¹ at 0.5 fs), ascending.
    """
    mu = np.asarray(dipoles_eA, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[1] != 3:
        raise ValueError(f"dipoles must have shape (n_frames, 3), got {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise ValueError("dipoles contain NaN or infinite values")
    if timestep_fs <= 0:
        raise ValueError("timestep_fs must be positive")
    if len(mu) < 4:
        raise ValueError(f"{len(mu)} frames are too few for a spectrum")
    signal = np.gradient(mu, timestep_fs, axis=0) if derivative else mu - mu.mean(0)
    max_lag = min(len(mu) - 1, int(round(max_correlation_fs / timestep_fs)))
    acf = autocorrelation(signal, max_lag)
    wavenumber, intensity = spectrum_of_correlation(acf, timestep_fs, zero_padding=zero_padding)
    if derivative:
        intensity = intensity * derivative_correction(wavenumber, timestep_fs)
    if quantum_correction is not None:
        intensity = intensity * quantum_correction_factor(wavenumber, quantum_correction,
                                                          temperature_K)
    return wavenumber, intensity


def derivative_correction(wavenumber_cm1: np.ndarray, timestep_fs: float) -> np.ndarray:
    """The factor that gives a spectrum of the central-difference derivative of μ
    (``np.gradient``) the weight of the exact derivative: the difference passes a line of
    angular frequency ω with sin(ωΔt)/(ωΔt) of its amplitude, so its intensity is corrected by
    the inverse square (1.03 at 3000 cm⁻¹ and Δt = 0.5 fs). Left at 1 where the difference
    passes less than a tenth (near the Nyquist wavenumber, far above any band)."""
    transfer = np.sinc(2 * SPEED_OF_LIGHT_CM_FS * np.asarray(wavenumber_cm1) * timestep_fs)
    return np.where(transfer > 0.1, 1.0 / np.maximum(transfer, 0.1) ** 2, 1.0)


def spectrum_of_correlation(acf: np.ndarray, timestep_fs: float, *, zero_padding: int = 4
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum of a one-sided correlation function ``acf`` (lags 0..L, step
    ``timestep_fs``): a Hann window over ±L (1 at lag 0, 0 at the depth), zero padding to
    ``zero_padding`` × its length (next power of two), and the (real) Fourier transform of the
    even function. Returns wavenumbers (cm⁻¹, ascending from 0) and intensities."""
    acf = np.asarray(acf, dtype=np.float64)
    max_lag = len(acf) - 1
    one_sided = acf * np.hanning(2 * max_lag + 1)[max_lag:]
    n_fft = _next_pow2(zero_padding * (2 * max_lag + 1))
    full = np.zeros(n_fft)
    full[:max_lag + 1] = one_sided
    full[n_fft - max_lag:] = one_sided[1:][::-1]
    intensity = np.fft.rfft(full).real * timestep_fs
    wavenumber = np.fft.rfftfreq(n_fft, d=timestep_fs) / SPEED_OF_LIGHT_CM_FS
    return wavenumber, intensity


# --- block correlation sums: spectra of many runs, and their bootstrap ----------------------


@dataclass(frozen=True)
class CorrelationBlocks:
    """The autocorrelation of dμ/dt of one run, cut into time blocks: ``sums[b, τ]`` =
    Σ_{t in block b} Σ_c x_c(t) x_c(t+τ) over the whole run (a block's lags reach into the
    next block), ``counts[b, τ]`` the number of terms. Summed over all blocks they give the
    run's unbiased autocorrelation exactly; summed over the blocks of several runs, the pooled
    autocorrelation (runs weighted by their length). Resampling blocks is the bootstrap of
    :mod:`palirs_data.compare`."""

    sums: np.ndarray  # (n_blocks, max_lag + 1)
    counts: np.ndarray  # (n_blocks, max_lag + 1)
    timestep_fs: float
    derivative: bool = True  # of dμ/dt (central differences), as ir_spectrum

    @property
    def n_blocks(self) -> int:
        return len(self.sums)


def correlation_blocks(dipoles_eA: np.ndarray, timestep_fs: float, *,
                       max_correlation_fs: float, block_fs: float,
                       derivative: bool = True) -> CorrelationBlocks:
    """Block sums (:class:`CorrelationBlocks`) of one run's dipole series, blocks of
    ``block_fs`` (the last block takes the remainder; a run shorter than the correlation
    depth is an error)."""
    mu = np.asarray(dipoles_eA, dtype=np.float64)
    max_lag = int(round(max_correlation_fs / timestep_fs))
    if mu.ndim != 2 or mu.shape[1] != 3 or not np.all(np.isfinite(mu)):
        raise ValueError("dipoles must be finite, of shape (n_frames, 3)")
    n = len(mu)
    if n <= max_lag:
        raise ValueError(f"{n} frames are fewer than the correlation depth ({max_lag + 1})")
    x = np.gradient(mu, timestep_fs, axis=0) if derivative else mu - mu.mean(0)
    size = n if not np.isfinite(block_fs) else max(1, int(round(block_fs / timestep_fs)))
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size // 2:
        starts.pop()  # a short remainder joins the previous block
    ends = starts[1:] + [n]
    lags = np.arange(max_lag + 1)
    sums, counts = [], []
    for a, b in zip(starts, ends):
        head, tail = x[a:b], x[a:min(b + max_lag, n)]
        n_fft = _next_pow2(len(head) + max_lag + 1)
        cross = np.fft.irfft((np.fft.rfft(head, n=n_fft, axis=0).conj()
                              * np.fft.rfft(tail, n=n_fft, axis=0)).sum(axis=1), n=n_fft)
        sums.append(cross[:max_lag + 1])
        counts.append(np.clip(np.minimum(b, n - lags) - a, 0, None).astype(np.float64))
    return CorrelationBlocks(np.array(sums), np.array(counts), timestep_fs, derivative)


def pooled_spectrum(runs: list[CorrelationBlocks], *, zero_padding: int = 4,
                    weights: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum of the pooled autocorrelation of ``runs`` (all blocks once, or each
    block ``weights[r][b]`` times: a bootstrap draw)."""
    if weights is None:
        sums = sum(r.sums.sum(0) for r in runs)
        counts = sum(r.counts.sum(0) for r in runs)
    else:
        sums = sum(w @ r.sums for r, w in zip(runs, weights))
        counts = sum(w @ r.counts for r, w in zip(runs, weights))
    acf = sums / np.where(counts > 0, counts, np.inf)
    nu, intensity = spectrum_of_correlation(acf, runs[0].timestep_fs, zero_padding=zero_padding)
    if runs[0].derivative:
        intensity = intensity * derivative_correction(nu, runs[0].timestep_fs)
    return nu, intensity


def bootstrap_weights(runs: list[CorrelationBlocks], rng: np.random.Generator,
                      paired: list[CorrelationBlocks] | None = None, *,
                      blocks: bool = True) -> list[np.ndarray]:
    """One bootstrap draw: runs with replacement, and with ``blocks`` then within each drawn
    run its blocks with replacement (else each drawn run whole); returns how often each block
    of each run is taken. Runs are the independent units (a weakly thermostatted run keeps its
    energy for ~1/γ, so blocks of one run are not independent). Drawing the blocks too counts
    the variation within a run twice, in the runs and in the blocks: on real MD it widened the
    interval 1.3–1.4× beyond the whole runs' (docs/method.md, "Do the intervals hold on real
    MD?").

    With ``paired`` (a second set, run k of both started from the same seed: the same
    velocities and thermostat noise, so their spectra are correlated), the same runs are
    drawn for both, and within a drawn pair the same blocks where the two runs have as many
    (else each its own); returns the weights of ``runs`` followed by those of ``paired``."""
    sets = [runs] if paired is None else [runs, paired]
    if paired is not None and len(paired) != len(runs):
        raise ValueError("paired runs: both sets need the same number of runs")
    weights = [[np.zeros(r.n_blocks) for r in one] for one in sets]
    for k in rng.integers(0, len(runs), size=len(runs)):
        if not blocks:
            for one in weights:
                one[k] += 1.0
            continue
        n = runs[k].n_blocks
        pick = rng.integers(0, n, size=n)
        weights[0][k] += np.bincount(pick, minlength=n)
        if paired is not None:
            m = paired[k].n_blocks
            weights[1][k] += np.bincount(pick if m == n else rng.integers(0, m, size=m),
                                         minlength=m)
    return weights[0] if paired is None else weights[0] + weights[1]


def md_line_shape(offset_cm1: np.ndarray, max_correlation_fs: float) -> np.ndarray:
    """The line shape :func:`ir_spectrum` gives a single undamped line: the Fourier transform
    of the Hann lag window over ±T (T = ``max_correlation_fs``),
    T·[sinc(2fT) + ½ sinc(2fT − 1) + ½ sinc(2fT + 1)] with f = c·Δν̃, normalised to unit
    area. Its full width at half maximum is 1/(cT): 33.4 cm⁻¹ at 1000 fs."""
    u = 2 * SPEED_OF_LIGHT_CM_FS * np.asarray(offset_cm1, dtype=np.float64) \
        * max_correlation_fs
    shape = np.sinc(u) + 0.5 * np.sinc(u - 1) + 0.5 * np.sinc(u + 1)
    # ∫ W(f) df = w(0) = 1 with W = T·[...]; per cm⁻¹, f = c ν̃: c·T·[...]
    return shape * SPEED_OF_LIGHT_CM_FS * max_correlation_fs


def md_line_fwhm_cm1(max_correlation_fs: float) -> float:
    """Full width at half maximum of :func:`md_line_shape`, cm⁻¹."""
    return 1.0 / (SPEED_OF_LIGHT_CM_FS * max_correlation_fs)


def friction_fwhm_cm1(friction_fs: float) -> float:
    """Full width at half maximum (cm⁻¹) of the Lorentzian a Langevin friction γ gives every
    line: a velocity correlation damped as exp(−γt/2), FWHM γ/(2πc) (5.3 cm⁻¹ at 0.001 fs⁻¹)."""
    return friction_fs / (2 * np.pi * SPEED_OF_LIGHT_CM_FS)


def convolve_to_md(spectrum: Spectrum, max_correlation_fs: float, friction_fs: float = 0.0
                   ) -> Spectrum:
    """An experimental spectrum (uniform grid) convolved with the MD line shape, so that it
    is compared at the resolution of the MD spectra: :func:`md_line_shape` (the lag window of
    the correlation depth) and, for a thermostatted MD, the Lorentzian of its friction
    (:func:`friction_fwhm_cm1`). Rotational fine structure and narrow Q branches are smoothed
    as the MD's lines are. The grid is kept; the area is preserved."""
    x, y = spectrum.wavenumber_cm1, spectrum.intensity
    step = float(np.median(np.diff(x)))
    gamma = friction_fwhm_cm1(friction_fs)
    half = int(np.ceil((8 * md_line_fwhm_cm1(max_correlation_fs) + 20 * gamma) / step))
    offsets = step * np.arange(-half, half + 1)
    kernel = md_line_shape(offsets, max_correlation_fs)
    if gamma > 0:
        lorentz = (gamma / 2) / np.pi / (offsets ** 2 + (gamma / 2) ** 2)
        kernel = np.convolve(kernel, lorentz / lorentz.sum(), mode="same")
    full = np.convolve(y, kernel / kernel.sum())  # the kernel may be longer than the spectrum
    return Spectrum(x, full[half:half + len(y)])


def quantum_correction_factor(wavenumber_cm1: np.ndarray, kind: str,
                              temperature_K: float | None) -> np.ndarray:
    """Quantum correction factors for a classical correlation spectrum (Ramírez et al.,
    J. Chem. Phys. 121, 3973 (2004)), x = βħω: ``harmonic`` x/(1 − e^(−x)), ``standard``
    2/(1 + e^(−x)), ``schofield`` e^(x/2); all 1 at ω = 0."""
    from ase.units import kB

    if temperature_K is None or temperature_K <= 0:
        raise ValueError("a quantum correction needs a positive temperature_K")
    x = INVCM_EV * np.asarray(wavenumber_cm1, dtype=np.float64) / (kB * temperature_K)
    safe = np.where(x == 0, 1.0, x)
    if kind == "harmonic":
        return np.where(x == 0, 1.0, safe / -np.expm1(-safe))
    if kind == "standard":
        return 2.0 / (1.0 + np.exp(-x))
    if kind == "schofield":
        return np.exp(x / 2)
    raise ValueError(f"unknown quantum correction {kind!r} (harmonic, standard, schofield)")


# --- comparing spectra ------------------------------------------------------------------------


def on_grid(wavenumber_cm1: np.ndarray, intensity: np.ndarray, grid_cm1: np.ndarray
            ) -> np.ndarray:
    """A spectrum linearly interpolated onto ``grid_cm1``, clipped at zero and normalised to
    unit area (trapezoidal rule) over the grid."""
    x = np.asarray(wavenumber_cm1, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    order = np.argsort(x)
    values = np.clip(np.interp(grid_cm1, x[order], y[order], left=0.0, right=0.0), 0, None)
    area = np.trapezoid(values, grid_cm1)
    if not area > 0:
        raise ValueError("the spectrum has no positive intensity in the comparison window")
    return values / area


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation coefficient of two spectra on the same grid."""
    return float(np.corrcoef(a, b)[0, 1])


def wasserstein_cm1(grid_cm1: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance (cm⁻¹) between two spectra on the same grid, as distributions."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(grid_cm1, grid_cm1, u_weights=a, v_weights=b))


def centroid_shift_cm1(grid_cm1: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The centroid (first moment, cm⁻¹) of unit-area spectrum ``a`` minus that of ``b``, both
    on ``grid_cm1``: negative where ``a`` carries its intensity lower. W1 is at least its
    magnitude; being signed and linear in the spectra, the noise of finite MD averages out of
    it where it only raises a W1."""
    return float(np.trapezoid(grid_cm1 * (a - b), grid_cm1))


def compare_spectra(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray],
                    *, window_cm1: tuple[float, float] = (500.0, 4000.0),
                    step_cm1: float = 1.0) -> dict[str, float]:
    """PCC, Wasserstein distance and centroid shift (first minus second) of two spectra
    ``(wavenumber_cm1, intensity)`` over ``window_cm1`` (see the module docstring)."""
    grid = np.arange(window_cm1[0], window_cm1[1] + step_cm1 / 2, step_cm1)
    a, b = on_grid(*first, grid), on_grid(*second, grid)
    return {"pcc": pearson(a, b), "wasserstein_cm1": wasserstein_cm1(grid, a, b),
            "centroid_shift_cm1": centroid_shift_cm1(grid, a, b)}
