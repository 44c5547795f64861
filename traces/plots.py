"""Plots of one run (per-layer cycles, traffic, energy, roofline) and of a sweep (latency vs
energy Pareto, precision / placement comparison), and the ``mcusim plot`` subcommand.

Every function returns the matplotlib Figure and, given ``path``, saves it: PNG or SVG by
the file extension, ``size`` = (width, height) in pixels at ``dpi`` (a PNG is exactly that
size). Bars and point sets carry SVG ids (``bar:<series>:<layer>``, ``points:<engine>``,
``pareto:...``) so an SVG can be checked or styled. docs/plots.md shows each plot.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcusim.errors import InputError, UserError

from .records import LayerRecord, RunResult

RUN_KINDS = ("layers", "traffic", "energy", "roofline")
SWEEP_KINDS = ("pareto", "compare")
FORMATS = (".png", ".svg")
DEFAULT_SIZE = (1200, 600)

_OP_SHORT = {
    "conv2d": "conv",
    "depthwise_conv2d": "dw",
    "fully_connected": "fc",
    "avg_pool2d": "avgpool",
    "max_pool2d": "maxpool",
    "strided_slice": "slice",
    "hard_swish": "hswish",
}
_PALETTE = [
    "#4477aa",
    "#ee6677",
    "#228833",
    "#ccbb44",
    "#66ccee",
    "#aa3377",
    "#bbbbbb",
    "#ee8866",
    "#44bb99",
    "#994455",
    "#997700",
    "#6699cc",
]
_ENGINE_COLORS = ["#4477aa", "#228833", "#994455", "#997700"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def _plt():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - a dependency; a clear line if it is missing
        raise UserError("plots need matplotlib: pip install matplotlib") from None

    if matplotlib.get_backend().lower() not in ("agg", "svg", "pdf"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(size: tuple[int, int], dpi: int, ncols: int = 1, nrows: int = 1, **kw):
    plt = _plt()
    w, h = size
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(w / dpi, h / dpi), dpi=dpi, layout="constrained", **kw
    )
    return fig, axes


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """PNG or SVG by extension; the figure's size in pixels is kept exactly (no tight bbox)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in FORMATS:
        raise InputError(f"plot format {ext or '(none)'!r}: use .png or .svg", file=str(p))
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, format=ext[1:], metadata={"Date": None} if ext == ".svg" else None)
    _plt().close(fig)
    return p


def _finish(fig, path, dpi):
    if path is not None:
        save(fig, path, dpi)
    return fig


def layer_label(r: LayerRecord) -> str:
    return f"{r.index} {_OP_SHORT.get(r.op, r.op)}"


def _xticks(ax, layers: Sequence[LayerRecord]) -> None:
    n = len(layers)
    ax.set_xticks(range(n))
    fs = 8 if n <= 30 else 6 if n <= 60 else 4
    ax.set_xticklabels([layer_label(r) for r in layers], rotation=90, fontsize=fs)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("layer (index, op)")


def _bars(ax, x, heights, bottom, gid_prefix, **kw):
    bars = ax.bar(x, heights, bottom=bottom, width=0.8, **kw)
    for xi, b in zip(x, bars, strict=True):
        b.set_gid(f"{gid_prefix}:{xi}")
    return bars


def _log_axes(ax) -> None:
    """Log x and y labelled plainly at 1, 2, 5 x 10^k (1, 3 x 10^k or decades on wider
    ranges) without crowded minor labels. Call after the data are drawn."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        span = np.log10(lim[1] / lim[0]) if lim[0] > 0 else 9.0
        subs = (1.0, 2.0, 5.0) if span < 1.6 else (1.0, 3.0) if span < 3 else (1.0,)
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _title(result: RunResult, what: str) -> str:
    return f"{result.model} on {result.device}: {what}"


def _cpu_cycles(r: LayerRecord, n: int, cpu_clk: float) -> float:
    """``n`` cycles of the layer's engine in CPU clock cycles."""
    clk = r.clock_hz or cpu_clk
    return n * cpu_clk / clk


# ---------------------------------------------------------------------------------------
# one run


