"""Named settings: documented changes to ``params.yaml`` for a whole run.

``python -m palirs_data.campaign experiments --setting multi-molecule`` runs the campaign with
``params.yaml`` changed as :data:`SETTINGS` says (the experiments record the changed file, so
``dvc exp show`` lists its parameters); ``params.yaml`` itself is left as it was. Each value's
reason is beside it; docs/molecules.md ("The multi-molecule setting") gives the measured wall times.

- ``multi-molecule``: six training molecules that span the functional groups and have
  gas-phase experiments (O–H, C–O, C=C, C≡N, a strained ether ring), two transfer molecules
  with experiments whose groups the training set covers (isopropyl alcohol: ethanol's;
  1,3-butadiene: ethene's), sized to run end to end on two cores.
- ``multi-molecule-dft``: the same six training molecules with PBE/def2-SVP labels (PySCF),
  sized for two cores: one acquisition iteration, no transfer molecules (their DFT Hessians
  alone cost ~30 min here) and no reference MD (10^5 single points); experiment only.
- ``converged-spectra``: the demo with 96 IR runs per molecule and temperature instead of 12, for
  ML–reference PCC intervals within ± 0.02 (docs/method.md, "96 runs": 0.995 [0.984, 0.996];
  48 runs missed it below by 0.006); some 34 min beyond the demo's wall time on two cores.
- ``full``: the method's 24 + 8 molecules at its settings (128 channels, 50 ps spectra,
  to 40 iterations): for a GPU cluster (docs/molecules.md: "The full setting, planned").
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from palirs_data.errors import PalirsInputError

#: mappings that a setting replaces as a whole instead of merging into
REPLACED = {("active_learning", "iterations"), ("experiment", "files")}

SETTINGS: dict[str, dict] = {
    "multi-molecule": {
        "molecules": {
            "names": ["water", "methanol", "ethanol", "ethene", "ethylene oxide",
                      "acetonitrile"],
            "transfer": ["isopropyl alcohol", "1,3-butadiene"],
        },
        # sized to run end to end within 2 h on two cores (docs/molecules.md): committee
        # training grows with structures x atom pairs (the six molecules' normal-mode samples
        # are ~2.7x methanol's per frame per mode), the IR MD with atoms x runs
        # 2 per mode (150 structures) left every molecule above 5 cm-1 after two iterations
        # (mean 12.8); 4 per mode: 300 structures (docs/molecules.md)
        "sample": {"frames_per_mode": 4},
        # 60 epochs and one iteration ran in 36 min but left the committee at 28.7 cm-1 and
        # mean ML-ref PCC at 0.74 (docs/molecules.md): 180 epochs, two iterations
        # energy weight 10 (forces 100): one committee for six molecules learns each
        # molecule's energy offset (iteration-0 test energy RMSE 92.7 -> 17.3 meV/atom,
        # frequency MAE 11.0 -> 9.2 cm-1; docs/molecules.md)
        # every committee 180 epochs, the first included (params.yaml's initial_epochs is the
        # demo's, measured on methanol only)
        # max_ell 3, as measured (params.yaml's 2 and its epochs were chosen on methanol)
        "committee": {"model": {"max_ell": 3},
                      "training": {"max_num_epochs": 180, "energy_weight": 10.0},
                      "initial_epochs": None},
        # the dipole model as measured (docs/molecules.md): 30 MD frames per temperature;
        # params.yaml's 90 (2026-12-07: methanol's O-H stretch intensity) would add ~1100
        # structures here, about 2.3x the dipole training, not measured on six molecules
        "dipole": {"md_frames": 30, "training": {"max_num_epochs": 100}},
        "test_set": {"duration_fs": 1000.0, "n_candidates": 100, "n_clusters": 4,
                     "per_cluster": 3},  # 12 test structures per molecule
        "active_learning": {
            "iterations": {"iter1": "iter0", "iter2": "iter1"},
            "acquire": {"replicas": 1, "per_temperature": 4},
        },
        # 3 runs gave ML-ref PCC intervals up to 0.3 wide (bootstrap over runs): 6 runs
        "ir": {"trajectories": 6, "produce_fs": 2000.0},
    },
    # ML-ref PCC on the present models, prefixes of one seeded set of 96 runs: 12 runs 0.972
    # [0.894, 0.979], 48 0.992 [0.967, 0.993], 96 0.995 [0.984, 0.996] (docs/method.md)
    "converged-spectra": {"ir": {"trajectories": 96}},
    "full": {
        "molecules": {"names": ["training"], "transfer": ["transfer"]},
        # as the method: 128 channels, max_ell 3, 300 epochs (the cost model's measurements)
        "committee": {"model": {"num_channels": 128, "max_ell": 3},
                      "training": {"max_num_epochs": 300}, "initial_epochs": None},
        "test_set": {"duration_fs": 100000.0},
        "active_learning": {
            "iterations": {f"iter{k}": f"iter{k - 1}" for k in range(1, 41)},
            "acquire": {"duration_fs": 5000.0},
        },
        "ir": {"produce_fs": 50000.0, "thermalise_fs": 4000.0},
    },
}


def merged(raw: dict, changes: dict, path: tuple[str, ...] = ()) -> dict:
    """``raw`` (a parsed ``params.yaml``) with ``changes`` applied: mappings merge key by key,
    except those in :data:`REPLACED`; anything else is replaced."""
    out = copy.deepcopy(raw)
    for key, value in changes.items():
        here = (*path, key)
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and here not in REPLACED):
            out[key] = merged(out[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


SETTINGS["multi-molecule-dft"] = merged(SETTINGS["multi-molecule"], {
    "labeler": {"method": "pyscf"},  # params.yaml's pyscf block: PBE/def2-SVP
    # DFT Hessians of the transfer molecules cost ~30 min on two cores (12.1 s per isopropyl
    # alcohol, 8.1 s per butadiene single point, 1 thread); `palirs spectrum` predicts them later
    "molecules": {"transfer": []},
    # one acquisition iteration: the DFT sample stage alone (optimisations and Hessians)
    # took 24 min here; docs/molecules.md ("With DFT labels") gives the measured run
    "active_learning": {"iterations": {"iter1": "iter0"}},
    "reference_md": {"enabled": False},  # ~10^5 DFT single points: experiment only
})


def apply(params_path: Path, name: str) -> str:
    """The text of ``params_path`` with the setting ``name`` applied (validated as a whole
    run: a setting that does not make a valid run is an error before anything starts)."""
    from palirs_data.config import Params, check_run

    if name not in SETTINGS:
        raise PalirsInputError(f"unknown setting '{name}' (one of: {', '.join(SETTINGS)})")
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8")) or {}
    text = ("# " + Path(params_path).name + f" with the setting '{name}' applied "
            "(palirs_data/settings.py)\n"
            + yaml.safe_dump(merged(raw, SETTINGS[name]), sort_keys=False))
    check_run(Params.model_validate(yaml.safe_load(text)), where=f"setting '{name}'")
    return text
