"""Ethos-U55 peer comparison: mcusim's EthosU55Tile against Vela (ethos-u-vela 5.2, Regor core)
on every shared .tflite, for U55-128 and U55-256 in Vela's High_End_Embedded / Shared_Sram system.

    python bench/bench_vela.py [--layers]

Prints, per model and MAC configuration, Vela's total cycles, ours, the ratio and the worst
per-layer ratio (with --layers: every layer). Needs `pip install ethos-u-vela` and
../shared/models. Vela runs in a temporary directory (~0.1 s per model).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
SYSTEM = "Ethos_U55_High_End_Embedded"
MEMORY_MODE = "Shared_Sram"
DEVICES = {128: "corstone300-u55-128", 256: "corstone300-u55-256"}


@dataclass
class VelaResult:
    total: int  # summary CSV cycles_total
    rows: list[dict]  # per-layer CSV rows
    debug: dict[str, list[dict]] = field(default_factory=dict)  # debug database tables


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _debug_tables(path: Path) -> dict[str, list[dict]]:
    """Vela's --enable-debug-db XML: <table name=...> elements holding CSV text."""
    tables = {}
    for t in ET.parse(path).getroot().iter("table"):
        tables[t.attrib["name"]] = list(csv.DictReader(io.StringIO((t.text or "").strip())))
    return tables


@cache
def run_vela(model: Path, macs: int) -> VelaResult:
    """Compile ``model`` with Vela for ethos-u55-``macs``; read its summary, per-layer and
    debug-database outputs. Vela's console output is silenced."""
    import ethosu
    from ethosu.vela.vela import main as vela_main

    ini = Path(next(iter(ethosu.__path__))) / "config_files" / "Arm" / "vela.ini"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = [str(model), "--accelerator-config", f"ethos-u55-{macs}", "--config", str(ini)]
        args += ["--system-config", SYSTEM, "--memory-mode", MEMORY_MODE]
        args += ["--verbose-performance", "--enable-debug-db", "--output-dir", str(out)]
        cwd = os.getcwd()
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1), os.dup(2)
        try:
            os.chdir(out)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            rc = vela_main(args)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, devnull):
                os.close(fd)
            os.chdir(cwd)
        if rc not in (0, None):
            raise RuntimeError(f"vela failed on {model.name} (exit {rc})")
        summary = _read_csv(next(out.glob("*summary*.csv")))[0]
        rows = _read_csv(next(out.glob("*per-layer.csv")))
        debug = _debug_tables(next(out.glob("*_debug.xml")))
    return VelaResult(int(float(summary["cycles_total"])), rows, debug)


def vela_cycles_per_op(graph, rows: list[dict]) -> dict[str, int]:
    """Vela's per-layer rows mapped onto mcusim ops by tensor name: a row's Name is the
    output tensor of its NPU command; a softmax's 28 commands are named after the softmax's
    input tensor (``<input>_softmax_<k>``) except the last (the softmax output); fused
    activation rows (0 cycles) are skipped."""
    by_out = {o: op.name for op in graph.ops for o in op.outputs}
    soft = {op.inputs[0]: op.name for op in graph.ops if op.kind == "softmax"}
    per: dict[str, int] = {}
    for r in rows:
        name, cyc = r["Name"].strip(), int(r["Op Cycles"])
        if r["NNG Operator"] in ("Relu", "Relu6", "ReluN1To1", "LUT") and cyc == 0:
            continue
        op = by_out.get(name)
        if op is None and "_softmax_" in name:
            op = soft.get(name.rsplit("_softmax_", 1)[0])
        if op is None:
            raise KeyError(f"Vela row {name!r} matches no mcusim op")
        per[op] = per.get(op, 0) + cyc
    return per


def vela_block_configs(graph, vela: VelaResult) -> dict[str, tuple]:
    """(OFM block H, W, C, traversal) Vela chose per mcusim op (single-command ops)."""
    by_out = {o: op for op in graph.ops for o in op.outputs}
    perf = {r["id"]: r for r in vela.debug["perf"]}
    out = {}
    for d in vela.debug["perf_debug_main"]:
        p = perf.get(d["id"])
        op = by_out.get(p["name"]) if p else None
        if op is None or op.kind == "softmax" or not d["ofm_block_h"]:
            continue
        blk = (int(d["ofm_block_h"]), int(d["ofm_block_w"]), int(d["ofm_block_c"]))
        out[op.name] = (*blk, d["traversal"])
    return out


def tile_for(macs: int):
    from mcusim.devices.loader import load_device
    from mcusim.devices.npu import npu_tile

    return npu_tile(load_device(DEVICES[macs]))


def compare(model: Path, macs: int) -> tuple[int, int, list[tuple[str, int, int]]]:
    """(Vela total cycles, mcusim total cycles, [(op, Vela cycles, mcusim cycles)])."""
    from mcusim.importers.tflite import load_tflite

    graph = load_tflite(model)
    tile = tile_for(macs)
    ops = [op for op in graph.ops if tile.supports(graph, op).ok]
    plan = tile.plan(graph, ops)
    ours = {op.name: tile.layer_cost(graph, op, plan).cycles for op in ops}
    vela = run_vela(model, macs)
    per = vela_cycles_per_op(graph, vela.rows)
    layers = [(name, per[name], ours[name]) for name in per]
    return vela.total, sum(ours.values()), layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", action="store_true", help="print every layer")
    args = ap.parse_args()
    print(f"{'model':28} {'cfg':>4} {'vela':>9} {'mcusim':>9} {'ratio':>6} {'worst layer':>11}")
    for model in sorted(MODELS.glob("*.tflite")):
        for macs in (128, 256):
            v, o, layers = compare(model, macs)
            ratios = [ours / ref for _, ref, ours in layers if ref > 0]
            worst = max(ratios, key=lambda r: abs(r - 1), default=1.0)
            print(f"{model.stem:28} {macs:4} {v:9} {o:9} {o / v:6.3f} {worst:11.3f}")
            if args.layers:
                for name, ref, ours in layers:
                    print(f"    {name[-60:]:60} {ref:8} {ours:8} {ours / max(ref, 1):6.3f}")


if __name__ == "__main__":
    main()