def layer_cycle_parts(result: RunResult) -> dict[str, np.ndarray]:
    """Per layer, in CPU clock cycles: compute, memory stall (wait states / caches, or an
    NPU's memory-bound cycles), cluster bank conflicts / barriers / DMA waits, transfers.
    They sum to each layer's latency x CPU clock."""
    clk = result.clock_hz
    L = result.layers
    comp = np.array([_cpu_cycles(r, r.compute_cycles, clk) for r in L], float)
    bank = np.array([_cpu_cycles(r, r.bank_conflict_cycles, clk) for r in L], float)
    barrier = np.array([_cpu_cycles(r, r.barrier_cycles, clk) for r in L], float)
    dma = np.array([_cpu_cycles(r, r.dma_stall_cycles, clk) for r in L], float)
    total = np.array([_cpu_cycles(r, r.cycles, clk) for r in L], float)
    mem = np.maximum(total - comp - bank - barrier - dma, 0.0)
    xfer = np.array([r.transfer_cycles for r in L], float)
    return {
        "compute": comp,
        "memory stall": mem,
        "TCDM bank conflicts": bank,
        "barriers": barrier,
        "DMA wait": dma,
        "transfers": xfer,
    }


def plot_layers(result: RunResult, path=None, size: tuple[int, int] = DEFAULT_SIZE, dpi: int = 100):
    """Per-layer stacked cycles: compute (one colour per engine), memory stall, cluster
    parts and CPU<->NPU transfers, in CPU clock cycles (right axis: µs)."""
    fig, ax = _figure(size, dpi)
    ax.set_axisbelow(True)
    L = result.layers
    parts = layer_cycle_parts(result)
    x = np.arange(len(L))
    bottom = np.zeros(len(L))
    engines = list(dict.fromkeys(r.engine for r in L))
    comp = parts.pop("compute")
    for k, eng in enumerate(engines):
        idx = np.array([i for i, r in enumerate(L) if r.engine == eng], int)
        _bars(
            ax,
            idx,
            comp[idx],
            bottom[idx],
            "bar:compute",
            color=_ENGINE_COLORS[k % len(_ENGINE_COLORS)],
            label=f"compute ({eng})",
        )
    bottom += comp
    colors = {
        "memory stall": "#ee6677",
        "TCDM bank conflicts": "#ccbb44",
        "barriers": "#bbbbbb",
        "DMA wait": "#aa3377",
        "transfers": "#66ccee",
    }
    for name, vals in parts.items():
        if not vals.any():
            continue
        gid = "bar:" + name.split()[0].lower()
        _bars(ax, x, vals, bottom, gid, color=colors[name], label=name)
        bottom += vals
    _xticks(ax, L)
    hetero = any(r.clock_hz and r.clock_hz != result.clock_hz for r in L)
    mhz = result.clock_hz / 1e6
    ax.set_ylabel(f"cycles (CPU clock, {mhz:g} MHz)")
    sec = ax.secondary_yaxis("right", functions=(lambda c: c / mhz, lambda us: us * mhz))
    sec.set_ylabel("time (µs)")
    ax.set_title(
        _title(result, "cycles per layer")
        + f"  (total {result.latency_s * 1e3:.3f} ms"
        + (", NPU cycles scaled to the CPU clock)" if hetero else ")")
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path, dpi)


def plot_traffic(
    result: RunResult, path=None, size: tuple[int, int] = DEFAULT_SIZE, dpi: int = 100
):
    """Bytes each layer's loads (solid) and stores (hatched) asked of each memory."""
    fig, ax = _figure(size, dpi)
    ax.set_axisbelow(True)
    L = result.layers
    mems = list(dict.fromkeys(m for r in L for m in r.traffic))
    x = np.arange(len(L))
    bottom = np.zeros(len(L))
    for k, m in enumerate(mems):
        c = _PALETTE[k % len(_PALETTE)]
        for kind, hatch in (("read", None), ("write", "///")):
            vals = np.array([r.traffic.get(m, {}).get(kind, 0) for r in L], float) / 1024
            if not vals.any():
                continue
            _bars(
                ax,
                x,
                vals,
                bottom,
                f"bar:{m}.{kind}",
                color=c,
                hatch=hatch,
                edgecolor="white" if hatch else c,
                linewidth=0,
                label=f"{m} {kind}",
            )
            bottom += vals
    _xticks(ax, L)
    ax.set_ylabel("traffic (KiB, core/engine side)")
    tot = sum(
        v for r in L for rw in r.traffic.values() for k, v in rw.items() if k in ("read", "write")
    )
    ax.set_title(_title(result, f"memory traffic per layer (total {tot / 1024:,.1f} KiB)"))
    if mems:
        ax.legend(loc="upper right", fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path, dpi)


