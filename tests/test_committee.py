"""The MACE committee: trained by mace-torch, evaluated in batches, disagreeing off its data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palirs_data import structures
from palirs_data.committee import Committee
from palirs_data.training import split_indices


def test_split_is_80_20_fixed_by_its_seed_and_stable_as_the_table_grows():
    ids = [f"s{k:03d}" for k in range(150)]
    iterations = [0] * 120 + [1] * 15 + [2] * 15
    train, valid = split_indices(ids[:120], iterations[:120], 0.2, seed=0)
    assert len(train) == 96 and len(valid) == 24
    assert not set(train) & set(valid)
    again, _ = split_indices(ids[:120], iterations[:120], 0.2, seed=0)
    other, _ = split_indices(ids[:120], iterations[:120], 0.2, seed=1)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    # two more iterations of 15: each split 12:3, and no earlier row changes sides
    grown_train, grown_valid = split_indices(ids, iterations, 0.2, seed=0)
    assert len(grown_train) == 96 + 24 and len(grown_valid) == 24 + 6
    np.testing.assert_array_equal(grown_train[:96], train)
    np.testing.assert_array_equal(grown_valid[:24], valid)
    # the split follows the structures, not their order in the table
    order = np.random.default_rng(3).permutation(150)
    shuffled_train, _ = split_indices([ids[i] for i in order], [iterations[i] for i in order],
                                      0.2, seed=0)
    assert sorted(ids[i] for i in order[shuffled_train]) == sorted(ids[i] for i in grown_train)


def test_three_members_trained_and_different(tiny_committee):
    report = tiny_committee["report"]
    assert [m.seed for m in report.members] == [0, 1, 2]
    assert (report.n_train, report.n_valid) == (96, 24)
    assert all(m.epochs >= 1 and np.isfinite(m.valid_rmse_f_meV_A) for m in report.members)
    committee = tiny_committee["committee"]
    w = [torch.cat([p.flatten() for p in m.parameters()]) for m in committee.models]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])


def _batch(committee: Committee, rows):
    batch = committee.batch([s.numbers for s in rows])
    pos = torch.as_tensor(np.concatenate([s.positions_A for s in rows]), dtype=torch.float64)
    return batch, pos


def test_batched_evaluation_equals_mace_calculator(tiny_committee, methanol_data):
    from mace.calculators import MACECalculator

    committee = tiny_committee["committee"]
    rows = structures.from_table(methanol_data["labelled"])[:7]
    batch, pos = _batch(committee, rows)
    out = committee.evaluate(batch, pos)
    calc = MACECalculator(model_paths=[str(p) for p in tiny_committee["paths"]], device="cpu",
                          default_dtype="float64")
    for k, s in enumerate(rows):
        atoms = s.to_atoms()
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(out.energy_eV[k]), abs=1e-9)
        np.testing.assert_allclose(atoms.get_forces(),
                                   out.forces_eVA[batch.ptr[k]:batch.ptr[k + 1]], atol=1e-9)


def test_model_forces_are_minus_energy_gradient(tiny_committee, methanol_data):
    committee = tiny_committee["committee"]
    s = structures.from_table(methanol_data["labelled"])[5]
    batch, pos = _batch(committee, [s])
    forces = committee.evaluate(batch, pos).forces_eVA
    h = 1e-4
    for atom, axis in [(0, 0), (1, 2), (4, 1), (5, 0)]:
        e = []
        for sign in (1, -1):
            p = pos.clone()
            p[atom, axis] += sign * h
            e.append(float(committee.evaluate(batch, p).energy_eV[0]))
        assert float(forces[atom, axis]) == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_invariance_under_rotation_and_translation(tiny_committee, methanol_data):
    committee = tiny_committee["committee"]
    s = structures.from_table(methanol_data["labelled"])[11]
    R = torch.as_tensor(_rotation(0.7, [1.0, 2.0, -0.5]))
    batch, pos = _batch(committee, [s])
    a = committee.evaluate(batch, pos)
    b = committee.evaluate(batch, pos @ R.T + torch.tensor([4.0, -1.0, 2.5]))
    assert float(b.energy_eV[0]) == pytest.approx(float(a.energy_eV[0]), abs=1e-9)
    torch.testing.assert_close(b.forces_eVA, a.forces_eVA @ R.T, atol=1e-9, rtol=0)
    assert float(b.force_std_max_eVA[0]) == pytest.approx(float(a.force_std_max_eVA[0]), abs=1e-9)


def _rotation(angle: float, axis) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis) / np.linalg.norm(axis)
    return Rotation.from_rotvec(angle * axis).as_matrix()


def test_batch_of_many_equals_one_by_one(tiny_committee, methanol_data):
    committee = tiny_committee["committee"]
    rows = structures.from_table(methanol_data["labelled"])[:20:3]
    batch, pos = _batch(committee, rows)
    together = committee.evaluate(batch, pos)
    for k, s in enumerate(rows):
        alone = committee.evaluate(*_batch(committee, [s]))
        assert float(alone.energy_eV[0]) == pytest.approx(float(together.energy_eV[k]), abs=1e-9)
        assert float(alone.force_rel_dev[0]) == pytest.approx(float(together.force_rel_dev[k]),
                                                              abs=1e-9)


def test_committee_disagrees_more_away_from_its_data(tiny_committee, methanol_data):
    """Spread on training structures vs on methanol stretched well beyond the samples."""
    committee = tiny_committee["committee"]
    rows = structures.from_table(methanol_data["labelled"])
    on_data = committee.evaluate(*_batch(committee, rows)).force_std_max_eVA
    eq = structures.from_table(methanol_data["result"].equilibrium)[0]
    rng = np.random.default_rng(0)
    far = []
    for _ in range(20):
        s = structures.Structure(molecule="methanol", numbers=eq.numbers, source="user",
                                 positions_A=eq.positions_A * 1.25
                                 + rng.normal(scale=0.15, size=eq.positions_A.shape))
        far.append(s)
    off_data = committee.evaluate(*_batch(committee, far)).force_std_max_eVA
    assert float(off_data.median()) > 2 * float(on_data.median())


def test_training_report_metrics_and_curves(tiny_committee):
    report = tiny_committee["report"]
    metrics = report.metrics()
    assert set(metrics["valid_rmse_f_meV_A"]) == {"model_0", "model_1", "model_2"}
    assert metrics["committee_training_seconds"] > 0
    lines = report.curves_csv().splitlines()
    assert lines[0] == "member,epoch,loss,rmse_e_meV_per_atom,rmse_f_meV_A"
    assert len(lines) == 1 + sum(m.epochs for m in report.members)


def _max_weight_change(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest change of a trained weight (the interaction, product and readout blocks, by
    name) between two models, relative to that weight's scale."""
    theirs = dict(b.named_parameters())
    changes = [float((p - theirs[name]).abs().max()) / (float(p.abs().max()) or 1.0)
               for name, p in a.named_parameters()
               if name.startswith(("interactions", "products", "readouts"))]
    assert len(changes) > 10
    return max(changes)


