"""Every plot kind rendered to PNG and SVG and checked: file written, PNG exactly the
requested size and not blank, SVG holding one bar per layer and series / one point per
layer; roofs derived as docs/plots.md says (inner-loop rate by differencing, NPU MAC arrays,
memory widths / wait states) and every real layer under them; the Pareto front by hand; the
``mcusim plot`` subcommand."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mcusim
from mcusim.cli import main
from mcusim.errors import InputError
from mcusim.traces import plots
from mcusim.traces.plots import (
    layer_cycle_parts,
    layer_intensity,
    pareto_front,
    plot_compare,
    plot_energy,
    plot_layers,
    plot_pareto,
    plot_roofline,
    plot_traffic,
)
from mcusim.traces.roofline import cpu_peak, device_roofs

from conftest import model_path

SIZE = (900, 500)
SVG = "{http://www.w3.org/2000/svg}"

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def runs():
    p = model_path("kws_ref_model")
    return {d: mcusim.run(p, d) for d in ("stm32l4r5", "max78000", "gap8", "corstone300-u55-128")}


def check_png(path, size=SIZE):
    assert path.stat().st_size > 0
    with PIL.open(path) as im:
        assert im.size == size
        a = np.asarray(im.convert("L"), float)
    assert a.std() > 15, "blank image"
    assert (a < 200).mean() > 0.02, "almost nothing drawn"


def svg_ids(path) -> list[str]:
    return re.findall(r'id="([^"]+)"', path.read_text())


def svg_points(path, prefix: str) -> int:
    """Markers drawn inside the groups whose id starts with ``prefix``."""
    root = ET.parse(path).getroot()
    n = 0
    for g in root.iter(f"{SVG}g"):
        if g.get("id", "").startswith(prefix):
            n += sum(1 for _ in g.iter(f"{SVG}use"))
    return n


def count(ids, prefix) -> int:
    return sum(1 for i in ids if i.startswith(prefix))


# ---------------------------------------------------------------------------------------
# one run


@pytest.mark.parametrize("ext", [".png", ".svg"])
@pytest.mark.parametrize("device", ["stm32l4r5", "max78000", "gap8", "corstone300-u55-128"])
def test_layers_plot(runs, device, ext, tmp_path):
    r = runs[device]
    p = tmp_path / f"l{ext}"
    plot_layers(r, p, size=SIZE)
    n = len(r.layers)
    if ext == ".png":
        check_png(p)
        return
    ids = svg_ids(p)
    parts = layer_cycle_parts(r)
    assert count(ids, "bar:compute:") == n  # one compute bar per layer, on its engine colour
    for name, vals in parts.items():
        gid = "bar:" + name.split()[0].lower() + ":"
        if name != "compute":
            assert count(ids, gid) == (n if vals.any() else 0), name
    # stacked parts sum to each layer's latency in CPU clock cycles
    tot = sum(parts.values())
    np.testing.assert_allclose(tot, [x.latency_s * r.clock_hz for x in r.layers], rtol=1e-9)


@pytest.mark.parametrize("ext", [".png", ".svg"])
@pytest.mark.parametrize("device", ["stm32l4r5", "max78000", "corstone300-u55-128"])
def test_traffic_plot(runs, device, ext, tmp_path):
    r = runs[device]
    p = tmp_path / f"t{ext}"
    plot_traffic(r, p, size=SIZE)
    if ext == ".png":
        check_png(p)
        return
    ids = svg_ids(p)
    series = {
        (m, k)
        for x in r.layers
        for m, rw in x.traffic.items()
        for k, v in rw.items()
        if k in ("read", "write") and v
    }
    assert series
    for m, k in series:
        assert count(ids, f"bar:{m}.{k}:") == len(r.layers)
    assert count(ids, "bar:") == len(series) * len(r.layers)


@pytest.mark.parametrize("ext", [".png", ".svg"])
@pytest.mark.parametrize("device", ["stm32l4r5", "max78000"])
def test_energy_plot(runs, device, ext, tmp_path):
    r = runs[device]
    p = tmp_path / f"e{ext}"
    plot_energy(r, p, size=SIZE)
    if ext == ".png":
        check_png(p)
        return
    ids = svg_ids(p)
    parts = plots.energy_parts(r)
    used = [k for k, v in parts.items() if v.any()]
    assert used == (["core", "memory", "NPU"] if device == "max78000" else ["core", "memory"])
    for k in used:
        assert count(ids, f"bar:{k.lower()}:") == len(r.layers)
        assert f"total:{k.lower()}" in ids
    # the parts are the records' energy
    np.testing.assert_allclose(sum(parts.values()), [x.energy_j * 1e6 for x in r.layers], rtol=1e-9)


@pytest.mark.parametrize("ext", [".png", ".svg"])
@pytest.mark.parametrize("device", ["stm32l4r5", "max78000", "gap8", "corstone300-u55-128"])
def test_roofline_plot(runs, device, ext, tmp_path):
    r = runs[device]
    p = tmp_path / f"r{ext}"
    plot_roofline(r, p, size=SIZE)
    if ext == ".png":
        check_png(p)
        return
    for eng in {x.engine for x in r.layers}:
        want = sum(1 for x in r.layers if x.engine == eng and x.macs and x.cycles)
        assert svg_points(p, f"points:{eng}:") == want, eng
    ids = svg_ids(p)
    roofs = device_roofs(mcusim.load_device(device))
    used = {m for x in r.layers for m in x.traffic}
    for eng in {x.engine for x in r.layers}:
        for m in roofs[eng].memories:
            if m.name in used:
                assert f"roof:{m.name}" in ids


# ---------------------------------------------------------------------------------------
# roofs


def test_cpu_roof_is_the_inner_loop_rate():
    """Differencing removes everything but the inner loop: a second pair of probe sizes
    (reductions 128 -> 256 instead of 64 -> 128) gives the same MAC/cycle."""
    from mcusim.runner import time_op
    from mcusim.stats import op_macs
    from mcusim.traces.roofline import _probe_graphs

    dev = mcusim.load_device("stm32l4r5")
    peak, which = cpu_peak(dev)
    assert which == "1x1 conv2d"
    (_, (g0, _), (g1, op1)) = _probe_graphs()[0]
    # a conv with twice the reduction again: 8x8x256 -> 32
    import copy

    g2 = copy.deepcopy(g1)
    x, w = g2.tensors["x"], g2.tensors["w"]
    x.shape = (1, 8, 8, 256)
    w.shape = (32, 1, 1, 256)
    w.data = np.ones(w.shape, np.int8)
    op2 = g2.ops[0]
    c1 = time_op(dev, g1, op1).compute_cycles
    c2 = time_op(dev, g2, op2).compute_cycles
    rate = (op_macs(g2, op2) - op_macs(g1, op1)) / (c2 - c1)
    assert rate == pytest.approx(peak, rel=1e-9)
    # an SMLAD does 2 MACs per cycle at best on the M4: the loop around it costs loads
    assert 0.25 < peak < 2.0
    # whole layers, overheads included, never beat their inner loop
    assert op_macs(g1, op1) / c1 < peak


def test_npu_and_memory_roofs_from_device_files():
    u55 = device_roofs(mcusim.load_device("corstone300-u55-128"))
    assert u55["npu:ethos-u55"].macs_per_cycle == 128
    assert {m.name: m.bytes_per_cycle for m in u55["npu:ethos-u55"].memories} == {
        "sram": 8.0,
        "flash": 1.0,
    }
    mx = device_roofs(mcusim.load_device("max78000"))
    assert mx["npu:max78000-cnn"].macs_per_cycle == 64 * 9  # 64 processors x 3x3 kernel
    assert {m.name: m.bytes_per_cycle for m in mx["npu:max78000-cnn"].memories} == {
        "cnn_weights": 64 * 9,
        "cnn_data": 16 * 4,
    }
    l4 = device_roofs(mcusim.load_device("stm32l4r5"))["cpu:cortex-m4"]
    dev = mcusim.load_device("stm32l4r5")
    for m in dev.memories:
        got = next(x for x in l4.memories if x.name == m.name).bytes_per_cycle
        assert got == m.width_bits / 8 / (1 + m.wait_states)
    gap9 = device_roofs(mcusim.load_device("gap9"))
    assert gap9["npu:generic"].macs_per_cycle == 162  # NE16 int8 rate
    gap8 = device_roofs(mcusim.load_device("gap8"))["cpu:ri5cy"]
    assert {m.name: m.bytes_per_cycle for m in gap8.memories} == {"l1": 64.0, "l2": 8.0}
    # the probes' 32 output channels split evenly over GAP8's 8 cores: 8 x one core's loop
    from mcusim.runner import time_op
    from mcusim.stats import op_macs
    from mcusim.traces.roofline import _probe_graphs

    dev = mcusim.load_device("gap8")
    _, (g0, o0), (g1, o1) = _probe_graphs()[0]
    one = (op_macs(g1, o1) - op_macs(g0, o0)) / (
        time_op(dev, g1, o1).compute_cycles - time_op(dev, g0, o0).compute_cycles
    )
    assert gap8.macs_per_cycle == pytest.approx(dev.cluster.cores * one, rel=1e-12)


@pytest.mark.parametrize("model", ["kws_ref_model", "vww_96_int8", "ad01_int8"])
def test_every_layer_under_its_roofs(model):
    p = model_path(model)
    for device in ("stm32l4r5", "stm32h743", "max78000", "gap8", "corstone300-u55-128"):
        r = mcusim.run(p, device)
        roofs = device_roofs(mcusim.load_device(device))
        for x in r.layers:
            if not (x.macs and x.cycles):
                continue
            ai, perf = layer_intensity(x)
            roof = roofs[x.engine]
            bw = sum(m.bytes_per_cycle for m in roof.memories if m.name in x.traffic)
            assert perf <= roof.macs_per_cycle * (1 + 1e-9), (device, x.index)
            assert perf <= bw * ai * (1 + 1e-9), (device, x.index)


def test_roofline_unknown_device(runs, tmp_path):
    r = runs["stm32l4r5"]
    r2 = type(r)(**{**r.__dict__, "device": "no-such-board"})
    with pytest.raises(InputError, match="--device"):
        plot_roofline(r2, tmp_path / "x.png")
    plot_roofline(r2, tmp_path / "x.png", device="stm32l4r5")


# ---------------------------------------------------------------------------------------
# sweeps


def test_pareto_front_by_hand():
    x = [1, 2, 3, 4, 2, 5, 1]
    y = [5, 3, 4, 1, 3, 0.5, 6]
    # (1,5) (2,3) (4,1) (5,0.5) are not beaten; (2,3) twice: the first one only
    assert pareto_front(x, y).tolist() == [True, True, False, True, False, True, False]


def sweep_points() -> pd.DataFrame:
    """A points table with the docs/sweeps.md columns (two models, 3 devices, 2 precisions,
    one failed point)."""
    rows = []
    rng = np.random.default_rng(0)
    for m in ("kws", "vww"):
        for d in ("stm32l4r5", "stm32h743", "max78000"):
            for p in ("source", "W4A8"):
                rows.append(
                    dict(
                        model=m,
                        device=d,
                        precision=p,
                        placement="default",
                        mode="estimate",
                        status="ok",
                        error="",
                        latency_s=float(rng.uniform(1e-3, 1e-1)),
                        energy_j=float(rng.uniform(1e-5, 1e-3)),
                    )
                )
    rows.append(
        dict(
            model="vww",
            device="rp2040",
            precision="W4A8",
            placement="default",
            mode="estimate",
            status="error",
            error="does not fit",
            latency_s=np.nan,
            energy_j=np.nan,
        )
    )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ext", [".png", ".svg"])
def test_pareto_plot(ext, tmp_path):
    pts = sweep_points()
    p = tmp_path / f"p{ext}"
    plot_pareto(pts, p, size=SIZE)
    if ext == ".png":
        check_png(p)
        return
    ok = pts[pts.status == "ok"]
    assert svg_points(p, "pareto:points:") == len(ok)  # the failed point is not drawn
    for m in ("kws", "vww"):
        sub = ok[ok.model == m]
        front = pareto_front(sub.latency_s, sub.energy_j)
        assert svg_points(p, f"pareto:ring:{m}") == int(front.sum())
        assert f"pareto:front:{m}" in svg_ids(p)


@pytest.mark.parametrize("ext", [".png", ".svg"])
def test_compare_plot(ext, tmp_path):
    pts = sweep_points()
    p = tmp_path / f"c{ext}"
    plot_compare(pts, p, by="precision", size=SIZE)
    if ext == ".png":
        check_png(p)
        return
    ids = svg_ids(p)
    for col in ("latency_s", "energy_j"):
        for prec in ("source", "W4A8"):
            assert count(ids, f"bar:{col}:{prec}:") == 6  # 2 models x 3 devices


def test_no_successful_points():
    pts = sweep_points()
    pts["status"] = "error"
    with pytest.raises(InputError, match="no successful"):
        plot_pareto(pts)


# ---------------------------------------------------------------------------------------
# CLI


def test_cli_plot_run(tmp_path, capsys):
    res = tmp_path / "r.json"
    assert (
        main(["run", str(model_path("kws_ref_model")), "--device", "max78000", "--json", str(res)])
        == 0
    )
    assert (
        main(
            ["plot", str(res), "-o", str(tmp_path / "one.png"), "--width", "640", "--height", "360"]
        )
        == 0
    )
    check_png(tmp_path / "one.png", (640, 360))
    assert main(["plot", str(res), "--kind", "all", "-o", str(tmp_path / "a.svg")]) == 0
    for k in ("layers", "traffic", "energy", "roofline"):
        assert (tmp_path / f"a_{k}.svg").stat().st_size > 0
    out = capsys.readouterr().out
    assert "a_roofline.svg" in out


def test_cli_plot_sweep_dir(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    sweep_points().to_parquet(d / "points.parquet")
    assert main(["plot", str(d), "-o", str(tmp_path / "p.png")]) == 0  # pareto by default
    check_png(tmp_path / "p.png", plots.DEFAULT_SIZE)
    assert main(["plot", str(d), "--kind", "compare", "-o", str(tmp_path / "c.png")]) == 0
    check_png(tmp_path / "c.png", plots.DEFAULT_SIZE)
    csv = tmp_path / "run.csv"
    sweep_points().to_csv(csv, index=False)
    assert main(["plot", str(csv), "--kind", "pareto", "-o", str(tmp_path / "q.svg")]) == 0


def test_cli_plot_errors(tmp_path, capsys):
    d = tmp_path / "results"
    d.mkdir()
    sweep_points().to_parquet(d / "points.parquet")
    assert main(["plot", str(d), "-o", str(tmp_path / "p.pdf")]) == 2
    assert main(["plot", str(d), "--kind", "roofline", "-o", str(tmp_path / "p.png")]) == 2
    assert main(["plot", str(tmp_path / "missing.json"), "-o", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "'.pdf'" in err and "pareto, compare" in err and "missing.json" in err


def test_example_sweep_pareto(tmp_path, models_dir):
    """examples/sweep_pareto.py: shared models x 5 devices x 2 precisions on 2 workers,
    well under the 2 minutes the issue allows; writes the Pareto and comparison plots."""
    script = Path(__file__).resolve().parents[1] / "examples" / "sweep_pareto.py"
    plot = tmp_path / "pareto.png"
    cp = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "res"), "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cp.returncode == 0, cp.stderr
    m = re.search(r"(\d+) points .* (\d+) ok, (\d+) failed.*wall ([\d.]+) s", cp.stdout)
    assert m, cp.stdout
    n_models = len(list(models_dir.glob("*.tflite")))
    assert int(m[1]) == n_models * 5 * 2
    assert int(m[2]) + int(m[3]) == int(m[1]) and int(m[2]) > 0
    assert float(m[4]) < 120
    check_png(plot, (1200, 800))
    check_png(tmp_path / "compare.png", (1200, 700))
    pts = plots.load_points(tmp_path / "res")
    assert len(pts) == int(m[1])
