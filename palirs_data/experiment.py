"""Experimental gas-phase IR spectra (JCAMP-DX) for the molecules of a campaign.

Source, by default: the source distribution of the ``jcamp`` package on the package index
ships gas-phase spectra (Coblentz Society, NIST, EPA) in ``data/infrared_spectra/``. They are
obtained through pip, never copied into this repository::

    pip download --no-binary :all: --no-deps jcamp==1.3.2

:func:`collect` does exactly that (into a scratch directory), picks the file of each molecule
(:data:`JCAMP_FILES` maps catalogue names to file names), checks that it reads as an IR
spectrum (:func:`palirs_data.spectra.read_jcamp`), and copies it into the output directory
with ``sources.json`` (molecule → file, origin, title, sha256, and where the measured
absorbance exceeds ``experiment.saturation_absorbance``). A user's own file
(``experiment.files``: molecule → path) takes precedence; a molecule with neither is listed as
missing and is compared with reference MD only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from palirs_data.config import ExperimentConfig
from palirs_data.errors import PalirsInputError
from palirs_data.names import file_stem

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
    from palirs_data.spectra import read_jcamp

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
    spectrum in absorption-coefficient units (:func:`palirs_data.spectra.read_jcamp`) has no
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