def test_continue_starts_from_the_previous_members(tiny_committee, methanol_data, tmp_path):
    """retrain: continue trains each member from the previous iteration's weights (a step
    this small leaves them nearly unchanged); retrain: scratch starts from a new
    initialisation, far from them."""
    from conftest import TINY_MODEL

    from palirs_data.committee import load_model
    from palirs_data.training import train_committee
    from palirs_data.config import CommitteeConfig

    previous = tiny_committee["paths"][0].parent
    results = {}
    for mode in ("continue", "scratch"):
        config = CommitteeConfig(seeds=[0, 1], model=TINY_MODEL, retrain=mode,
                                 continue_epochs=1,
                                 training={"max_num_epochs": 1, "lr": 1e-7, "ema": False})
        report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                                 config=config, out_dir=tmp_path / mode / "models",
                                 work_dir=tmp_path / mode / "work", previous=previous)
        assert [m.epochs for m in report.members] == [1, 1]
        results[mode] = [_max_weight_change(load_model(previous / f"model_{k}.model"),
                                            load_model(m.model))
                         for k, m in enumerate(report.members)]
    assert max(results["continue"]) < 1e-3, results
    assert min(results["scratch"]) > 0.1, results
    # a foundation model given as a local file: every member starts from its weights
    config = CommitteeConfig(seeds=[0], model=TINY_MODEL, training={
        "max_num_epochs": 1, "lr": 1e-7, "ema": False,
        "foundation_model": str(previous / "model_0.model")})
    report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                             config=config, out_dir=tmp_path / "file" / "models",
                             work_dir=tmp_path / "file" / "work")
    assert _max_weight_change(load_model(previous / "model_0.model"),
                              load_model(report.members[0].model)) < 1e-3


