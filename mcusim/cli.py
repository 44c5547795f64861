"""Command line: ``mcusim run|info|devices|convert``.

User mistakes end with one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import InputError, UserError


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_bytes(n: int) -> str:
    return f"{n:,}" if n else "-"


def _hit_rate(stats: dict | None) -> str:
    if not stats or not (stats["hits"] + stats["misses"]):
        return "-"
    return f"{100.0 * stats['hits'] / (stats['hits'] + stats['misses']):.1f}"


def _short_name(name: str, width: int = 28) -> str:
    """A readable layer label: TFLite names join many scopes with ';', keep the first."""
    first = name.split(";")[0]
    parts = first.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 2 else first
    return short if len(short) <= width else "…" + short[-(width - 1) :]


def _console():
    from rich.console import Console

    probe = Console()
    # never squeeze columns into ellipses: wide enough for the table when piped or narrow
    return Console(highlight=False, width=max(probe.width, 320), soft_wrap=False)


def cmd_run(args: argparse.Namespace) -> int:
    import mcusim

    model = mcusim.load(args.model, checkpoint=args.checkpoint)
    inputs = None
    if args.input:
        inputs = []
        for f in args.input:
            try:
                inputs.append(np.load(f, allow_pickle=False))
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read input array: {e}", file=f) from None
    placement = {}
    for item in args.memory or []:
        role, sep, mem = item.partition("=")
        if not sep or not role or not mem:
            raise UserError(f"--memory {item!r}: expected ROLE=MEMORY, e.g. arena=dtcm")
        placement[role] = mem
    from .placement import parse_assignments

    place = parse_assignments(args.place, "--place", "conv_3=cpu")
    precision = parse_assignments(args.precision, "--precision", "conv_3=W4A8")
    force = "cpu" if args.force_cpu else "npu" if args.force_npu else None
    calibration = None
    if args.calibration:
        if not precision:
            raise UserError("--calibration is only used with --precision LAYER=WxAy")
        try:
            calibration = np.load(args.calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read calibration array: {e}", file=args.calibration) from None
    result = mcusim.run(
        model,
        device=args.device,
        inputs=inputs,
        seed=args.seed,
        placement=placement or None,
        place=place or None,
        force=force,
        precision=precision or None,
        calibration=calibration,
    )
    dev = mcusim.load_device(args.device)
    tot = result.traffic_totals()
    # memories this run touched, in device order (then the tile's); cache levels simulated
    mems = [m.name for m in dev.memories if m.name in tot]
    mems += [m for m in tot if m not in mems]
    levels = list(dict.fromkeys(k for r in result.layers for k in (r.cache or {})))
    hetero = any(r.clock_hz and r.clock_hz != result.clock_hz for r in result.layers)
    xfers = any(r.transfer_bytes for r in result.layers)
    reasons = any(r.placement_reason for r in result.layers)

    from rich.table import Table

    table = Table(title=f"{result.model} on {result.device} @ {result.clock_hz / 1e6:g} MHz")
    for col, justify in [
        ("#", "right"),
        ("layer", "left"),
        ("op", "left"),
        ("prec", "left"),
        ("engine", "left"),
        ("kernel", "left"),
        ("MACs", "right"),
        ("cycles (engine clk)" if hetero else "cycles", "right"),
        ("stall", "right"),
        ("time µs", "right"),
    ]:
        table.add_column(col, justify=justify, no_wrap=col != "layer")
    if xfers:  # copies between CPU memory and the tile's memory, in CPU cycles
        table.add_column("xfer B", justify="right")
        table.add_column("xfer cyc", justify="right")
    for m in mems:
        table.add_column(f"{m} R", justify="right")
        table.add_column(f"{m} W", justify="right")
    for lv in levels:
        table.add_column(f"{lv} hit%", justify="right")
    table.add_column("energy µJ", justify="right")
    # why CPU layers are not on the NPU: a footnote number per distinct reason
    why: dict[str, int] = {}
    for r in result.layers:
        if r.placement_reason and r.placement_reason not in why:
            why[r.placement_reason] = len(why) + 1
    if reasons:
        table.add_column("why CPU", justify="left")
    for r in result.layers:
        row = [
            str(r.index),
            _short_name(r.name),
            r.op,
            r.precision,
            r.engine,
            r.kernel.split(" -> ")[0],
            _fmt_int(r.macs),
            _fmt_int(r.cycles),
            _fmt_int(r.stall_cycles),
            f"{r.latency_s * 1e6:,.1f}",
        ]
        if xfers:
            row += [_fmt_bytes(r.transfer_bytes), _fmt_bytes(r.transfer_cycles)]
        for m in mems:
            rw = r.traffic.get(m, {})
            row += [_fmt_bytes(rw.get("read", 0)), _fmt_bytes(rw.get("write", 0))]
        row += [_hit_rate((r.cache or {}).get(lv)) for lv in levels]
        row.append(f"{r.energy_j * 1e6:,.2f}")
        if reasons:
            row.append(f"[{why[r.placement_reason]}]" if r.placement_reason else "")
        table.add_row(*row)
    row = [
        "",
        "total",
        "",
        "",
        "",
        "",
        _fmt_int(result.total_macs),
        _fmt_int(result.total_cycles) + (" (CPU clk)" if hetero else ""),
        _fmt_int(sum(r.stall_cycles for r in result.layers)),
        f"{result.latency_s * 1e6:,.1f}",
    ]
    if xfers:
        row += [
            _fmt_bytes(sum(r.transfer_bytes for r in result.layers)),
            _fmt_bytes(sum(r.transfer_cycles for r in result.layers)),
        ]
    for m in mems:
        row += [
            _fmt_bytes(tot.get(m, {}).get("read", 0)),
            _fmt_bytes(tot.get(m, {}).get("write", 0)),
        ]
    cache_tot = result.totals().get("cache") or {}
    row += [_hit_rate(cache_tot.get(lv)) for lv in levels]
    row.append(f"{result.energy_j * 1e6:,.2f}")
    if reasons:
        row.append("")
    table.add_row(*row, style="bold")
    con = _console()
    con.print(table)
    con.print(
        f"latency {result.latency_s * 1e3:.3f} ms · energy {result.energy_j * 1e6:.2f} µJ · "
        f"peak RAM {result.peak_ram_bytes:,} B · flash (constants) {result.flash_bytes:,} B"
    )
    for text, n in why.items():
        layers = [str(r.index) for r in result.layers if r.placement_reason == text]
        con.print(f"\\[{n}] on the CPU (layers {', '.join(layers)}): {text}")
    _print_placement(con, result)
    for note in result.notes:
        con.print(f"note: {note}")
    if args.json:
        result.to_json(args.json)
    if args.csv:
        result.to_csv(args.csv)
    if args.trace:
        from mcusim.traces.export import write_trace

        write_trace(result, args.trace)
    if args.save_outputs:
        out = Path(args.save_outputs)
        out.mkdir(parents=True, exist_ok=True)
        for i, y in enumerate(result.outputs):
            np.save(out / f"output_{i}.npy", y)
    return 0


def _print_placement(con, result) -> None:
    """Engines used, transfers, the tile's one-time costs and re-quantization reports."""
    from .quantize import format_sqnr

    eng = result.totals()["engines"]
    if result.npu or len(eng) > 1:
        parts = [
            f"{e}: {v['layers']} layers, {v['cycles']:,} cycles @ {v['clock_hz'] / 1e6:g} MHz "
            f"({v['latency_s'] * 1e3:.3f} ms)"
            for e, v in eng.items()
        ]
        con.print("engines: " + " · ".join(parts))
        xb = sum(r.transfer_bytes for r in result.layers)
        xc = sum(r.transfer_cycles for r in result.layers)
        con.print(
            f"transfers between CPU memory and the NPU: {xb:,} B, {xc:,} CPU cycles "
            "(in the layers' latency)"
        )
        one = (result.npu or {}).get("one_time") or {}
        if one:
            con.print("NPU one-time costs (not in the inference): " + _fmt_one_time(one))
    if result.requant_report:
        from rich.table import Table

        t = Table(
            title="NPU layers re-quantized to the tile's arithmetic: deviation of their int8 "
            "outputs from TFLite arithmetic (layer alone / as run)"
        )
        rows = result.requant_report
        cols = [(k, h) for k, h in _REQUANT_COLUMNS if k in rows[0]]
        t.add_column("#", justify="right")
        t.add_column("layer")
        for _k, h in cols:
            t.add_column(h, justify="right")
        for row in rows:
            t.add_row(
                str(row["index"]),
                _short_name(row["layer"]),
                *[_fmt_report(row[k]) for k, _h in cols],
            )
        con.print(t)
        for o in (result.npu or {}).get("requant_outputs", []):
            con.print(
                f"model output {o['output']}: max |diff| {o['max_abs_diff']}, "
                f"{o['pct_equal']:.1f} % equal, SQNR {format_sqnr(o['sqnr_db'])} dB "
                "vs TFLite arithmetic on every layer"
            )
    if result.precision_report:
        changed = [r for r in result.precision_report if r.get("requested")]
        if changed:
            con.print(
                "re-quantized layers (SQNR dB vs the source model): "
                + ", ".join(
                    f"{_short_name(r['layer'])} {r['precision']} {format_sqnr(r['sqnr_db'])}"
                    for r in changed
                )
            )


