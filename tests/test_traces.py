"""Exports of a run: the Perfetto / Chrome trace-event timeline checked against the format
(keys, per-track non-overlap, durations summing to the run's latency, one track per engine)
and against a timeline worked out by hand; per-layer JSON / CSV / Parquet round trips; the
``mcusim run --trace`` flag."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

import mcusim
from mcusim.cli import main
from mcusim.errors import InputError
from mcusim.traces.export import (
    TRANSFER_TRACK,
    layers_frame,
    load_result,
    trace_events,
    write_layers,
    write_trace,
)
from mcusim.traces.records import LayerRecord, RunResult

from conftest import model_path

REQUIRED = ("ph", "ts", "pid", "tid", "name")


def rec(i, engine, cycles, clock_hz, **kw) -> LayerRecord:
    base = dict(
        index=i,
        name=f"layer{i}",
        op="conv2d",
        engine=engine,
        precision="W8A8",
        kernel="k",
        macs=1000 * (i + 1),
        instructions=0,
        compute_cycles=cycles - kw.pop("stall", 0),
        stall_cycles=0,
        cycles=cycles,
        latency_s=cycles / clock_hz,
        energy_j=1e-6,
        core_energy_j=1e-6,
        memory_energy_j=0.0,
        traffic={"sram": {"read": 100, "write": 50}},
        clock_hz=clock_hz,
    )
    base["stall_cycles"] = cycles - base["compute_cycles"]
    base.update(kw)
    base["latency_s"] += base.get("transfer_cycles", 0) / 100e6  # copies: CPU clock
    return LayerRecord(**base)


def hetero_result() -> RunResult:
    """CPU at 100 MHz, NPU at 50 MHz; copies as mcusim/runner.py notes them."""
    layers = [
        rec(0, "cpu:cortex-m4", 1000, 100e6, stall=100),
        rec(
            1,
            "npu:tile",
            500,
            50e6,
            transfer_bytes=64,
            transfer_cycles=200,
            notes=["tile note", "cpu->npu a: 64 B, 200 cycles"],
        ),
        # a graph output left in NPU memory is copied back after its producer
        rec(
            2,
            "npu:tile",
            100,
            50e6,
            transfer_bytes=16,
            transfer_cycles=50,
            notes=["npu->cpu y: 16 B, 50 cycles"],
        ),
        rec(
            3,
            "cpu:cortex-m4",
            300,
            100e6,
            transfer_bytes=32,
            transfer_cycles=80,
            notes=["npu->cpu b: 32 B, 80 cycles"],
        ),
    ]
    return RunResult("m", "dev", 100e6, layers, outputs=[], peak_ram_bytes=10, flash_bytes=20)


def check_trace_format(trace: dict, result: RunResult) -> dict[str, list[dict]]:
    """Trace-event format rules; returns the X slices per track name."""
    assert isinstance(trace["traceEvents"], list)
    json.dumps(trace)  # serialisable as is
    names: dict[int, str] = {}
    for e in trace["traceEvents"]:
        for k in REQUIRED:
            assert k in e, (k, e)
        assert e["ph"] in ("X", "M")
        if e["ph"] == "M" and e["name"] == "thread_name":
            names[e["tid"]] = e["args"]["name"]
    per: dict[str, list[dict]] = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] != "X":
            continue
        assert "dur" in e and e["dur"] >= 0
        assert isinstance(e["args"], dict)
        per[names[e["tid"]]].append(e)
    for track, xs in per.items():
        xs.sort(key=lambda e: e["ts"])
        for a, b in zip(xs, xs[1:], strict=False):
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-9, (track, a["name"], b["name"])
    # one track per engine (+ transfers, + cluster cores), each named once
    engines = {r.engine for r in result.layers}
    assert len(set(names.values())) == len(names)
    assert engines <= set(names.values())
    extra = set(names.values()) - engines
    assert all(n == TRANSFER_TRACK or n.startswith("cluster core ") for n in extra)
    # engine + transfer slices tile the inference: they sum to the run's latency
    main = [e for t, xs in per.items() if not t.startswith("cluster core ") for e in xs]
    assert sum(e["dur"] for e in main) == pytest.approx(result.latency_s * 1e6, rel=1e-12)
    assert len([e for e in main if e.get("cat") == "layer"]) == len(result.layers)
    return per


def test_hand_worked_timeline():
    r = hetero_result()
    per = check_trace_format(trace_events(r), r)
    spans = sorted(
        ((e["ts"], e["ts"] + e["dur"], e["name"]) for xs in per.values() for e in xs),
        key=lambda s: s[0],
    )
    # 1000 CPU cycles @100 MHz = 10 µs; 200 copy cycles = 2 µs; 500 NPU cycles @50 MHz = 10 µs
    want = [
        (0.0, 10.0, "0 conv2d"),
        (10.0, 12.0, "cpu->npu a"),
        (12.0, 22.0, "1 conv2d"),
        (22.0, 24.0, "2 conv2d"),
        (24.0, 24.5, "npu->cpu y"),  # graph output copied after its producer
        (24.5, 25.3, "npu->cpu b"),  # input of layer 3 copied before it
        (25.3, 28.3, "3 conv2d"),
    ]
    assert len(spans) == len(want)
    for got, exp in zip(spans, want, strict=True):
        assert got[0] == pytest.approx(exp[0]) and got[1] == pytest.approx(exp[1])
        assert got[2] == exp[2]
    assert r.latency_s * 1e6 == pytest.approx(28.3)
    assert set(per) == {"cpu:cortex-m4", "npu:tile", TRANSFER_TRACK}
    x1 = next(e for e in per["npu:tile"] if e["args"]["index"] == 1)
    assert x1["args"]["cycles"] == 500 and x1["args"]["clock_mhz"] == 50
    assert x1["args"]["transfer_bytes"] == 64
    xa = next(e for e in per[TRANSFER_TRACK] if e["name"] == "cpu->npu a")
    assert xa["args"] == {"layer": 1, "tensor": "a", "bytes": 64, "cpu_cycles": 200}


def test_transfers_without_notes_become_one_slice_before_the_layer():
    r = hetero_result()
    r.layers[1].notes = []  # e.g. a result written by an older version
    per = check_trace_format(trace_events(r), r)
    xs = [e for e in per[TRANSFER_TRACK] if e["args"]["layer"] == 1]
    assert [(e["name"], e["ts"], e["dur"]) for e in xs] == [("transfer", 10.0, 2.0)]


def test_cpu_only_result_has_one_track():
    r = hetero_result()
    r.layers = [rec(i, "cpu:cortex-m4", 100 * (i + 1), 100e6) for i in range(3)]
    per = check_trace_format(trace_events(r), r)
    assert list(per) == ["cpu:cortex-m4"]
    assert [e["dur"] for e in per["cpu:cortex-m4"]] == pytest.approx([1.0, 2.0, 3.0])


@pytest.mark.parametrize("device", ["stm32l4r5", "max78000", "gap8", "corstone300-u55-128"])
def test_real_runs(device):
    r = mcusim.run(model_path("kws_ref_model"), device)
    per = check_trace_format(trace_events(r), r)
    engines = list(dict.fromkeys(x.engine for x in r.layers))
    assert [t for t in per if t in engines] == engines
    if any(x.transfer_cycles for x in r.layers):
        xfer = per[TRANSFER_TRACK]
        assert sum(e["args"]["cpu_cycles"] for e in xfer) == sum(
            x.transfer_cycles for x in r.layers
        )
        assert sum(e["args"]["bytes"] for e in xfer) == sum(x.transfer_bytes for x in r.layers)
    cores = max(x.cores for x in r.layers)
    if cores > 1:  # cluster: one track per worker core, a slice per layer split onto it
        for k in range(cores):
            got = [e["args"]["index"] for e in per[f"cluster core {k}"]]
            assert got == [x.index for x in r.layers if x.cores > k]
        assert [e["args"]["index"] for e in per["cluster core 0"]] == list(range(len(r.layers)))
    else:
        assert not any(t.startswith("cluster core") for t in per)


def test_run_trace_flag(tmp_path, capsys):
    path = model_path("kws_ref_model")
    out = tmp_path / "t.json"
    res = tmp_path / "r.json"
    assert (
        main(["run", str(path), "--device", "max78000", "--trace", str(out), "--json", str(res)])
        == 0
    )
    trace = json.loads(out.read_text())
    r = load_result(res)
    per = check_trace_format(trace, r)
    assert set(per) == {"cpu:cortex-m4", "npu:max78000-cnn", TRANSFER_TRACK}
    assert trace["otherData"]["latency_us"] == pytest.approx(r.latency_s * 1e6)


def test_write_trace_roundtrip(tmp_path):
    r = hetero_result()
    p = write_trace(r, tmp_path / "x.json")
    assert json.loads(p.read_text()) == json.loads(json.dumps(trace_events(r)))


# ---------------------------------------------------------------------------------------
# per-layer exports


def _assert_same_layers(a: RunResult, b: RunResult):
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        assert x == y
    assert (a.model, a.device, a.clock_hz) == (b.model, b.device, b.clock_hz)
    assert a.latency_s == b.latency_s and a.energy_j == b.energy_j
    assert (a.peak_ram_bytes, a.flash_bytes) == (b.peak_ram_bytes, b.flash_bytes)


def test_json_roundtrip(tmp_path):
    r = hetero_result()
    p = write_layers(r, tmp_path / "r.json")
    _assert_same_layers(r, load_result(p))


def test_json_roundtrip_real_run(tmp_path):
    r = mcusim.run(model_path("kws_ref_model"), "max78000")
    _assert_same_layers(r, load_result(write_layers(r, tmp_path / "r.json")))


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_tables(tmp_path, ext):
    r = mcusim.run(model_path("kws_ref_model"), "max78000")
    p = write_layers(r, tmp_path / f"layers{ext}")
    back = pd.read_csv(p) if ext == ".csv" else pd.read_parquet(p)
    want = layers_frame(r)
    assert list(back.columns) == list(want.columns)
    assert len(back) == len(r.layers)
    assert (back["model"] == r.model).all() and (back["device"] == r.device).all()
    assert back["cycles"].tolist() == [x.cycles for x in r.layers]
    assert back["engine"].tolist() == [x.engine for x in r.layers]
    np.testing.assert_allclose(back["energy_j"], [x.energy_j for x in r.layers], rtol=1e-12)
    # traffic expanded per memory: cnn_weights reads of the NPU layers, 0/NaN elsewhere
    w = back["cnn_weights_read_bytes"].fillna(0).astype(int).tolist()
    assert w == [x.traffic.get("cnn_weights", {}).get("read", 0) for x in r.layers]


def test_bad_inputs(tmp_path):
    r = hetero_result()
    with pytest.raises(InputError, match="xlsx"):
        write_layers(r, tmp_path / "r.xlsx")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "m"}')
    with pytest.raises(InputError, match="not a mcusim run result"):
        load_result(bad)
    bad.write_text("[1, 2")
    with pytest.raises(InputError, match="cannot read"):
        load_result(bad)