def test_a_stage_two_gives_its_own_model(methanol_data, tmp_path):
    """``stage_two_fraction``: mace-torch's stage two over the last epochs (360 epochs, a
    fifth: from epoch 288, the forces weighted as before); it saves the stage-one and the
    stage-two model, and the member is the stage-two one, the model of the last epochs."""
    from conftest import TINY_MODEL

    from palirs_data.committee import load_model
    from palirs_data.config import CommitteeConfig, MaceModelConfig, MaceTrainingConfig
    from palirs_data.training import mace_train_args, train_committee

    def flags(**training) -> list[str]:
        return mace_train_args(name="m", train_file=tmp_path / "t", valid_file=tmp_path / "v",
                               e0s=methanol_data["e0s"], elements=["H", "C", "N", "O"],
                               model=MaceModelConfig(),
                               training=MaceTrainingConfig(**training), seed=0,
                               work_dir=tmp_path)

    args = flags(max_num_epochs=360, stage_two_fraction=0.2, forces_weight=50.0)
    assert args[args.index("--start_swa") + 1] == "288"
    assert args[args.index("--swa_forces_weight") + 1] == "50.0"
    assert args[args.index("--swa_energy_weight") + 1] == "1000.0"
    assert "--swa" not in flags(max_num_epochs=360)
    config = CommitteeConfig(seeds=[0], model=TINY_MODEL, training={
        "max_num_epochs": 3, "stage_two_fraction": 0.5})
    report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                             config=config, out_dir=tmp_path / "models",
                             work_dir=tmp_path / "work")
    # its validation errors are those of stage two's epochs (from epoch 1 on), whose loss
    # weighs the energy 1000 times: not the lowest loss of the whole run (stage one's)
    curve = report.members[0].curve
    stage_two = [r for r in curve if r["epoch"] >= 1]
    best = min(stage_two, key=lambda r: r["loss"])
    assert best["loss"] > min(r["loss"] for r in curve)
    assert report.members[0].valid_rmse_f_meV_A == pytest.approx(1e3 * best["rmse_f"])
    member = load_model(report.members[0].model)
    two = load_model(tmp_path / "work" / "m0" / "model_0_stagetwo.model")
    one = load_model(tmp_path / "work" / "m0" / "model_0.model")
    assert _max_weight_change(member, two) == 0
    assert _max_weight_change(member, one) > 0


