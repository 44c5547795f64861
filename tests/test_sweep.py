"""Sweeps (mcusim/sweep.py, docs/sweeps.md) and run(mode="estimate"): estimate equals full
on every record field (but the data-dependent softmax and FC), failing points are recorded,
resume skips done points, Parquet / CSV round-trip, and every executor returns the serial
DataFrames."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import numpy as np
import pandas as pd
import pytest

import mcusim
from mcusim.cli import main
from mcusim.devices.loader import load_device
from mcusim.errors import UserError
from mcusim.quantize import requantize
from mcusim.sweep import LAYER_COLUMNS, POINT_COLUMNS, calibration_samples, read_results

from conftest import SHARED_MODELS, model_path

sweep_mod = importlib.import_module("mcusim.sweep")  # the module (mcusim.sweep: the function)
RUN_POINT = sweep_mod._run_point

# a CPU-only Cortex-M4 with caches, an M7 with L1 caches simulated, and two NPU devices
# (MAX78000: TFLite layers moved to its arithmetic; Ethos-U55 in a Corstone-300)
ESTIMATE_DEVICES = ["stm32l4r5", "stm32h743", "max78000", "corstone300-u55-128"]
SMALL = ["ad01_int8", "micro_speech_quantized"]


def _records(res):
    return [dataclasses.asdict(r) for r in res.layers]


def _assert_estimate_matches(est, full, tag, device) -> None:
    """Layers whose schedule depends on the values (softmax on Armv7E-M and Helium CPUs,
    FC on Armv7E-M: mcusim.kernels.schedules.data_kinds) are timed on the run's data
    (mcusim.observed), the estimate on their schedules' expectations: the records agree
    up to the first such layer, and those layers' records in everything but cycles,
    traffic and energy."""
    from mcusim.kernels.schedules import data_kinds

    er, fr = _records(est), _records(full)
    kinds = data_kinds(load_device(device).core.isa)
    data = [i for i, r in enumerate(fr) if r["engine"].startswith("cpu:") and r["op"] in kinds]
    first = min(data, default=len(fr))
    assert er[:first] == fr[:first], tag
    for i in data:
        same = ("kernel", "engine", "macs", "output_shape")
        assert [er[i][k] for k in same] == [fr[i][k] for k in same], (tag, i)
    if not data:
        assert er == fr, tag
        assert est.totals() == full.totals()


# -- run(mode="estimate") --------------------------------------------------------------------
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_estimate_equals_full_on_every_record_field(name):
    path = model_path(name)
    for dev in ESTIMATE_DEVICES:
        # separate Model objects: the estimate computes its costs itself, not from a cache
        # the full run filled
        est = mcusim.run(mcusim.load(path), dev, mode="estimate")
        full = mcusim.run(mcusim.load(path), dev)
        _assert_estimate_matches(est, full, (name, dev), dev)
        assert (est.peak_ram_bytes, est.flash_bytes) == (full.peak_ram_bytes, full.flash_bytes)
        assert est.total_cycles > 0 and full.total_cycles > 0
        assert est.outputs == []
        assert full.outputs and all(o.size for o in full.outputs)
        assert est.npu.get("kind") == full.npu.get("kind")
        assert any("estimate mode" in n for n in est.notes)
        if full.requant_report:  # MAX78000: the deviation report needs outputs
            assert est.requant_report is None
            assert any("re-quantization deviation report" in n for n in est.notes)


def test_estimate_mode_with_placement_and_precision_equals_full():
    path = model_path("kws_ref_model")
    kw = dict(place={"0": "cpu"}, precision={"1": "W4A8"})
    est = mcusim.run(mcusim.load(path), "max78000", mode="estimate", **kw)
    full = mcusim.run(mcusim.load(path), "max78000", **kw)
    _assert_estimate_matches(est, full, "kws on max78000", "max78000")
    assert est.layers[0].engine.startswith("cpu") and est.layers[1].precision == "W4A8"


def test_estimate_mode_errors():
    path = model_path("hello_world_int8")
    with pytest.raises(UserError, match="mode='fast'"):
        mcusim.run(path, mode="fast")
    with pytest.raises(UserError, match="keep_tensors needs mode='full'"):
        mcusim.run(path, mode="estimate", keep_tensors=True)
    with pytest.raises(UserError):  # given inputs are still checked
        mcusim.run(path, mode="estimate", inputs=[np.zeros((3, 3), np.int8)])


# -- sweeps ----------------------------------------------------------------------------------
def _small_models():
    return [str(model_path(n)) for n in SMALL]


def _drop_wall(df):
    return df.drop(columns=["wall_s"])


def test_small_sweep_full_equals_estimate_and_direct_runs():
    models = _small_models()
    kw = dict(precisions=[None, "W4A8"], executor="serial", progress=False)
    full_p, full_l = mcusim.sweep(models, ["stm32l4r5", "max78000"], **kw)
    est_p, est_l = mcusim.sweep(models, ["stm32l4r5", "max78000"], mode="estimate", **kw)
    assert list(full_p.columns) == list(POINT_COLUMNS) and list(full_l.columns) == list(
        LAYER_COLUMNS
    )
    assert len(full_p) == 8 and (full_p["status"] == "ok").all()
    assert list(full_p["model"][:4]) == ["ad01_int8"] * 4
    assert list(full_p["precision"][:2]) == ["source", "W4A8"]
    assert set(est_p["mode"]) == {"estimate"} and set(full_p["mode"]) == {"full"}
    # equal but for the CPU layers whose schedule uses the data (both devices' CPU is a
    # Cortex-M4: softmax and FC, timed on the run's data in full mode, mcusim.observed),
    # and so the totals (every point has one)
    from mcusim.kernels.schedules import data_kinds

    kinds = sorted(data_kinds(load_device("stm32l4r5").core.isa))

    def data_rows(df):
        return df.op.isin(kinds) & df.engine.str.startswith("cpu:")

    data = data_rows(full_l)
    assert data.any() and (~data).any()
    assert data_rows(est_l).equals(data)
    pd.testing.assert_frame_equal(
        full_l[~data].drop(columns="mode"), est_l[~data].drop(columns="mode")
    )
    keep = ["model", "device", "precision", "status", "layers", "peak_ram_bytes", "flash_bytes"]
    pd.testing.assert_frame_equal(full_p[keep], est_p[keep])

    # each row is what mcusim.run gives for that point (precision via requantize's default
    # with the documented seeded calibration samples)
    for row in full_p.itertuples(index=False):
        m = mcusim.load(models[SMALL.index(row.model)])
        if row.precision == "W4A8":
            res = requantize(m, {}, calibration_samples(m.graph, 0), default="W4A8")
            m = mcusim.Model(res.graph)
        r = mcusim.run(m, row.device)
        assert row.cycles == r.total_cycles and row.layers == len(r.layers)
        assert row.energy_j == r.energy_j and row.latency_s == r.latency_s
        assert (row.peak_ram_bytes, row.flash_bytes) == (r.peak_ram_bytes, r.flash_bytes)
        assert row.npu_layers == sum(not x.engine.startswith("cpu") for x in r.layers)
        sub = full_l[(full_l.model == row.model) & (full_l.device == row.device)]
        sub = sub[sub.precision == row.precision]
        assert list(sub["cycles"]) == [x.cycles for x in r.layers]
        assert list(sub["layer_precision"]) == [x.precision for x in r.layers]
        assert [json.loads(t) for t in sub["traffic"]] == [x.traffic for x in r.layers]
    w4 = full_l[full_l.precision == "W4A8"]
    assert (w4[w4.op == "fully_connected"]["layer_precision"].str.startswith("W4")).all()


def _tiny_device():
    """stm32l4r5 with a 64-byte arena: no shared model's activations fit."""
    dev = load_device("stm32l4r5")
    mems = tuple(dataclasses.replace(m, size=64) if "arena" in m.holds else m for m in dev.memories)
    return dataclasses.replace(dev, name="tiny-l4", memories=mems)


