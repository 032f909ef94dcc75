"""The cost guard: DFT single points projected beyond the bound stop a stage before it starts."""

from __future__ import annotations

import pytest

from palirs_data import cost, structures
from palirs_data.config import IrConfig, LabelConfig, LabelerConfig
from palirs_data.errors import PalirsInputError
from palirs_data.structures import Structure
from palirs_data.trajectory import TrajectoryStore


def _no_single_point(*args, **kwargs):
    raise AssertionError("a single point ran")


def test_rates_reproduce_the_measurements_they_were_fitted_to():
    # PBE/def2-SVP: 1.1 s water, 4.5-5.3 s methanol, 11-13 s ethanol (one core, this machine)
    for atoms, lo, hi in ((3, 0.9, 1.3), (6, 4.5, 5.3), (9, 10.5, 13.5)):
        assert lo <= cost.seconds_per_point("pyscf", atoms) <= hi
    assert cost.seconds_per_point("xtb", 6) == pytest.approx(0.002)
    assert cost.seconds_per_point("ase", 6) is None


def test_the_level_of_theory_is_named_as_a_chemist_names_it():
    assert LabelerConfig().level_of_theory == "GFN2-xTB"
    dft = LabelerConfig(method="pyscf")
    assert dft.level_of_theory == "PBE/def2-SVP"
    d3 = LabelerConfig(method="pyscf", pyscf={"basis": "def2-tzvp", "dispersion": "d3bj"})
    assert d3.level_of_theory == "PBE-D3(BJ)/def2-TZVP"
    orca = LabelerConfig(method="ase", ase={"calculator": "ase.calculators.orca.ORCA"})
    assert orca.level_of_theory == "ORCA"


def test_dft_reference_md_stops_before_any_single_point_and_names_the_key(water, tmp_path,
                                                                         monkeypatch):
    from palirs_data import reference_md

    monkeypatch.setattr(reference_md, "reference_task", _no_single_point)
    table = structures.to_table([Structure.from_atoms(water, molecule="water",
                                                      source="equilibrium")])
    dft = LabelerConfig(method="pyscf")
    with pytest.raises(PalirsInputError) as info:
        reference_md.reference_ir(table, IrConfig(), dft, TrajectoryStore(tmp_path / "s.zarr"))
    message = str(info.value)
    runs = IrConfig().trajectories * len(IrConfig().temperatures_K)
    assert "\n" not in message and message.startswith(f"reference MD, {runs} runs x ")
    assert "PBE/def2-SVP single points" in message
    assert f"raise {cost.KEY}" in message and "reference_md.enabled: false" in message
    # the projection: every step of every run is one single point of ~1 s (water)
    steps = IrConfig().thermalise_steps + IrConfig().produce_steps
    hours = float(message.split("projected ")[1].split(" core-hours")[0].replace(",", ""))
    assert runs * steps * 0.9 / 3600 < hours < runs * steps * 1.3 / 3600
    # xTB, the same runs: well inside the bound (the guard lets it through to the runs)
    with pytest.raises(AssertionError, match="a single point ran"):
        reference_md.reference_ir(table, IrConfig(), LabelerConfig(),
                                  TrajectoryStore(tmp_path / "t.zarr"))


def test_labelling_is_guarded_too_and_the_bound_can_be_raised(water, monkeypatch, tmp_path):
    from palirs_data import labeling

    monkeypatch.setattr(labeling, "_run_chunks", _no_single_point)
    rows = [Structure.from_atoms(water, molecule="water", source="normal_modes")]
    table = structures.to_table(rows)
    tight = LabelConfig(max_projected_hours=1e-6, checkpoint_dir=tmp_path)
    with pytest.raises(PalirsInputError, match="labelling 1 structures: 1 PBE/def2-SVP"):
        labeling.label_table(table, labeler_config=LabelerConfig(method="pyscf"),
                             config=tight)
    with pytest.raises(AssertionError, match="a single point ran"):
        labeling.label_table(table, labeler_config=LabelerConfig(method="pyscf"),
                             config=tight.model_copy(update={"max_projected_hours": None}))