def test_checkpoint_last_keeps_the_last_epoch(methanol_data, tmp_path):
    """``checkpoint: last``: the member is the last epoch's (EMA) model even where an earlier
    epoch had the lowest validation loss (mace-torch's ``best`` choice), its validation
    errors are the last epoch's, and only the newest checkpoint stays on disk."""
    from conftest import TINY_MODEL

    from palirs_data.committee import load_model
    from palirs_data.config import CommitteeConfig
    from palirs_data.training import train_committee

    def member(checkpoint: str, lr: float, eval_every: int = 1):
        config = CommitteeConfig(seeds=[0], model=TINY_MODEL, training={
            "max_num_epochs": 6, "lr": lr, "ema": False, "checkpoint": checkpoint,
            "eval_every": eval_every})
        work = tmp_path / f"{checkpoint}{eval_every}-{lr}"
        report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                                 config=config, out_dir=work / "models", work_dir=work)
        return report.members[0], work / "m0" / "checkpoints"

    # the case this setting is for: an earlier epoch had the lowest validation loss. Without
    # EMA at these learning rates the loss of 6 epochs goes up at least once, but where it does
    # depends on the CPU's arithmetic (at 0.05 one AVX-512 Xeon's loss falls at the last epoch
    # to its lowest, another's does not): the first rate whose last epoch is not its lowest
    for lr in (0.05, 0.2, 0.1, 0.02):
        last, kept = member("last", lr)
        curve = last.curve
        lowest = min(curve, key=lambda r: r["loss"])
        if lowest["epoch"] < curve[-1]["epoch"]:
            break
    assert lowest["epoch"] < curve[-1]["epoch"], "no learning rate gave the case under test"
    best, _ = member("best", lr)
    assert [r["epoch"] for r in curve] == [r["epoch"] for r in best.curve]
    assert last.valid_rmse_f_meV_A == pytest.approx(1e3 * curve[-1]["rmse_f"])
    assert best.valid_rmse_f_meV_A == pytest.approx(1e3 * lowest["rmse_f"])
    newest = f"model_0_run-0_epoch-{curve[-1]['epoch']}.pt"
    assert [f.name for f in kept.glob("*.pt")] == [newest]
    assert _max_weight_change(load_model(last.model), load_model(best.model)) > 0
    # validated after epochs 0 and 5 only: the same last model, its errors, 6 epochs
    sparse, kept = member("last", lr, eval_every=5)
    assert [r["epoch"] for r in sparse.curve] == [0, 5] and sparse.epochs == last.epochs == 6
    assert sparse.valid_rmse_f_meV_A == last.valid_rmse_f_meV_A
    assert _max_weight_change(load_model(last.model), load_model(sparse.model)) == 0
    assert [f.name for f in kept.glob("*.pt")] == [newest]


def test_max_ell_reaches_the_trained_model(methanol_data, tmp_path):
    """``model.max_ell`` is the highest l of the edges' spherical harmonics in the model that
    mace-torch trains (not only a flag it accepts)."""
    from conftest import TINY_MODEL

    from palirs_data.committee import load_model
    from palirs_data.config import CommitteeConfig
    from palirs_data.training import train_committee

    config = CommitteeConfig(seeds=[0], model={**TINY_MODEL, "max_ell": 1},
                             training={"max_num_epochs": 1})
    report = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                             config=config, out_dir=tmp_path / "models",
                             work_dir=tmp_path / "work")
    model = load_model(report.members[0].model)
    assert model.spherical_harmonics.irreps_out.lmax == 1
    assert CommitteeConfig().model.max_ell == 3  # mace-torch's default and the method's


def test_the_run_extends_to_the_next_validated_epoch(tmp_path):
    """mace-torch validates, and checkpoints, after epochs 0, k, 2k ... only: a run of 360
    epochs validated every 5th is extended to 361, so that its last epoch is the one kept."""
    from palirs_data.config import MaceModelConfig, MaceTrainingConfig
    from palirs_data.training import mace_train_args

    args = mace_train_args(name="m", train_file=tmp_path / "t", valid_file=tmp_path / "v",
                           e0s={1: -1.0, 6: -2.0, 7: -3.0, 8: -4.0},
                           elements=["H", "C", "N", "O"], model=MaceModelConfig(),
                           training=MaceTrainingConfig(max_num_epochs=360, eval_every=5),
                           seed=0, work_dir=tmp_path)
    assert args[args.index("--max_num_epochs") + 1] == "361"
    assert args[args.index("--eval_interval") + 1] == "5"
    assert args[args.index("--max_ell") + 1] == "3"  # mace-torch's default, named

    epochs = {(360, 1): 360, (360, 5): 361, (361, 5): 361, (356, 5): 356, (3, 2): 3, (4, 2): 5,
              (1, 10): 1, (2, 10): 11}
    for (n, k), expected in epochs.items():
        assert MaceTrainingConfig(max_num_epochs=n, eval_every=k).mace_epochs == expected


