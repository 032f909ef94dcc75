"""What the label source can reach against experiment: its own double-harmonic IR spectrum.

Run: python benchmarks/label_source_ceiling.py [--method xtb] [--molecules water methanol ...]
     [--compare benchmarks/results/multi-molecule/compare.json]

The committee learns the label source, so no ML spectrum can agree with experiment better than
the label source's own physics allows. For each molecule with an experimental spectrum (the
jcamp sdist, fetched as the experiment stage does), in one run: optimise with the label source
(``--method``: ``xtb`` is GFN2-xTB, ``pyscf`` is PBE/def2-SVP, the labeler's defaults),
finite-difference Hessian and dipole derivatives (``harmonic.harmonic_analysis`` with
``dipole=True``, the double-harmonic intensities), the sticks broadened with the MD line
shape of params.yaml's ir settings (the line shape the experiment is convolved with in
compare), scored against the experiment exactly as the compare stage scores
(baseline-corrected, convolved, window cut to the experiment's range; PCC and WD in cm⁻¹).
Printed per molecule: the strongest band of the label source, the share of the intensity in
three regions (X–H stretches above 2600 cm⁻¹, triple and cumulated bonds 1800–2600, the
fingerprint below 1800) for the label source and for the experiment, the harmonic PCC/WD,
and, with ``--compare``, the reference-MD–experiment PCC of a finished run beside it (the
same physics, anharmonic and thermal).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

DEFAULT = ["water", "methanol", "ethanol", "ethene", "ethylene oxide", "acetonitrile",
           "isopropyl alcohol", "1,3-butadiene"]


def harmonic_sticks(name: str, labeler, fmax: float, delta: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cm⁻¹) and double-harmonic intensities (km/mol) of the vibrations: the
    pipeline's own harmonic analysis with the dipole's derivatives."""
    from palirs_data import molecules
    from palirs_data.harmonic import harmonic_analysis

    atoms = molecules.build_atoms(molecules.resolve([name], [], where="benchmark")[0])
    result = harmonic_analysis(atoms, labeler.calculator(), fmax_eVA=fmax, max_steps=500,
                               hessian_step_A=delta, name=name, dipole=True)
    return result.frequencies_cm1, result.intensities_km_mol


def broadened(freq, intensity, ir):
    """Sticks on a 1 cm⁻¹ grid, convolved with the MD line shape of ``ir``."""
    from palirs_data.spectra import Spectrum, convolve_to_md

    grid = np.arange(0.0, 4600.0, 1.0)
    sticks = np.zeros_like(grid)
    for f, i in zip(freq, intensity):
        if 0 < f < grid[-1]:
            sticks[int(round(f))] += i
    return convolve_to_md(Spectrum(grid, sticks), ir.max_correlation_fs, ir.friction_fs)


REGIONS = (2600.0, 1800.0)  # cm⁻¹: X–H stretches above, fingerprint below the second


def region_shares(x, y, lo, hi) -> str:
    """Shares of the intensity in [lo, hi] above 2600, in 1800–2600 and below 1800 cm⁻¹."""
    x, y = np.asarray(x), np.clip(np.asarray(y), 0, None)
    inside = (x >= lo) & (x <= hi)
    total = y[inside].sum()
    parts = [inside & (x > REGIONS[0]), inside & (x > REGIONS[1]) & (x <= REGIONS[0]),
             inside & (x <= REGIONS[1])]
    return "/".join(f"{y[p].sum() / total:.2f}" for p in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="xtb", choices=["xtb", "pyscf"])
    parser.add_argument("--xtb-method", default="GFN2-xTB",
                        choices=["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"],
                        help="the tight-binding Hamiltonian when --method xtb")
    parser.add_argument("--molecules", nargs="+", default=DEFAULT)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--compare", type=Path, default=None,
                        help="a finished run's compare.json (reference_vs_experiment beside)")
    parser.add_argument("--delta", type=float, default=0.01, help="finite difference, Å")
    args = parser.parse_args()

    from palirs_data.compare import _window
    from palirs_data.experiment import experimental_spectra
    from palirs_data.config import LabelerConfig, XtbSettings, load_params
    from palirs_data.experiment import collect
    from palirs_data.labelers import make_labeler
    from palirs_data.spectra import compare_spectra

    params = load_params(args.params)
    labeler = make_labeler(LabelerConfig(method=args.method,
                                         xtb=XtbSettings(method=args.xtb_method)))
    ref = {}
    if args.compare is not None:
        per = json.loads(args.compare.read_text())["molecules"]
        ref = {m: v["reference_vs_experiment"]["pcc"] for m, v in per.items()
               if "reference_vs_experiment" in v}
    with tempfile.TemporaryDirectory() as tmp:
        record = collect(args.molecules, params.experiment, Path(tmp) / "exp",
                         work_dir=Path(tmp) / "work")
        experiments = experimental_spectra(Path(tmp) / "exp", params.compare, params.ir)
    source = args.xtb_method if args.method == "xtb" else labeler.method
    print(f"label source {source}: double-harmonic spectrum vs experiment "
          f"(line shape of {params.ir.max_correlation_fs:g} fs, friction "
          f"{params.ir.friction_fs:g} fs^-1)")
    print(f"{'molecule':<18} {'strongest band':>15} {'shares >2600/1800-2600/<1800':>29} "
          f"{'PCC':>6} {'WD cm-1':>8} {'ref-MD PCC':>10}")
    print(f"{'':<18} {'':>15} {'label source | experiment':>29}")
    pccs = []
    for name in args.molecules:
        if name not in experiments:
            print(f"{name:<18} no experiment ({', '.join(record['missing'])} missing)")
            continue
        exp = experiments[name]
        freq, intensity = harmonic_sticks(name, labeler, params.sample.fmax_eVA, args.delta)
        harm = broadened(freq, intensity, params.ir)
        window = _window(params.compare, exp)
        s = compare_spectra((harm.wavenumber_cm1, harm.intensity),
                            (exp.compared.wavenumber_cm1, exp.compared.intensity),
                            window_cm1=window, step_cm1=params.compare.step_cm1)
        inside = (freq >= window[0]) & (freq <= window[1])
        top = float(freq[inside][np.argmax(intensity[inside])])
        shares = (region_shares(freq, intensity, *window) + " | "
                  + region_shares(exp.corrected.wavenumber_cm1, exp.corrected.intensity,
                                  *window))
        pccs.append(s["pcc"])
        r = ref.get(name)
        print(f"{name:<18} {top:>10.0f} cm-1 {shares:>29} {s['pcc']:>6.3f} "
              f"{s['wasserstein_cm1']:>8.1f} {'' if r is None else f'{r:.3f}':>10}")
    if pccs:
        print(f"mean PCC over {len(pccs)} molecules: {np.mean(pccs):.3f} +- {np.std(pccs):.3f}")


if __name__ == "__main__":
    main()