def energy_parts(result: RunResult) -> dict[str, np.ndarray]:
    """Per layer (µJ): core (running, waiting, copying), CPU-side memories, the NPU tile."""
    L = result.layers
    return {
        "core": np.array([r.core_energy_j for r in L]) * 1e6,
        "memory": np.array([r.memory_energy_j for r in L]) * 1e6,
        "NPU": np.array([r.npu_energy_j for r in L]) * 1e6,
    }


def plot_energy(result: RunResult, path=None, size: tuple[int, int] = DEFAULT_SIZE, dpi: int = 100):
    """Energy per layer stacked core / memory / NPU, and the whole inference's split."""
    fig, (ax, axt) = _figure(size, dpi, ncols=2, gridspec_kw={"width_ratios": [5, 1]})
    ax.set_axisbelow(True)
    axt.set_axisbelow(True)
    L = result.layers
    parts = energy_parts(result)
    colors = {"core": "#4477aa", "memory": "#ee6677", "NPU": "#228833"}
    x = np.arange(len(L))
    bottom = np.zeros(len(L))
    tb = 0.0
    total = sum(float(v.sum()) for v in parts.values())
    for name, vals in parts.items():
        if not vals.any():
            continue
        _bars(ax, x, vals, bottom, f"bar:{name.lower()}", color=colors[name], label=name)
        bottom += vals
        s = float(vals.sum())
        b = axt.bar([0], [s], bottom=[tb], color=colors[name], width=0.6)
        b[0].set_gid(f"total:{name.lower()}")
        if total > 0 and s / total > 0.04:
            axt.text(
                0,
                tb + s / 2,
                f"{100 * s / total:.0f} %",
                ha="center",
                va="center",
                color="white",
                fontsize=9,
            )
        tb += s
    _xticks(ax, L)
    ax.set_ylabel("energy (µJ)")
    ax.set_title(_title(result, "energy per layer"))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    axt.set_xticks([0])
    axt.set_xticklabels(["inference"])
    axt.set_xlim(-0.6, 0.6)
    axt.set_ylabel("energy (µJ)")
    axt.set_title(f"total {total:,.1f} µJ", fontsize=10)
    axt.grid(axis="y", alpha=0.3)
    return _finish(fig, path, dpi)


def layer_intensity(r: LayerRecord) -> tuple[float, float]:
    """(arithmetic intensity MAC/byte over every memory's core-side reads + writes,
    achieved MAC/cycle in the layer's engine clock)."""
    nbytes = sum(v for rw in r.traffic.values() for k, v in rw.items() if k in ("read", "write"))
    ai = r.macs / nbytes if nbytes else float("inf")
    perf = r.macs / r.cycles if r.cycles else 0.0
    return ai, perf