def test_more_members_than_cpu_workers_train_side_by_side(methanol_data, tiny_committee,
                                                          tmp_path):
    """Three members on two one-thread CPU workers: each worker takes its share at once
    (2 + 1 processes), the reports come back in seed order from both workers, and the models
    are those trained one after the other in this process (the ``tiny_committee`` fixture's
    settings), weight for weight and byte for byte: a model file depends on its data, settings
    and seed, not on the directory it was trained in (it does depend on where torch is
    installed: TorchScript debug records in the file name torch's own source files)."""
    from conftest import TINY_COMMITTEE

    from palirs_data.committee import load_model
    from palirs_data.compute import Executor, dask_client
    from palirs_data.config import ComputeConfig
    from palirs_data.training import train_committee

    compute = ComputeConfig(n_workers=2)
    with dask_client(compute) as client:
        side = train_committee(methanol_data["labelled"], e0s=methanol_data["e0s"],
                               config=TINY_COMMITTEE, out_dir=tmp_path / "side" / "models",
                               work_dir=tmp_path / "side" / "work",
                               executor=Executor(client, compute))
    alone = tiny_committee["report"]
    assert [m.seed for m in side.members] == [0, 1, 2]
    assert len({m.worker for m in side.members}) == 2
    for a, b in zip(side.members, alone.members):
        theirs = dict(load_model(b.model).named_parameters())
        for name, p in load_model(a.model).named_parameters():
            assert torch.equal(p, theirs[name]), (a.seed, name)
        assert a.model.read_bytes() == b.model.read_bytes(), a.seed
    # the seeds differ: the three models are not one model three times
    assert _max_weight_change(load_model(side.members[0].model),
                              load_model(side.members[1].model)) > 0.1


def test_a_foundation_model_by_name_is_fetched_once_or_refused_in_one_line(tmp_path,
                                                                           monkeypatch):
    """A name mace-torch knows (medium_off) resolves to its file in mace-torch's cache; when
    it is not cached and cannot be fetched (offline), one line names the key, the address and
    where to put the file. A name nobody knows, or a missing file, is refused too."""
    import urllib.error
    import urllib.request

    from palirs_data.errors import PalirsInputError
    from palirs_data.foundation import foundation_file, foundation_url

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    key = "committee.training.foundation_model"
    url = foundation_url("medium_off")
    assert url.endswith("MACE-OFF23_medium.model")
    with pytest.raises(PalirsInputError) as info:
        foundation_file("medium_off", key=key)
    message = str(info.value)
    assert message.startswith(f"{key}: 'medium_off' is not in ") and "\n" not in message
    assert url in message and "no route to host" in message
    assert not list((tmp_path / "cache").rglob("*.part"))  # nothing half-written left
    cached = tmp_path / "cache" / "mace" / "MACE-OFF23_medium.model"
    cached.write_bytes(b"weights")  # fetched once before: no network needed
    assert foundation_file("medium_off", key=key) == cached
    with pytest.raises(PalirsInputError, match="neither a file nor a model"):
        foundation_file("huge_off", key=key)
    with pytest.raises(PalirsInputError, match="x.model: no such file"):
        foundation_file("data/user/models/x.model", key=key)


def test_loading_a_model_prints_no_import_notices(tiny_committee):
    """mace-torch's import notices (e3nn's weights_only warning, the cuequivariance print) came
    once per process in every stage's output; a fresh process loading a model is now quiet."""
    import subprocess
    import sys

    code = ("from palirs_data.committee import load_model; import sys; "
            "load_model(sys.argv[1]); print('loaded')")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_committee["paths"][0])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded"
    assert proc.stderr.strip() == ""