def test_broken_points_are_recorded_and_the_rest_complete():
    models = _small_models()
    devices = {"l4": "stm32l4r5", "tiny": _tiny_device()}
    pts, lay = mcusim.sweep(
        models,
        devices,
        placements=[None, {"force": "npu"}, {"placement": {"arena": "no_such_ram"}}],
        executor="serial",
        mode="estimate",
        progress=False,
    )
    assert len(pts) == 2 * 2 * 3
    ok = pts[pts.status == "ok"]
    bad = pts[pts.status == "error"]
    # only the l4 default points can run
    assert set(zip(ok.device, ok.placement, strict=True)) == {("l4", "default")}
    assert len(ok) == 2 and len(bad) == 10
    npu = bad[bad.placement == '{"force":"npu"}']
    assert (npu.error_type == "PlacementError").all()
    assert npu.error.str.contains("the device has no NPU").all()
    fit = bad[(bad.device == "tiny") & (bad.placement == "default")]
    assert (fit.error_type == "FitError").all() and fit.error.str.contains("does not fit").all()
    assert not bad.error.str.contains("\n").any() and (bad.error != "").all()
    assert bad["cycles"].isna().all() and bad["energy_j"].isna().all()
    assert set(lay.device) == {"l4"} and set(lay.placement) == {"default"}
    assert len(lay) == int(ok["layers"].sum())