def plot_roofline(
    result: RunResult,
    path=None,
    device=None,
    size: tuple[int, int] = DEFAULT_SIZE,
    dpi: int = 100,
):
    """Roofline per engine of the device (traces/roofline.py derives the roofs): layers with
    MACs as points (MAC/cycle vs MAC/byte), compute roof, one memory roof per memory the
    engine's layers touched."""
    from mcusim.devices.loader import load_device

    from .roofline import device_roofs

    try:
        dev = load_device(device if device is not None else result.device)
    except UserError as e:
        raise InputError(
            f"roofline needs the device file of {result.device!r} (pass --device): {e}"
        ) from None
    roofs = device_roofs(dev)
    engines = list(dict.fromkeys(r.engine for r in result.layers))
    fig, axes = _figure(size, dpi, ncols=len(engines), squeeze=False)
    kinds = list(dict.fromkeys(r.op for r in result.layers if r.macs))
    for ax, eng in zip(axes[0], engines, strict=True):
        roof = roofs.get(eng)
        pts = [
            (r, *layer_intensity(r))
            for r in result.layers
            if r.engine == eng and r.macs and r.cycles
        ]
        pts = [p for p in pts if np.isfinite(p[1])]
        ais = np.array([p[1] for p in pts]) if pts else np.array([1.0])
        perfs = np.array([p[2] for p in pts]) if pts else np.array([1.0])
        lo = 10 ** np.floor(np.log10(max(ais.min(), 1e-3)) - 0.5)
        hi = 10 ** np.ceil(np.log10(ais.max()) + 0.5)
        xs = np.logspace(np.log10(lo), np.log10(hi), 200)
        used = {m for r in result.layers if r.engine == eng for m in r.traffic}
        top = perfs.max()
        if roof is not None:
            peak = roof.macs_per_cycle
            top = max(top, peak)
            ax.axhline(peak, color="black", lw=1.5)
            ax.text(
                xs[-1],
                peak * 1.08,
                f"peak {peak:.3g} MAC/cycle",
                ha="right",
                va="bottom",
                fontsize=8,
            )
            mem_roofs = [m for m in roof.memories if m.name in used] or list(roof.memories)
            if len(mem_roofs) > 1:
                bw = sum(m.bytes_per_cycle for m in mem_roofs)
                (line,) = ax.plot(
                    xs,
                    np.minimum(peak, bw * xs),
                    "-",
                    lw=2,
                    color="#888888",
                    label=f"all memories: {bw:.3g} B/cycle",
                )
                line.set_gid("roof:all")
            for k, m in enumerate(sorted(mem_roofs, key=lambda m: m.bytes_per_cycle)):
                ys = np.minimum(peak, m.bytes_per_cycle * xs)
                (line,) = ax.plot(
                    xs,
                    ys,
                    ls="--",
                    lw=1.2,
                    color=_PALETTE[(k + 6) % 12],
                    label=f"{m.name}: {m.bytes_per_cycle:.3g} B/cycle",
                )
                line.set_gid(f"roof:{m.name}")
        for k, kind in enumerate(kinds):
            sel = [p for p in pts if p[0].op == kind]
            if not sel:
                continue
            sc = ax.scatter(
                [p[1] for p in sel],
                [p[2] for p in sel],
                s=36,
                marker=_MARKERS[k % len(_MARKERS)],
                color=_PALETTE[k % 6],
                edgecolor="black",
                linewidth=0.5,
                zorder=3,
                label=kind,
            )
            sc.set_gid(f"points:{eng}:{kind}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(max(perfs.min() / 5, 1e-4), top * 3)
        ax.set_xlabel("arithmetic intensity (MAC / byte of memory traffic)")
        ax.set_ylabel("attainable performance (MAC / cycle)")
        clk = next((r.clock_hz for r in result.layers if r.engine == eng), 0) or result.clock_hz
        ax.set_title(f"{eng} @ {clk / 1e6:g} MHz: {len(pts)} layers", fontsize=10)
        ax.grid(which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(_title(result, "roofline"))
    return _finish(fig, path, dpi)


RUN_PLOTS = {
    "layers": plot_layers,
    "traffic": plot_traffic,
    "energy": plot_energy,
    "roofline": plot_roofline,
}


# ---------------------------------------------------------------------------------------
# sweeps

# column names of mcusim.sweep's points table (docs/sweeps.md)
LATENCY, ENERGY, MODEL, DEVICE, PRECISION, PLACEMENT = (
    "latency_s",
    "energy_j",
    "model",
    "device",
    "precision",
    "placement",
)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point beats on both x and y (lower is better)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    order = np.lexsort((y, x))
    mask = np.zeros(len(x), bool)
    best = np.inf
    for i in order:
        if y[i] < best:
            mask[i] = True
            best = y[i]
    return mask


def _ok_points(points):
    """The points that ran (docs/sweeps.md: ``status`` "ok"; failed points have no numbers)."""
    df = points
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    df = df.dropna(subset=[LATENCY, ENERGY])
    if df.empty:
        raise InputError("no successful sweep points to plot")
    return df


def _label(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def plot_pareto(
    points, path=None, size: tuple[int, int] = DEFAULT_SIZE, dpi: int = 100, models=None
):
    """Latency vs energy of every successful sweep point, one panel per model (log axes),
    colour = device, marker = precision; each model's Pareto front is drawn and circled."""
    df = _ok_points(points)
    models = list(dict.fromkeys(df[MODEL])) if models is None else list(models)
    devices = list(dict.fromkeys(df[DEVICE]))
    precs = list(dict.fromkeys(map(_label, df[PRECISION]))) if PRECISION in df else ["-"]
    ncols = min(len(models), 3)
    nrows = -(-len(models) // ncols)
    fig, axes = _figure(size, dpi, ncols=ncols, nrows=nrows, squeeze=False)
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models, strict=False):
        sub = df[df[MODEL] == model]
        lat = sub[LATENCY].to_numpy(float) * 1e3
        en = sub[ENERGY].to_numpy(float) * 1e6
        front = pareto_front(lat, en)
        for i, d in enumerate(devices):
            for j, p in enumerate(precs):
                sel = np.array(sub[DEVICE] == d, bool)
                if PRECISION in sub:
                    sel = sel & np.array(sub[PRECISION].map(_label) == p, bool)
                if not sel.any():
                    continue
                sc = ax.scatter(
                    lat[sel],
                    en[sel],
                    s=40,
                    color=_PALETTE[i % 12],
                    marker=_MARKERS[j % len(_MARKERS)],
                    edgecolor="black",
                    linewidth=0.4,
                    zorder=3,
                )
                sc.set_gid(f"pareto:points:{model}:{d}:{p}")
        o = np.argsort(lat[front])
        (ln,) = ax.plot(lat[front][o], en[front][o], "-", color="black", lw=1.2, zorder=2)
        ln.set_gid(f"pareto:front:{model}")
        ring = ax.scatter(
            lat[front],
            en[front],
            s=160,
            facecolor="none",
            edgecolor="black",
            linewidth=1.2,
            zorder=4,
        )
        ring.set_gid(f"pareto:ring:{model}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axes(ax)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("energy per inference (µJ)")
        ax.set_title(f"{model}: {int(front.sum())} of {len(sub)} on the front", fontsize=10)
        ax.grid(which="both", alpha=0.25)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", color=_PALETTE[i % 12], label=d)
        for i, d in enumerate(devices)
    ] + [
        Line2D([], [], ls="", marker=_MARKERS[j % len(_MARKERS)], color="gray", label=p)
        for j, p in enumerate(precs)
        if p != "-"
    ]
    handles.append(
        Line2D([], [], ls="-", marker="o", mfc="none", color="black", label="Pareto front")
    )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle("latency vs energy (lower left is better)")
    return _finish(fig, path, dpi)


def plot_compare(
    points,
    path=None,
    by: str = PRECISION,
    size: tuple[int, int] = DEFAULT_SIZE,
    dpi: int = 100,
):
    """Grouped bars: for every (model, device[, the other axis when it varies]) the latency
    and the energy of each value of ``by`` ("precision" or "placement"), on log axes."""
    df = _ok_points(points)
    if by not in df.columns:
        raise InputError(f"sweep table has no {by!r} column to compare")
    other = PLACEMENT if by == PRECISION else PRECISION
    keys = [MODEL, DEVICE] + ([other] if other in df and df[other].nunique() > 1 else [])
    df = df.assign(_by=df[by].map(_label), _g=df[keys].astype(str).agg(" · ".join, axis=1))
    groups = list(dict.fromkeys(df["_g"]))
    values = list(dict.fromkeys(df["_by"]))
    fig, (a1, a2) = _figure(size, dpi, nrows=2, sharex=True)
    width = 0.8 / max(len(values), 1)
    for j, v in enumerate(values):
        for ax, col, scale in ((a1, LATENCY, 1e3), (a2, ENERGY, 1e6)):
            xs, hs = [], []
            for g, key in enumerate(groups):
                row = df[(df["_g"] == key) & (df["_by"] == v)]
                if len(row):
                    xs.append(g - 0.4 + width * (j + 0.5))
                    hs.append(float(row[col].iloc[0]) * scale)
            bars = ax.bar(
                xs, hs, width=width, color=_PALETTE[j % 12], label=f"{by} {v}" if ax is a1 else None
            )
            for k, b in enumerate(bars):
                b.set_gid(f"bar:{col}:{v}:{k}")
    for ax, lab in ((a1, "latency (ms)"), (a2, "energy per inference (µJ)")):
        ax.set_yscale("log")
        ax.set_axisbelow(True)
        ax.set_ylabel(lab)
        ax.grid(axis="y", which="both", alpha=0.25)
    a2.set_xticks(range(len(groups)))
    fs = 8 if len(groups) <= 20 else 7 if len(groups) <= 40 else 5
    a2.set_xticklabels(groups, rotation=90, fontsize=fs)
    a1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    a1.set_title(f"{by} comparison per model and device")
    return _finish(fig, path, dpi)


# ---------------------------------------------------------------------------------------
# loading sweep output and the CLI


def load_points(path: str | Path):
    """The points table of a sweep: the ``out`` it was given (a directory holding
    points.parquet / points.csv, or a points .parquet / .csv, docs/sweeps.md)."""
    import pandas as pd

    p = Path(path)
    if p.is_dir() and p.suffix != ".parquet":
        found = next((c for c in (p / "points.parquet", p / "points.csv") if c.exists()), None)
        if found is None:
            raise InputError("no points.parquet / points.csv in the sweep directory", file=str(p))
        p = found
    if not p.exists():
        raise InputError("no such sweep output", file=str(p))
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        if p.suffix == ".csv":
            return pd.read_csv(p, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read sweep table: {e}", file=str(p)) from None
    raise InputError("expected a sweep directory, .parquet or .csv", file=str(p))


def _out_for(out: Path, kind: str, many: bool) -> Path:
    return out.with_name(f"{out.stem}_{kind}{out.suffix}") if many else out


def cmd_plot(args: argparse.Namespace) -> int:
    src = Path(args.input)
    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        raise InputError(f"plot format {out.suffix or '(none)'!r}: use .png or .svg", file=str(out))
    size = (args.width, args.height)
    is_sweep = src.is_dir() or src.suffix in (".parquet", ".csv")
    kind = args.kind or ("pareto" if is_sweep else "layers")
    written: list[Path] = []
    if is_sweep:
        if kind not in SWEEP_KINDS + ("all",):
            raise UserError(f"--kind {kind}: a sweep takes pareto, compare or all")
        points = load_points(src)
        kinds = list(SWEEP_KINDS) if kind == "all" else [kind]
        for k in kinds:
            dest = _out_for(out, k, len(kinds) > 1)
            if k == "pareto":
                plot_pareto(points, dest, size=size, dpi=args.dpi)
            else:
                plot_compare(points, dest, by=args.by, size=size, dpi=args.dpi)
            written.append(dest)
    else:
        if kind not in RUN_KINDS + ("all",):
            raise UserError(f"--kind {kind}: a run result takes {', '.join(RUN_KINDS)} or all")
        from .export import load_result

        result = load_result(src)
        kinds = list(RUN_KINDS) if kind == "all" else [kind]
        for k in kinds:
            dest = _out_for(out, k, len(kinds) > 1)
            extra: dict[str, Any] = {"device": args.device} if k == "roofline" else {}
            RUN_PLOTS[k](result, dest, size=size, dpi=args.dpi, **extra)
            written.append(dest)
    for w in written:
        print(f"wrote {w}")
    return 0


def add_plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="plot a run result (mcusim run --json) or a sweep's output directory",
    )
    p.add_argument(
        "input", help="RESULT.json from mcusim run --json, or a sweep directory/.parquet/.csv"
    )
    p.add_argument(
        "--kind",
        choices=RUN_KINDS + SWEEP_KINDS + ("all",),
        help="run: layers (default), traffic, energy, roofline; sweep: pareto (default), "
        "compare; all: every kind, -o name gets a _<kind> suffix",
    )
    p.add_argument("-o", "--output", required=True, help="out.png or out.svg")
    p.add_argument("--width", type=int, default=DEFAULT_SIZE[0], help="pixels (default 1200)")
    p.add_argument("--height", type=int, default=DEFAULT_SIZE[1], help="pixels (default 600)")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument(
        "--device", help="device name or .toml for the roofline (default: the result's device)"
    )
    p.add_argument(
        "--by",
        default=PRECISION,
        choices=(PRECISION, PLACEMENT),
        help="what --kind compare groups bars by (default precision)",
    )
    p.set_defaults(func=cmd_plot)