# tile re-quantization report: key -> column header (the JSON has every key)
_REQUANT_COLUMNS = [
    ("output_shift", "shift"),
    ("weights_saturated", "w sat"),
    ("bias_saturated", "b sat"),
    ("activation", "activation"),
    ("border_inexact", "border inexact"),
    ("max_abs_diff_layer", "max|Δ| layer"),
    ("pct_equal_layer", "% equal layer"),
    ("sqnr_db_layer", "SQNR dB layer"),
    ("max_abs_diff_in_run", "max|Δ| as run"),
    ("pct_equal_in_run", "% equal as run"),
    ("sqnr_db_in_run", "SQNR dB as run"),
]


def _fmt_one_time(one: dict) -> str:
    items = []
    for k, v in one.items():
        if isinstance(v, bool):
            items.append(k if v else f"not {k}")
        elif isinstance(v, int):
            items.append(f"{k} {v:,}")
        elif isinstance(v, float):
            items.append(f"{k} {v:.4g}")
        elif isinstance(v, (list, tuple)):
            items.append("; ".join(map(str, v)))
        else:
            items.append(f"{k} {v}")
    return ", ".join(items)


def _fmt_report(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        from .quantize import format_sqnr

        return format_sqnr(v) if v in (float("inf"), float("-inf")) else f"{v:.1f}"
    return str(v)


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    import mcusim
    from mcusim.stats import constant_bytes, graph_macs, op_macs, op_params

    model = mcusim.load(args.model)
    g = model.graph
    table = Table(title=f"{g.name}: {len(g.ops)} ops")
    for col in ("#", "name", "op", "inputs", "output", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("#", "params", "MACs") else "left")
    for i, op in enumerate(g.ops):
        ins = ", ".join(
            "x".join(map(str, g.tensors[n].shape))
            for n in op.inputs
            if n and not g.tensors[n].is_const
        )
        out = "x".join(map(str, g.tensors[op.outputs[0]].shape))
        table.add_row(
            str(i),
            op.name[-36:],
            op.kind,
            ins,
            out,
            _fmt_int(op_params(g, op)),
            _fmt_int(op_macs(g, op)),
        )
    con = _console()
    con.print(table)
    con.print(
        f"inputs: {[(n, g.tensors[n].shape, str(g.tensors[n].dtype)) for n in g.inputs]}\n"
        f"outputs: {[(n, g.tensors[n].shape, str(g.tensors[n].dtype)) for n in g.outputs]}\n"
        f"total MACs {graph_macs(g):,} · constants {constant_bytes(g):,} B"
    )
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from rich.table import Table

    import mcusim

    table = Table(title="bundled devices")
    for col in ("name", "core", "clock MHz", "memories", "description"):
        table.add_column(col)
    for name in mcusim.bundled_devices():
        d = mcusim.load_device(name)
        mems = ", ".join(f"{m.name} {m.size // 1024} KB" for m in d.memories)
        table.add_row(d.name, d.core.name, f"{d.core.clock_hz / 1e6:g}", mems, d.description)
    _console().print(table)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import mcusim
    from mcusim import qnn

    model = mcusim.load(args.model, checkpoint=getattr(args, "checkpoint", None))
    out = Path(args.output)
    qnn.save(model.graph, out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {len(model.graph.ops)} ops)")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.table import Table

    import mcusim
    from mcusim import qnn
    from mcusim.quantize import format_sqnr, requantize

    bits: dict[str, str] = {}
    for item in args.bits or []:
        layer, sep, spec = item.rpartition("=")
        if not sep or not layer or not spec:
            raise UserError(f"--bits {item!r}: expected LAYER=PRECISION, e.g. conv1=W4A4")
        bits[layer] = spec
    calibration = None
    if args.calibration:
        try:
            calibration = np.load(args.calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read calibration array: {e}", file=args.calibration) from None
    model = mcusim.load(args.model)
    res = requantize(model, bits, calibration, default=args.all)
    out = Path(args.output)
    qnn.save(res.graph, out)
    table = Table(title=f"{res.graph.name}: re-quantized ({len(res.graph.ops)} ops)")
    for col in ("#", "layer", "op", "source", "prec", "weights", "input", "output", "SQNR dB"):
        table.add_column(col, justify="right" if col in ("#", "SQNR dB") else "left")
    table.add_column("note")
    for r in res.records:
        table.add_row(
            str(r["index"]),
            _short_name(r["layer"]),
            r["op"],
            r["source"],
            r["precision"],
            r["weights"] or "-",
            r["input"],
            r["output"],
            format_sqnr(r["sqnr_db"]),
            r["note"],
        )
    con = _console()
    con.print(table)
    e2e = ", ".join(format_sqnr(v) for v in res.output_sqnr_db)
    con.print(f"end-to-end output SQNR (dB): {e2e}")
    for note in res.notes:
        con.print(f"note: {note}")
    con.print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcusim", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="simulate one inference and print per-layer costs")
    r.add_argument("model", help=".tflite or .qnn file")
    r.add_argument("--device", default="stm32l4r5", help="bundled device name or .toml path")
    r.add_argument(
        "--checkpoint", help="ai8x quantized checkpoint (.pth.tar) when MODEL is a network YAML"
    )
    r.add_argument("--input", action="append", help=".npy input (repeat for several inputs)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    r.add_argument(
        "--memory",
        action="append",
        metavar="ROLE=MEMORY",
        help="place a role (constants, arena, code) in another memory of the device, "
        "e.g. --memory arena=dtcm (repeatable)",
    )
    r.add_argument(
        "--place",
        action="append",
        metavar="LAYER=cpu|npu",
        help="run a layer (op name, op index or glob) on the CPU or the NPU (repeatable)",
    )
    force = r.add_mutually_exclusive_group()
    force.add_argument("--force-cpu", action="store_true", help="every layer on the CPU")
    force.add_argument(
        "--force-npu",
        action="store_true",
        help="every layer on the NPU (an error names the first layer it cannot run)",
    )
    r.add_argument(
        "--precision",
        action="append",
        metavar="LAYER=WxAy",
        help="re-quantize a layer before placement, e.g. conv_3=W4A8 (repeatable)",
    )
    r.add_argument(
        "--calibration",
        metavar="X.npy",
        help="calibration inputs for --precision (default: 16 seeded random inputs)",
    )
    r.add_argument("--save-outputs", metavar="DIR", help="write output_<i>.npy files here")
    r.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    r.add_argument("--csv", metavar="FILE", help="write the per-layer table as CSV")
    r.add_argument(
        "--trace", metavar="FILE", help="write a Perfetto / Chrome trace-event JSON timeline"
    )
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="layers, shapes, parameters and MACs of a model")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("devices", help="list bundled devices")
    d.set_defaults(func=cmd_devices)

    c = sub.add_parser("convert", help="convert a .tflite model to .qnn")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True)
    c.add_argument(
        "--checkpoint", help="ai8x quantized checkpoint (.pth.tar) for a network YAML model"
    )
    c.set_defaults(func=cmd_convert)

    q = sub.add_parser(
        "quantize",
        help="re-quantize an INT8 model per layer to sub-byte/binary precisions (post-training)",
    )
    q.add_argument("model", help=".tflite, .qnn or QONNX .onnx file")
    q.add_argument(
        "--bits",
        action="append",
        metavar="LAYER=WxAy",
        help="precision of a layer (op name, op index or glob), e.g. conv1=W4A4 (repeatable)",
    )
    q.add_argument("--all", metavar="WxAy", help="precision of every other conv/dw/fc layer")
    q.add_argument(
        "--calibration",
        metavar="X.npy",
        help="calibration inputs, (N, ...) samples (default: 16 seeded random inputs)",
    )
    q.add_argument("-o", "--output", required=True, help="output .qnn file")
    q.set_defaults(func=cmd_quantize)
    from .crosscheck import add_crosscheck_parser

    add_crosscheck_parser(sub)
    from .sweep import add_sweep_parser

    add_sweep_parser(sub)
    from mcusim.traces.plots import add_plot_parser

    add_plot_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"mcusim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