def test_bad_arguments_are_user_errors(tmp_path):
    m = _small_models()[:1]
    with pytest.raises(UserError, match="executor"):
        mcusim.sweep(m, ["stm32l4r5"], executor="mpi")
    with pytest.raises(UserError, match="resume=True needs out"):
        mcusim.sweep(m, ["stm32l4r5"], resume=True)
    with pytest.raises(UserError, match="unknown key"):
        mcusim.sweep(m, ["stm32l4r5"], placements=[{"forse": "cpu"}])
    with pytest.raises(UserError, match="precision"):
        mcusim.sweep(m, ["stm32l4r5"], precisions=["W9A8"])
    with pytest.raises(UserError, match="share the label"):
        mcusim.sweep(m + m, ["stm32l4r5"])
    with pytest.raises(UserError, match="file not found"):
        mcusim.sweep([tmp_path / "none.tflite"], ["stm32l4r5"])


class _Interrupted(BaseException):
    """Stands for Ctrl-C / a killed job in the middle of a sweep."""


class _Counter:
    """Wraps sweep._run_point: counts the points run, optionally stops after ``stop``."""

    def __init__(self, stop: int | None = None):
        self.keys: list[tuple] = []
        self.stop = stop
        self.inner = RUN_POINT

    def __call__(self, ctx, key):
        if self.stop is not None and len(self.keys) == self.stop:
            raise _Interrupted  # the sweep is interrupted here
        self.keys.append(key)
        return self.inner(ctx, key)


@pytest.mark.parametrize("out_name", ["res", "res.csv", "res.parquet"])
def test_resume_skips_points_already_written(tmp_path, monkeypatch, out_name):
    out = tmp_path / out_name
    models = _small_models()
    kw = dict(executor="serial", mode="estimate", progress=False, out=out)
    grid = dict(devices=["stm32l4r5", "stm32h743"], precisions=[None, "W4A8"])

    # an interrupted sweep keeps the points that finished
    c = _Counter(stop=3)
    monkeypatch.setattr(sweep_mod, "_run_point", c)
    with pytest.raises(_Interrupted):
        mcusim.sweep(models, **grid, **kw)
    assert len(read_results(out)[0]) == 3

    c = _Counter()
    monkeypatch.setattr(sweep_mod, "_run_point", c)
    pts, lay = mcusim.sweep(models, **grid, resume=True, **kw)
    assert len(c.keys) == 8 - 3 and len(pts) == 8

    # a grown grid: only the new points run; the result holds old and new, in grid order
    c = _Counter()
    monkeypatch.setattr(sweep_mod, "_run_point", c)
    grid2 = dict(devices=["stm32l4r5", "stm32h743", "max78000"], precisions=[None, "W4A8"])
    pts2, lay2 = mcusim.sweep(models, **grid2, resume=True, **kw)
    assert len(c.keys) == 4 and {k[1] for k in c.keys} == {"max78000"}
    monkeypatch.setattr(sweep_mod, "_run_point", c.inner)
    fresh_p, fresh_l = mcusim.sweep(models, **grid2, executor="serial", mode="estimate",
                                    progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(_drop_wall(pts2), _drop_wall(fresh_p))
    pd.testing.assert_frame_equal(lay2, fresh_l)

    # everything done: nothing runs; without resume the files are replaced
    c = _Counter()
    monkeypatch.setattr(sweep_mod, "_run_point", c)
    mcusim.sweep(models, **grid2, resume=True, **kw)
    assert c.keys == []
    mcusim.sweep(models[:1], devices=["stm32l4r5"], **kw)
    assert len(c.keys) == 1 and len(read_results(out)[0]) == 1


@pytest.mark.parametrize("out_name", ["out_dir", "sweep.csv", "sweep.parquet"])
def test_outputs_round_trip(tmp_path, out_name):
    out = tmp_path / out_name
    pts, lay = mcusim.sweep(
        _small_models(),
        ["stm32l4r5", "max78000"],
        placements=[None, {"force": "npu"}],
        executor="serial",
        mode="estimate",
        out=out,
        progress=False,
    )
    assert (pts.status == "error").any() and (pts.status == "ok").any()
    p2, l2 = read_results(out)
    pd.testing.assert_frame_equal(p2, pts)
    pd.testing.assert_frame_equal(l2, lay)
    pp, lp, fmt = sweep_mod.output_paths(out)
    assert pp.exists() and lp.exists()
    # plain pandas reads the files as well
    raw = pd.read_csv(pp) if fmt == "csv" else pd.read_parquet(pp)
    assert list(raw.columns) == list(POINT_COLUMNS) and len(raw) == len(pts)
    assert list(raw["cycles"].dropna().astype(int)) == list(pts["cycles"].dropna())


def test_traffic_columns_expand_the_json():
    pts, lay = mcusim.sweep(
        _small_models()[:1], ["stm32l4r5"], executor="serial", mode="estimate", progress=False
    )
    wide = sweep_mod.traffic_columns(lay)
    mem_cols = [c for c in wide.columns if c.endswith("_read_bytes") and c != "read_bytes"]
    assert mem_cols
    assert (wide[mem_cols].sum(axis=1).to_numpy() == lay["read_bytes"].to_numpy()).all()
    assert pts["read_bytes"][0] == lay["read_bytes"].sum()


GRID = dict(
    devices=["stm32l4r5", "max78000"],
    precisions=[None, "W4A8"],
    placements=[None, {"force": "cpu"}, {"force": "npu"}],
    mode="estimate",
    progress=False,
)


@pytest.fixture(scope="module")
def serial_result():
    models = [str(model_path(n)) for n in SMALL]
    return models, mcusim.sweep(models, executor="serial", **GRID)


def test_process_and_thread_executors_equal_serial(serial_result, monkeypatch):
    models, (sp, sl) = serial_result
    assert (sp.status == "error").any()
    for ex in ("process", "thread"):
        # no models loaded in this process: the workers load and cost them themselves
        monkeypatch.setattr(sweep_mod, "_MODELS", {})
        p, lay = mcusim.sweep(models, executor=ex, n_jobs=2, **GRID)
        pd.testing.assert_frame_equal(_drop_wall(p), _drop_wall(sp))
        pd.testing.assert_frame_equal(lay, sl)


def test_dask_executor_on_a_local_cluster_equals_serial(serial_result):
    distributed = pytest.importorskip("distributed")
    import logging

    models, (sp, sl) = serial_result
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster),
    ):
        p, lay = mcusim.sweep(models, executor="dask", **GRID)
    pd.testing.assert_frame_equal(_drop_wall(p), _drop_wall(sp))
    pd.testing.assert_frame_equal(lay, sl)


