"""Experimental gas-phase IR spectra (JCAMP-DX) for the molecules of a campaign.

Source, by default: the source distribution of the ``jcamp`` package on the package index
ships gas-phase spectra (Coblentz Society, NIST, EPA) in ``data/infrared_spectra/``. They are
obtained through pip, never copied into this repository::

    pip download --no-binary :all: --no-deps jcamp==1.3.2

:func:`collect` does exactly that (into a scratch directory), picks the file of each molecule
(:data:`JCAMP_FILES` maps catalogue names to file names), checks that it reads as an IR
spectrum (:func:`read_jcamp`), and copies it into the output directory
with ``sources.json`` (molecule → file, origin, title, sha256, and where the measured
absorbance exceeds ``experiment.saturation_absorbance``). A user's own file
(``experiment.files``: molecule → path) takes precedence; a molecule with neither is listed as
missing and is compared with reference MD only.

A measured spectrum is read as absorbance against wavenumber (:func:`read_jcamp`), credited to
who measured it (:func:`jcamp_credit`), and baseline corrected on a uniform grid
(:func:`corrected_experiment`, :func:`baseline_of`) before the compare stage scores it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palirs_data.config import CompareConfig, ExperimentConfig, IrConfig
from palirs_data.errors import PalirsInputError
from palirs_data.names import file_stem
from palirs_data.spectra import Spectrum, convolve_to_md, friction_fwhm_cm1, md_line_fwhm_cm1

log = logging.getLogger(__name__)

#: catalogue name -> file in the jcamp sdist's data/infrared_spectra/
JCAMP_FILES: dict[str, str] = {
    name: f"{file}.jdx" for name, file in [
        ("water", "water"), ("ammonia", "ammonia"), ("methane", "methane"),
        ("carbon monoxide", "carbon monoxide"), ("carbon dioxide", "carbon dioxide"),
        ("methanol", "methanol"), ("ethane", "ethane"), ("ethene", "ethylene"),
        ("ethanol", "ethanol"), ("ethylene oxide", "ethylene oxide"),
        ("acetonitrile", "acetonitrile"), ("acetone", "acetone"),
        ("isopropyl alcohol", "isopropyl alcohol"), ("1,3-butadiene", "1,3-butadiene"),
        ("benzene", "benzene"),
    ]
}

SOURCES_FILE = "sources.json"


def download_jcamp_sdist(version: str, directory: Path) -> Path:
    """The ``jcamp`` source distribution, by ``pip download`` into ``directory`` (reused
    when already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob(f"jcamp-{version}.tar.gz"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--quiet", "--disable-pip-version-check", "-d", str(directory), f"jcamp=={version}"]
    log.info("experiment: %s", " ".join(cmd[2:]))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(directory.glob(f"jcamp-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
        raise PalirsInputError(f"experiment.jcamp_version: pip download jcamp=={version} "
                               f"failed ({last[:200]})")
    return found[0]


def _extract(archive: Path, member_name: str) -> bytes | None:
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if (member.isfile() and len(parts) >= 3 and parts[-3:-1] ==
                        ("data", "infrared_spectra") and parts[-1] == member_name):
                    handle = tar.extractfile(member)
                    return handle.read() if handle is not None else None
    except (tarfile.TarError, OSError) as exc:
        raise PalirsInputError(f"{archive}: not a readable source archive ({exc})") from None
    return None


def collect(molecules: list[str], config: ExperimentConfig, out_dir: Path, *,
            work_dir: Path) -> dict:
    """Write each molecule's experimental spectrum to ``out_dir/<stem>.jdx`` and
    ``out_dir/sources.json`` (module docstring); returns the sources record."""
    from palirs_data.molecules import check_name

    for name in config.files:
        check_name(name, where="experiment.files")
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = {file_stem(m): m for m in molecules}
    if len(stems) != len(set(molecules)):
        raise PalirsInputError("molecules.names: two molecules share the file name "
                               "of their experimental spectrum")
    record: dict = {"molecules": {}, "missing": []}
    archive = None
    for molecule in molecules:
        target = out_dir / f"{file_stem(molecule)}.jdx"
        if molecule in config.files:
            source = Path(config.files[molecule])
            if not source.is_file():
                raise PalirsInputError(f"experiment.files.{molecule}: {source}: no such file")
            data, origin = source.read_bytes(), str(source)
        elif molecule in JCAMP_FILES:
            if archive is None:
                archive = download_jcamp_sdist(config.jcamp_version, work_dir)
            data = _extract(archive, JCAMP_FILES[molecule])
            if data is None:
                raise PalirsInputError(f"{archive}: no data/infrared_spectra/"
                                       f"{JCAMP_FILES[molecule]}")
            origin = (f"jcamp=={config.jcamp_version} sdist: data/infrared_spectra/"
                      f"{JCAMP_FILES[molecule]}")
        else:
            record["missing"].append(molecule)
            log.info("experiment: no experimental spectrum for '%s'", molecule)
            continue
        target.write_bytes(data)
        try:
            spectrum = read_jcamp(target)
        except PalirsInputError as exc:  # name the file the user knows, not our copy
            raise PalirsInputError(str(exc).replace(str(target), origin)) from None
        title = _title(data)
        record["molecules"][molecule] = {
            "file": target.name, "origin": origin, "title": title,
            "sha256": hashlib.sha256(data).hexdigest(),
            "range_cm1": [round(float(spectrum.wavenumber_cm1.min()), 1),
                          round(float(spectrum.wavenumber_cm1.max()), 1)],
            **saturation(spectrum, config.saturation_absorbance)}
        log.info("experiment: %s <- %s", molecule, origin)
    (out_dir / SOURCES_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if archive is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return record


def saturation(spectrum, threshold: float) -> dict:
    """Where a measured absorbance spectrum exceeds ``threshold``: its highest absorbance,
    whether it is saturated there, and the wavenumber ranges (cm⁻¹) above the threshold. A
    spectrum in absorption-coefficient units (:func:`read_jcamp`) has no
    absorbance to judge: ``max_absorbance`` and ``saturated`` are None."""
    units = getattr(spectrum, "units", "absorbance")
    if units != "absorbance":
        return {"max_absorbance": None, "saturation_absorbance": threshold, "saturated": None,
                "saturated_cm1": [], "intensity_units": units}
    a = np.asarray(spectrum.intensity)
    x = np.asarray(spectrum.wavenumber_cm1)
    above = a > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(int), [0]])))
    ranges = [[round(float(x[i]), 1), round(float(x[j - 1]), 1)]
              for i, j in zip(edges[::2], edges[1::2])]
    return {"max_absorbance": round(float(a.max()), 3), "saturation_absorbance": threshold,
            "saturated": bool(above.any()), "saturated_cm1": ranges}


def _title(data: bytes) -> str:
    for line in data.decode("latin-1").splitlines():
        if line.upper().startswith("##TITLE="):
            return line.split("=", 1)[1].strip()
    return ""


def read_sources(directory: Path) -> dict:
    """The ``sources.json`` of an experiment directory."""
    path = Path(directory) / SOURCES_FILE
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file (run the experiment stage)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["molecules"], record["missing"]
    except (ValueError, KeyError, TypeError):
        raise PalirsInputError(f"{path}: not an experiment sources record") from None
    return record


# --- reading and correcting a measured spectrum ----------------------------------------


def read_jcamp(path) -> Spectrum:
    """An IR spectrum from a JCAMP-DX file (the ``jcamp`` package reads it) as absorbance
    against wavenumber (cm⁻¹, ascending). Transmittance T (fraction, or percent when its
    values exceed 1.5) becomes absorbance −log10(T); wavelengths in micrometres become
    wavenumbers. The quantitative gas-phase spectra in (µmol/mol)⁻¹ m⁻¹ (base 10) (PNNL's
    kind: several of the ``jcamp`` sdist's, e.g. acetonitrile, ethylene oxide, acetone) are a
    decadic absorption coefficient, proportional to absorbance; they are read as they are,
    with ``units`` saying so. Anything else is a one-line :class:`PalirsInputError` naming
    the file."""
    import jcamp

    path = Path(path)
    if not path.is_file():
        raise PalirsInputError(f"{path}: no such file")
    head = path.read_bytes()[:4096]
    if not head.strip():
        raise PalirsInputError(f"{path}: empty file, not a JCAMP-DX spectrum")
    if b"\0" in head or not head.lstrip().startswith(b"##"):
        raise PalirsInputError(f"{path}: not a JCAMP-DX text file (one starts with '##TITLE=')")
    try:
        data = jcamp.readfile(str(path))
        x = np.asarray(data["x"], dtype=np.float64)
        y = np.asarray(data["y"], dtype=np.float64)
    except Exception as exc:  # the reader's own errors vary; the user needs the file name
        raise PalirsInputError(f"{path}: not a readable JCAMP-DX spectrum "
                               f"({type(exc).__name__}: {exc})"[:300]) from None
    if "infrared" not in str(data.get("data type", "")).lower():
        raise PalirsInputError(f"{path}: DATA TYPE is {data.get('data type')!r}, "
                               f"not an infrared spectrum")
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise PalirsInputError(f"{path}: no spectrum (x and y of {x.shape} and {y.shape})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    xunits = str(data.get("xunits", "")).strip().upper()
    if xunits in {"1/CM", "CM-1", "CM^-1"}:
        wavenumber = x
    elif xunits in {"MICROMETERS", "MICRONS", "UM"}:
        if np.any(x <= 0):
            raise PalirsInputError(f"{path}: non-positive wavelengths")
        wavenumber = 1e4 / x
    else:
        raise PalirsInputError(f"{path}: XUNITS {xunits!r} (expected 1/CM or MICROMETERS)")
    yunits = str(data.get("yunits", "")).strip().upper()
    units = "absorbance"
    if yunits == "TRANSMITTANCE":
        t = y / 100.0 if np.nanmax(y) > 1.5 else y
        absorbance = -np.log10(np.clip(t, 1e-6, None))
    elif yunits == "ABSORBANCE":
        absorbance = y
    elif re.fullmatch(r"\(MICROMOL/MOL\)-1\s*M-1\s*\(BASE 10\)", yunits):
        absorbance, units = y, "absorption coefficient"
    else:
        raise PalirsInputError(f"{path}: YUNITS {yunits!r} (expected TRANSMITTANCE, "
                               f"ABSORBANCE or (MICROMOL/MOL)-1M-1 (BASE 10))")
    order = np.argsort(wavenumber)
    return Spectrum(wavenumber[order], absorbance[order], units, jcamp_credit(data))


def jcamp_credit(data: dict) -> str:
    """Who measured a JCAMP-DX spectrum, from its headers: e.g. "Coblentz Society, Coblentz
    No. 8791 (Dow Chemical Company, 1964), via the NIST Chemistry WebBook"."""
    def field(key: str) -> str:
        value = (str(data.get(key, "") or "").strip().splitlines() or [""])[0].strip()
        return value.title() if value.isupper() else value

    owner, reference = field("owner"), field("source reference")
    origin, date = field("origin"), field("date")
    detail = ", ".join(v for v in (origin, date) if v)
    text = ", ".join(v for v in (owner, reference) if v) + (f" ({detail})" if detail else "")
    if any(str(k).lower().startswith("$nist") for k in data):
        text += ", via the NIST Chemistry WebBook"
    return text.strip(", ")


def baseline_of(y: np.ndarray, *, method: str = "asls", smoothness: float = 1e7,
             asymmetry: float = 0.001, step_cm1: float = 1.0) -> np.ndarray:
    """Baseline of a spectrum on a uniform grid by penalised least squares from pybaselines
    (the documented equivalent of the automated baseline correction of van Esch et al.,
    J. Chem. Theory Comput. 17, 985 (2021)): ``asls``, asymmetric least squares (Eilers and
    Boelens, 2005; points above the curve pull on it with weight ``asymmetry``, points below
    with ``1 − asymmetry``, so it runs under the peaks), or ``arpls``, asymmetrically
    reweighted (Baek et al., 2015; no asymmetry to choose). ``smoothness`` is the
    second-difference penalty λ: on a 1 cm⁻¹ grid the default bends on a scale of about
    λ^(1/4) ≈ 56 cm⁻¹."""
    from pybaselines import Baseline

    y = np.asarray(y, dtype=np.float64)
    fitter = Baseline(x_data=np.arange(len(y)) * step_cm1)
    if method == "asls":
        z, _ = fitter.asls(y, lam=smoothness, p=asymmetry, max_iter=50, tol=1e-3)
    elif method == "arpls":
        z, _ = fitter.arpls(y, lam=smoothness, max_iter=50, tol=1e-3)
    else:
        raise ValueError(f"unknown baseline method '{method}' (asls, arpls)")
    return z


def corrected_experiment(spectrum: Spectrum, *, step_cm1: float = 1.0, floor: float = 0.01,
                         **options) -> Spectrum:
    """An experimental absorbance spectrum on a uniform grid (``step_cm1``), baseline
    removed (:func:`baseline_of`), and what is left below ``floor`` × the highest band set
    to zero: a residual offset of a few thousandths, spread over the whole window, would
    otherwise carry several per cent of the area and shift the Wasserstein distance by tens
    of cm⁻¹."""
    x = spectrum.wavenumber_cm1
    grid = np.arange(np.ceil(x.min()), np.floor(x.max()) + step_cm1 / 2, step_cm1)
    y = np.interp(grid, x, spectrum.intensity)
    corrected = y - baseline_of(y, step_cm1=step_cm1, **options)
    corrected[corrected < floor * corrected.max()] = 0.0
    return Spectrum(grid, corrected)


# --- the experiment as compared ------------------------------------------------------------

@dataclass
class Experiment:
    """A measured spectrum: baseline corrected (``corrected``), convolved with the MD line
    shape (``compared``: what the scores use; the corrected one when convolution is off),
    and where the measured absorbance is saturated (``sources.json``)."""

    corrected: Spectrum
    compared: Spectrum
    measured: Spectrum  # as read: absorbance, before any baseline correction
    saturated_cm1: list[list[float]]
    max_absorbance: float | None
    saturation_absorbance: float | None
    fwhm_cm1: float | None  # of the lag window's line shape
    friction_fwhm_cm1: float | None  # of the friction's Lorentzian


def experimental_spectra(directory: Path, config: CompareConfig, ir: IrConfig | None = None
                         ) -> dict[str, Experiment]:
    """Each molecule's experiment (:class:`Experiment`), convolved with the line shape of
    ``ir``'s correlation depth when ``config.convolve_experiment``."""
    sources = read_sources(directory)
    out = {}
    for molecule, entry in sources["molecules"].items():
        raw = read_jcamp(Path(directory) / entry["file"])
        corrected = corrected_experiment(
            raw, step_cm1=config.step_cm1, floor=config.baseline_floor,
            method=config.baseline_method, smoothness=config.baseline_smoothness,
            asymmetry=config.baseline_asymmetry)
        ir = ir or IrConfig()
        compared = convolve_to_md(corrected, ir.max_correlation_fs, ir.friction_fs) \
            if config.convolve_experiment else corrected
        out[molecule] = Experiment(corrected, compared, raw, entry.get("saturated_cm1", []),
                                   entry.get("max_absorbance"),
                                   entry.get("saturation_absorbance"),
                                   md_line_fwhm_cm1(ir.max_correlation_fs)
                                   if config.convolve_experiment else None,
                                   friction_fwhm_cm1(ir.friction_fs)
                                   if config.convolve_experiment else None)
    return out