def test_cli_sweep_prints_a_summary_and_writes_files(tmp_path, capsys):
    models = _small_models()
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(
        f"models = {json.dumps(models)}\n"
        'devices = ["stm32l4r5", "max78000"]\n'
        'precisions = ["source", "W4A8"]\n'
        'placements = ["default", { force = "npu" }]\n'
        'executor = "serial"\n'
        'mode = "estimate"\n'
        'out = "results"\n'
    )
    assert main(["sweep", str(cfg), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "sweep: 16 points (estimate mode)" in text
    assert "the device has no NPU" in text
    pts, lay = read_results(tmp_path / "results")
    n_err = int((pts.status == "error").sum())
    assert len(pts) == 16 and f"{16 - n_err} ok, {n_err} errors" in text
    first = pts.iloc[0]
    assert f"{first.cycles:,}" in text
    assert len(lay) == int(pts["layers"].sum())

    # a typo in the file is one clear line
    cfg.write_text('models = ["a.tflite"]\ndevices = ["stm32l4r5"]\nexecuter = "serial"\n')
    assert main(["sweep", str(cfg)]) == 2
    assert "unknown key(s) executer" in capsys.readouterr().err


def test_seed_changes_calibration_but_not_int8_costs():
    m = _small_models()[:1]
    kw = dict(precisions=[None, "W2A2"], executor="serial", mode="estimate", progress=False)
    p0, _ = mcusim.sweep(m, ["stm32l4r5"], seed=0, **kw)
    p1, _ = mcusim.sweep(m, ["stm32l4r5"], seed=1, **kw)
    assert p0["cycles"][0] == p1["cycles"][0]  # source model: costs do not depend on data
    assert list(p1["seed"]) == [1, 1] and math.isfinite(p1["energy_j"][1])


def test_docs_list_the_exact_columns():
    """docs/sweeps.md is the contract plots and scripts code against: keep it true."""
    import re

    from conftest import REPO

    text = (REPO / "docs" / "sweeps.md").read_text()
    m = re.search(r"Exact order: `([^`]*)`", text)
    assert m is not None
    assert [c.strip() for c in m.group(1).replace("\n", " ").split(",")] == list(LAYER_COLUMNS)
    sec = text[text.index("## Columns of `points`") : text.index("## Columns of `layers`")]
    cols = []
    for line in sec.splitlines():
        if line.startswith("| `"):
            cols += re.findall(r"`([a-z_]+)`", line.split("|")[1])
    assert cols == list(POINT_COLUMNS)
