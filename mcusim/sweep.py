"""Design-space sweeps: every model x device x precision x placement point, run in parallel,
recorded as two DataFrames (points, point x layer) and appended to Parquet / CSV as points
finish. The column names are a contract with traces/plots.py: docs/sweeps.md lists them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from mcusim.traces.records import LayerRecord, RunResult

from .errors import UserError
from .runner import MODES

EXECUTORS = ("process", "thread", "serial", "dask")
PLACEMENT_KWARGS = ("force", "place", "placement")
KEY_COLUMNS = ("model", "device", "precision", "placement", "mode")
SOURCE_PRECISION = "source"
DEFAULT_PLACEMENT = "default"
FLUSH_SECONDS = 2.0  # results reach the output files at most this long after they finish

POINT_COLUMNS: dict[str, str] = {
    "model": "str",
    "device": "str",
    "precision": "str",
    "placement": "str",
    "mode": "str",
    "seed": "Int64",
    "status": "str",
    "error": "str",
    "error_type": "str",
    "cycles": "Int64",
    "latency_s": "float64",
    "energy_j": "float64",
    "core_energy_j": "float64",
    "memory_energy_j": "float64",
    "npu_energy_j": "float64",
    "macs": "Int64",
    "layers": "Int64",
    "peak_ram_bytes": "Int64",
    "flash_bytes": "Int64",
    "read_bytes": "Int64",
    "write_bytes": "Int64",
    "transfer_bytes": "Int64",
    "transfer_cycles": "Int64",
    "clock_hz": "float64",
    "engines": "str",
    "cpu_layers": "Int64",
    "npu_layers": "Int64",
    "cpu_latency_s": "float64",
    "npu_latency_s": "float64",
    "model_name": "str",
    "device_name": "str",
    "wall_s": "float64",
}

_SCALAR_TYPES = {"int": "Int64", "float": "float64", "str": "str", "bool": "bool"}
_RENAME = {"precision": "layer_precision"}  # the point key "precision" is the sweep's


def _layer_columns() -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Layer DataFrame schema from LayerRecord's fields: scalars under their own names
    (precision -> layer_precision), shapes / notes as strings, traffic / cache as JSON."""
    cols: dict[str, str] = {k: "str" for k in KEY_COLUMNS}
    scalars: list[tuple[str, str]] = []
    for f in fields(LayerRecord):
        if f.name in ("traffic", "cache"):
            continue
        out = _RENAME.get(f.name, f.name)
        kind = _SCALAR_TYPES.get(str(f.type), "str")
        cols[out] = kind
        if f.name not in ("output_shape", "notes"):
            scalars.append((f.name, out))
    cols.update(read_bytes="Int64", write_bytes="Int64", traffic="str", cache="str")
    return cols, tuple(scalars)


LAYER_COLUMNS, _LAYER_SCALARS = _layer_columns()


# -- the grid ------------------------------------------------------------------------------
@dataclass
class _Context:
    """Everything a worker needs to run any point of one sweep (pickled once per worker)."""

    token: str
    models: dict[str, Any]  # label -> resolved path (str) or Model
    devices: dict[str, Any]  # label -> name / resolved .toml path, or Device
    precisions: dict[str, Any]  # label -> None | "W4A8" | {LAYER: precision}
    placements: dict[str, dict[str, Any]]  # label -> run() keyword arguments
    mode: str
    seed: int


def _labelled(items, what: str, label: Callable[[Any], str]) -> dict[str, Any]:
    """A list (labels derived) or a {label: value} mapping -> {label: value}."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    if isinstance(items, (str, Path)) or not isinstance(items, Iterable):
        items = [items]
    out: dict[str, Any] = {}
    for v in items:
        k = label(v)
        if k in out:
            raise UserError(
                f"sweep: two {what} share the label {k!r}; give {what} as a dict "
                "{label: value} to name them apart"
            )
        out[k] = v
    return out


def _model_label(m) -> str:
    from .model import Model

    return m.name if isinstance(m, Model) else Path(m).stem


def _device_label(d) -> str:
    from mcusim.devices.model import Device

    if isinstance(d, Device):
        return d.name
    s = str(d)
    return Path(s).stem if s.endswith(".toml") else s


def precision_label(p) -> str:
    """``"source"`` (None), the default spec ("W4A8"), or "LAYER=W4A4,..." sorted by layer."""
    if p is None or (isinstance(p, str) and p.strip().lower() == SOURCE_PRECISION):
        return SOURCE_PRECISION
    if isinstance(p, str):
        return p.strip()
    if isinstance(p, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted((str(k), str(v)) for k, v in p.items()))
    raise UserError(f"sweep: precision {p!r}: expected None, 'W4A8'-style or {{LAYER: 'W4A4'}}")


def placement_label(p) -> str:
    """``"default"`` (None) or the run() keyword arguments as compact sorted JSON."""
    if p is None or (isinstance(p, str) and p.strip().lower() == DEFAULT_PLACEMENT):
        return DEFAULT_PLACEMENT
    if isinstance(p, Mapping):
        return json.dumps(p, sort_keys=True, separators=(",", ":"), default=str)
    raise UserError(f"sweep: placement {p!r}: expected None or a dict of run() arguments")


def _precision_value(p):
    if p is None or (isinstance(p, str) and p.strip().lower() == SOURCE_PRECISION):
        return None
    if isinstance(p, str):
        from .quantize import parse_spec

        parse_spec(p)  # a malformed spec is the user's mistake, said before anything runs
        return p.strip()
    if isinstance(p, Mapping):
        if not p:
            return None
        return {str(k): str(v) for k, v in p.items()}
    raise UserError(f"sweep: precision {p!r}: expected None, 'W4A8'-style or {{LAYER: 'W4A4'}}")


def _placement_value(p) -> dict[str, Any]:
    if p is None or (isinstance(p, str) and p.strip().lower() == DEFAULT_PLACEMENT):
        return {}
    if not isinstance(p, Mapping):
        raise UserError(f"sweep: placement {p!r}: expected None or a dict of run() arguments")
    bad = sorted(set(p) - set(PLACEMENT_KWARGS))
    if bad:
        raise UserError(
            f"sweep: placement {dict(p)!r}: unknown key(s) {', '.join(bad)}; "
            f"expected {', '.join(PLACEMENT_KWARGS)}"
        )
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in p.items()}


def _model_spec(m, for_workers: bool):
    """What a worker gets: a resolved path, or the Model (stripped of caches for pickling)."""
    from .model import Model

    if isinstance(m, Model):
        return Model(m.graph, path=m.path) if for_workers else m
    p = Path(m)
    if not p.is_file():
        from .errors import ModelFormatError

        raise ModelFormatError("file not found", file=str(p))
    return str(p.resolve())


def _device_spec(d):
    from mcusim.devices.model import Device

    if isinstance(d, Device):
        return d
    s = str(d)
    if s.endswith(".toml") or os.sep in s:
        return str(Path(s).resolve())
    return s


# -- one point (runs in the workers) --------------------------------------------------------
_MODELS: dict[Any, Any] = {}  # per process: resolved path (+ mtime) -> Model or the error
_DEVICES: dict[Any, Any] = {}  # per process: device name / path -> Device or the error


def _cached(cache: dict, key, make):
    hit = cache.get(key)
    if hit is None:
        try:
            hit = make()
        except Exception as e:  # the error of every point that needs it
            hit = e
        cache[key] = hit
    if isinstance(hit, Exception):
        raise hit
    return hit


def _base_model(ctx: _Context, label: str):
    from .model import Model, load

    spec = ctx.models[label]
    if isinstance(spec, Model):
        return spec
    st = os.stat(spec)
    return _cached(_MODELS, (spec, st.st_mtime_ns, st.st_size), lambda: load(spec))


def calibration_samples(graph, seed: int) -> list[np.ndarray]:
    """The sweep's calibration inputs: random_inputs(graph, seed + k), k = 0..15 (with
    seed 0: the samples requantize uses by default)."""
    from .inputs import random_inputs
    from .quantize import DEFAULT_RANDOM_SAMPLES

    return [random_inputs(graph, seed + k)[0] for k in range(DEFAULT_RANDOM_SAMPLES)]


def _point_model(ctx: _Context, model_label: str, precision_label_: str):
    """The model re-quantized to the point's precision, built once per (model, precision,
    seed) and kept on the source Model (its cost caches go with it)."""
    from .model import Model
    from .quantize import requantize

    base = _base_model(ctx, model_label)
    spec = ctx.precisions[precision_label_]
    if spec is None:
        return base
    key = ("sweep-precision", json.dumps(spec, sort_keys=True), ctx.seed)

    def make():
        calib = calibration_samples(base.graph, ctx.seed)
        if isinstance(spec, str):
            res = requantize(base, {}, calib, default=spec)
        else:
            res = requantize(base, spec, calib)
        return Model(res.graph, path=base.path)

    return _cached(base._costs, key, make)


def _device(ctx: _Context, label: str):
    from mcusim.devices.loader import load_device

    spec = ctx.devices[label]
    if not isinstance(spec, str):
        return spec
    return _cached(_DEVICES, spec, lambda: load_device(spec))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def _dumps(d) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _core_rw(traffic: Mapping[str, Mapping[str, int]]) -> tuple[int, int]:
    r = w = 0
    for rw in traffic.values():
        r += int(rw.get("read", 0))
        w += int(rw.get("write", 0))
    return r, w


def point_row(keys: Mapping[str, Any], res: RunResult) -> dict[str, Any]:
    """The points-DataFrame row of one finished run."""
    cpu_n = npu_n = 0
    cpu_t = npu_t = 0.0
    core = mem = npu = 0.0
    rd = wr = tb = tc = 0
    engines: list[str] = []
    for r in res.layers:
        clk = r.clock_hz or res.clock_hz
        if r.engine.startswith("cpu"):
            cpu_n += 1
            cpu_t += r.cycles / clk
        else:
            npu_n += 1
            npu_t += r.cycles / clk
        if r.engine not in engines:
            engines.append(r.engine)
        core += r.core_energy_j
        mem += r.memory_energy_j
        npu += r.npu_energy_j
        a, b = _core_rw(r.traffic)
        rd += a
        wr += b
        tb += r.transfer_bytes
        tc += r.transfer_cycles
    return {
        **keys,
        "status": "ok",
        "error": "",
        "error_type": "",
        "cycles": int(res.total_cycles),
        "latency_s": float(res.latency_s),
        "energy_j": float(res.energy_j),
        "core_energy_j": core,
        "memory_energy_j": mem,
        "npu_energy_j": npu,
        "macs": int(res.total_macs),
        "layers": len(res.layers),
        "peak_ram_bytes": int(res.peak_ram_bytes),
        "flash_bytes": int(res.flash_bytes),
        "read_bytes": rd,
        "write_bytes": wr,
        "transfer_bytes": tb,
        "transfer_cycles": tc,
        "clock_hz": float(res.clock_hz),
        "engines": "+".join(sorted(engines)),
        "cpu_layers": cpu_n,
        "npu_layers": npu_n,
        "cpu_latency_s": cpu_t,
        "npu_latency_s": npu_t,
        "model_name": res.model,
        "device_name": res.device,
    }


def layer_rows(keys: Mapping[str, Any], res: RunResult) -> list[dict[str, Any]]:
    """The layers-DataFrame rows of one finished run (schema: LAYER_COLUMNS)."""
    rows = []
    for r in res.layers:
        row = dict(keys)
        for name, out in _LAYER_SCALARS:
            row[out] = getattr(r, name)
        row["output_shape"] = "x".join(str(d) for d in r.output_shape)
        row["notes"] = "; ".join(r.notes)
        row["read_bytes"], row["write_bytes"] = _core_rw(r.traffic)
        row["traffic"] = _dumps(r.traffic)
        row["cache"] = _dumps(r.cache)
        rows.append(row)
    return rows


def _run_point(ctx: _Context, key: tuple[str, str, str, str]):
    from .runner import run

    m, d, p, pl = key
    keys = {"model": m, "device": d, "precision": p, "placement": pl, "mode": ctx.mode}
    t0 = time.perf_counter()
    try:
        model = _point_model(ctx, m, p)
        res = run(model, _device(ctx, d), seed=ctx.seed, mode=ctx.mode, **ctx.placements[pl])
    except Exception as e:  # a failing point is recorded; the sweep goes on
        row = {**keys, "seed": ctx.seed, "status": "error", "error": _one_line(e)}
        row["error_type"] = type(e).__name__
        row["wall_s"] = time.perf_counter() - t0
        return row, []
    row = point_row(keys, res)
    row["seed"] = ctx.seed
    layers = layer_rows(keys, res)
    row["wall_s"] = time.perf_counter() - t0
    return row, layers


def _run_chunk(ctx: _Context, chunk: list[tuple[int, tuple]]) -> list[tuple[int, dict, list]]:
    """Run points (ordinal, key) in order; one task of a pool / a dask worker."""
    return [(i, *_run_point(ctx, key)) for i, key in chunk]


_WORKER_CTX: _Context | None = None


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx


def _run_chunk_in_worker(chunk):
    assert _WORKER_CTX is not None
    return _run_chunk(_WORKER_CTX, chunk)


# -- DataFrames and files ------------------------------------------------------------------
def _na(v) -> bool:
    return v is None or v is _PD_NA() or (isinstance(v, float) and math.isnan(v)) or v == ""


def _PD_NA():  # noqa: N802  (pandas' NA singleton, imported lazily)
    import pandas as pd

    return pd.NA


def _coerce(df, columns: Mapping[str, str]):
    """The documented dtypes, whether the frame was built in memory or read from CSV."""
    import pandas as pd

    out = {}
    n = len(df)
    for c, kind in columns.items():
        s = df[c] if c in df.columns else pd.Series([None] * n, index=df.index, dtype=object)
        if kind == "str":
            out[c] = s.astype(object).where(s.notna(), "").astype(str)
        elif kind == "Int64":
            if s.dtype.kind in "iuf" or str(s.dtype) == "Int64":
                out[c] = s.astype("Int64")
            else:
                vals = [pd.NA if _na(v) else int(v) for v in s.tolist()]
                out[c] = pd.Series(pd.array(vals, dtype="Int64"), index=df.index)
        elif kind == "float64":
            if s.dtype.kind in "iuf":
                out[c] = s.astype("float64")
            else:
                vals = [math.nan if _na(v) else float(v) for v in s.tolist()]
                out[c] = pd.Series(vals, index=df.index, dtype="float64")
        elif kind == "bool":
            if s.dtype.kind == "b":
                out[c] = s
            else:
                out[c] = s.map(lambda v: str(v).strip().lower() == "true").astype(bool)
        else:  # pragma: no cover - the schemas above use the four kinds only
            raise AssertionError(kind)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _frame(rows: list[dict], columns: Mapping[str, str]):
    import pandas as pd

    df = pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame()
    return _coerce(df, columns)


def output_paths(out: str | Path) -> tuple[Path, Path, str]:
    """(points path, layers path, "parquet" | "csv") for an ``out`` (docs/sweeps.md)."""
    p = Path(out)
    name = p.name.lower()
    if name.endswith(".csv"):
        return p, p.with_name(p.name[:-4] + ".layers.csv"), "csv"
    if name.endswith(".parquet"):
        return p, p.with_name(p.name[:-8] + ".layers.parquet"), "parquet"
    return p / "points.parquet", p / "layers.parquet", "parquet"


def _read_one(path: Path, fmt: str, columns: Mapping[str, str]):
    import pandas as pd

    if fmt == "csv":
        if not path.is_file() or path.stat().st_size == 0:
            return _frame([], columns)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        parts = sorted(path.glob("part-*.parquet")) if path.is_dir() else []
        if path.is_file():
            parts = [path]
        if not parts:
            return _frame([], columns)
        df = pd.concat([pd.read_parquet(f) for f in parts], ignore_index=True)
    if list(df.columns) != list(columns):
        raise UserError(
            f"{path}: its columns are not those of this mcusim's sweeps (written by another "
            "version?); give another out= or remove it"
        )
    return _coerce(df, columns)


def read_results(out: str | Path):
    """(points, layers) DataFrames of a sweep's output, Parquet or CSV, with the documented
    column types."""
    pp, lp, fmt = output_paths(out)
    return _read_one(pp, fmt, POINT_COLUMNS), _read_one(lp, fmt, LAYER_COLUMNS)


def traffic_columns(layers):
    """``layers`` with its JSON ``traffic`` expanded to ``<memory>_<kind>_bytes`` columns
    (0 where a layer did not touch a memory)."""
    import pandas as pd

    parsed = [json.loads(t) if t else {} for t in layers["traffic"]]
    flat = [{f"{m}_{k}_bytes": v for m, rw in d.items() for k, v in rw.items()} for d in parsed]
    extra = pd.DataFrame(flat, index=layers.index).fillna(0).astype("int64")
    return pd.concat([layers, extra], axis=1)


class _Sink:
    """Appends finished rows to the output files, at most every FLUSH_SECONDS."""

    def __init__(self, out: str | Path | None, resume: bool):
        self.enabled = out is not None
        self.points: list[dict] = []
        self.layers: list[dict] = []
        self.last = time.monotonic()
        self.written: list[Path] = []
        if not self.enabled:
            return
        self.pp, self.lp, self.fmt = output_paths(out)
        if not resume:
            for p in (self.pp, self.lp):
                _remove_results(p)
        self.next_part = 0
        if self.fmt == "parquet":
            for p in (self.pp, self.lp):
                if p.is_file():  # resuming onto a file another tool wrote there
                    raise UserError(f"{p} is a file; sweep results are a directory of parts")
                p.mkdir(parents=True, exist_ok=True)
                nums = [int(f.stem.split("-")[1]) for f in p.glob("part-*.parquet")]
                self.next_part = max([self.next_part, *(n + 1 for n in nums)])
        else:
            self.pp.parent.mkdir(parents=True, exist_ok=True)
        self.written = [self.pp, self.lp]

    def add(self, point: dict, layers: list[dict]) -> None:
        if not self.enabled:
            return
        self.points.append(point)
        self.layers.extend(layers)
        if time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if not self.enabled or not self.points:
            return
        pts, lays = _frame(self.points, POINT_COLUMNS), _frame(self.layers, LAYER_COLUMNS)
        if self.fmt == "csv":
            for path, df in ((self.pp, pts), (self.lp, lays)):
                new = not path.is_file() or path.stat().st_size == 0
                if len(df) or new:
                    with path.open("a", newline="") as f:
                        df.to_csv(f, header=new, index=False)
        else:
            name = f"part-{self.next_part:05d}.parquet"
            for path, df in ((self.pp, pts), (self.lp, lays)):
                tmp = path / f".{name}.tmp"
                df.to_parquet(tmp, index=False)
                os.replace(tmp, path / name)  # readers never see a half-written part
            self.next_part += 1
        self.points, self.layers = [], []


def _remove_results(p: Path) -> None:
    """Remove a previous sweep's output at ``p`` (only the files a sweep writes)."""
    if p.is_file():
        p.unlink()
    elif p.is_dir():
        for f in list(p.glob("part-*.parquet")) + list(p.glob(".part-*.tmp")):
            f.unlink()
        try:
            p.rmdir()
        except OSError:
            pass  # other files there: leave the directory


# -- executors -----------------------------------------------------------------------------
def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _chunks(todo: list[tuple[int, tuple]], n_jobs: int) -> list[list[tuple[int, tuple]]]:
    """Points grouped by (model, precision, device) - they share a re-quantized model and
    per-device costs - cut so that every worker gets several chunks."""
    groups: dict[tuple, list] = {}
    for i, key in todo:
        groups.setdefault((key[0], key[2], key[1]), []).append((i, key))
    cap = max(1, math.ceil(len(todo) / (4 * n_jobs)))
    out = []
    for g in groups.values():
        out.extend(g[k : k + cap] for k in range(0, len(g), cap))
    return out


def _failed_chunk(ctx: _Context, chunk, e: BaseException):
    """Points of a chunk whose worker died (not a point's own error, which _run_point
    records): recorded as errors so the rest of the sweep completes."""
    rows = []
    for i, (m, d, p, pl) in chunk:
        row = {"model": m, "device": d, "precision": p, "placement": pl, "mode": ctx.mode}
        row.update(seed=ctx.seed, status="error", error=f"worker failed: {_one_line(e)}")
        row["error_type"] = type(e).__name__
        rows.append((i, row, []))
    return rows


def _execute(ctx, chunks, executor: str, n_jobs: int, on_done, bar) -> None:
    """Run the chunks, ``on_done(results)`` as each finishes. ``bar`` (the progress display,
    a context manager) is entered only once every worker exists: forking while its refresh
    thread writes to the terminal could hand a worker a held stdout lock."""
    if executor == "serial":
        with bar:
            for chunk in chunks:
                on_done(_run_chunk(ctx, chunk))
        return
    if executor == "dask":
        _execute_dask(ctx, chunks, n_jobs, on_done, bar)
        return
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

    if executor == "thread":
        pool = ThreadPoolExecutor(max_workers=n_jobs)
        futs = {pool.submit(_run_chunk, ctx, c): c for c in chunks}
    else:
        import multiprocessing as mp

        # forked workers start with mcusim and its numba kernels loaded; elsewhere spawn
        # (the numba on-disk cache makes their first use cheap)
        mpc = mp.get_context("fork") if sys.platform.startswith("linux") else None
        pool = ProcessPoolExecutor(
            max_workers=n_jobs, mp_context=mpc, initializer=_init_worker, initargs=(ctx,)
        )
        futs = {pool.submit(_run_chunk_in_worker, c): c for c in chunks}
    with pool, bar:
        for fut in as_completed(futs):
            try:
                res = fut.result()
            except Exception as e:  # a worker died (e.g. killed): its points fail
                res = _failed_chunk(ctx, futs[fut], e)
            on_done(res)


def _execute_dask(ctx, chunks, n_jobs: int, on_done, bar) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed, get_client
    except ImportError:
        raise UserError(
            "executor='dask' needs dask.distributed: pip install 'mcusim[dask]'"
        ) from None
    import logging

    own = None
    try:
        client = get_client()
    except ValueError:  # no active client: a local cluster for this sweep
        cluster = LocalCluster(
            n_workers=n_jobs,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        own = (client, cluster)
    try:
        ctx_f = client.scatter(ctx, broadcast=True, hash=False)
        futs = {client.submit(_run_chunk, ctx_f, c, pure=False): c for c in chunks}
        with bar:
            for fut in as_completed(list(futs)):
                try:
                    res = fut.result()
                except Exception as e:
                    res = _failed_chunk(ctx, futs[fut], e)
                on_done(res)
    finally:
        if own is not None:
            own[0].close()
            own[1].close()


# -- the API ---------------------------------------------------------------------------------
def sweep(
    models,
    devices,
    precisions: Sequence | Mapping | None = None,
    placements: Sequence | Mapping | None = None,
    executor: str = "process",
    n_jobs: int | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    mode: str = "full",
    seed: int = 0,
    progress: bool = True,
):
    """Run every (model, device, precision, placement) point; returns ``(points, layers)``
    DataFrames (columns: docs/sweeps.md). Failing points are rows with ``status="error"``.

    ``precisions``: None (the model as it is), defaults like "W4A8" for every MAC layer, or
    {LAYER: precision} dicts (seeded random calibration, see docs/sweeps.md).
    ``placements``: None or dicts of run() arguments ({"force": "cpu"}, {"place": {...}},
    {"placement": {"arena": "dtcm"}}). Either axis may be a {label: value} dict.
    ``out``: directory, ``*.parquet`` or ``*.csv``; rows are appended as points finish and
    ``resume=True`` skips the points already there.
    """
    if executor not in EXECUTORS:
        raise UserError(f"sweep: executor={executor!r}: expected one of {', '.join(EXECUTORS)}")
    if mode not in MODES:
        raise UserError(f"sweep: mode={mode!r}: expected one of {', '.join(MODES)}")
    if resume and out is None:
        raise UserError("sweep: resume=True needs out= (the results to resume)")
    n_jobs = _default_jobs() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise UserError(f"sweep: n_jobs={n_jobs}: expected at least 1")
    mods = _labelled(models, "models", _model_label)
    devs = _labelled(devices, "devices", _device_label)
    if not mods or not devs:
        raise UserError("sweep: give at least one model and one device")
    precs = _labelled([None] if precisions is None else precisions, "precisions", precision_label)
    places = _labelled([None] if placements is None else placements, "placements", placement_label)
    workers = executor in ("process", "dask")
    ctx = _Context(
        token=uuid.uuid4().hex,
        models={k: _model_spec(v, workers) for k, v in mods.items()},
        devices={k: _device_spec(v) for k, v in devs.items()},
        precisions={k: _precision_value(v) for k, v in precs.items()},
        placements={k: _placement_value(v) for k, v in places.items()},
        mode=mode,
        seed=int(seed),
    )
    grid = [(m, d, p, pl) for m in mods for d in devs for p in precs for pl in places]
    order = {key: i for i, key in enumerate(grid)}

    old_points = old_layers = None
    done: set[tuple] = set()
    if resume:
        old_points, old_layers = read_results(out)
        done = {
            tuple(r)
            for r in old_points[list(KEY_COLUMNS)].itertuples(index=False, name=None)
            if r[4] == mode
        }
    todo = [(i, key) for i, key in enumerate(grid) if (*key, mode) not in done]

    sink = _Sink(out, resume)
    results: list[tuple[int, dict, list]] = []

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    task = bar.add_task("sweep", total=len(todo), errors=0)
    n_err = 0

    def on_done(batch):
        nonlocal n_err
        for i, prow, lrows in batch:
            results.append((i, prow, lrows))
            n_err += prow["status"] != "ok"
            sink.add(prow, lrows)
        bar.update(task, advance=len(batch), errors=n_err)

    chunks = _chunks(todo, n_jobs)
    try:
        _execute(ctx, chunks, executor, min(n_jobs, max(1, len(chunks))), on_done, bar)
    finally:
        sink.flush()

    results.sort(key=lambda t: t[0])
    points = _frame([r[1] for r in results], POINT_COLUMNS)
    layers = _frame([row for r in results for row in r[2]], LAYER_COLUMNS)
    if resume and old_points is not None and len(old_points):
        points, layers = _merge_old(points, layers, old_points, old_layers, order, mode)
    return points, layers


def _merge_old(points, layers, old_points, old_layers, order, mode):
    """Previous rows of the requested points + the new ones, in grid order."""
    import pandas as pd

    def ordinal(df):
        keys = df[list(KEY_COLUMNS)].itertuples(index=False, name=None)
        return pd.Series([order.get(k[:4], -1) if k[4] == mode else -1 for k in keys])

    op = old_points[ordinal(old_points).to_numpy() >= 0]
    ol = old_layers[ordinal(old_layers).to_numpy() >= 0]
    pts = pd.concat([op, points], ignore_index=True)
    lay = pd.concat([ol, layers], ignore_index=True)
    pts = pts.iloc[ordinal(pts).argsort(kind="stable")].reset_index(drop=True)
    lo = ordinal(lay).to_numpy()
    idx = np.lexsort((lay["index"].to_numpy(dtype=np.int64), lo))
    lay = lay.iloc[idx].reset_index(drop=True)
    return _coerce(pts, POINT_COLUMNS), _coerce(lay, LAYER_COLUMNS)


# -- command line ---------------------------------------------------------------------------
def load_config(path: str | Path) -> dict[str, Any]:
    """A sweep.toml -> sweep() keyword arguments (paths relative to the file)."""
    import tomllib

    p = Path(path)
    try:
        cfg = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: not valid TOML: {e}") from None
    known = {"models", "devices", "precisions", "placements", "executor", "n_jobs", "out"}
    known |= {"mode", "seed", "resume", "progress"}
    bad = sorted(set(cfg) - known)
    if bad:
        raise UserError(
            f"{p}: unknown key(s) {', '.join(bad)}; expected {', '.join(sorted(known))}"
        )
    for k in ("models", "devices"):
        if k not in cfg:
            raise UserError(f"{p}: missing '{k}' (a list)")
    base = p.resolve().parent

    def rel(v):
        return str(base / v) if not Path(v).is_absolute() else v

    def rel_models(v):
        return rel(v) if isinstance(v, str) else v

    def rel_device(v):
        return rel(v) if isinstance(v, str) and v.endswith(".toml") else v

    def each(v, fn):
        if isinstance(v, Mapping):
            return {k: fn(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fn(x) for x in v]
        raise UserError(f"{p}: expected a list or a table, got {v!r}")

    out = dict(cfg)
    out["models"] = each(cfg["models"], rel_models)
    out["devices"] = each(cfg["devices"], rel_device)
    if "out" in cfg:
        out["out"] = rel(cfg["out"])
    return out


def add_sweep_parser(subparsers):
    s = subparsers.add_parser(
        "sweep", help="run a model x device x precision x placement sweep from a TOML file"
    )
    s.add_argument("config", help="sweep.toml (docs/sweeps.md)")
    s.add_argument("--out", help="results directory, *.parquet or *.csv (overrides the file)")
    s.add_argument("--resume", action="store_true", help="skip points already in --out")
    s.add_argument("--executor", choices=EXECUTORS, help="overrides the file")
    s.add_argument("--jobs", type=int, help="workers (overrides n_jobs)")
    s.add_argument("--mode", choices=MODES, help="overrides the file")
    s.add_argument("--seed", type=int, help="overrides the file")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)
    return s


def cmd_sweep(args) -> int:
    from rich.table import Table

    from .cli import _console, _short_name

    kw = load_config(args.config)
    if args.out:
        kw["out"] = args.out
    if args.resume:
        kw["resume"] = True
    for a, k in (("executor", "executor"), ("jobs", "n_jobs"), ("mode", "mode"), ("seed", "seed")):
        if getattr(args, a) is not None:
            kw[k] = getattr(args, a)
    if args.no_progress:
        kw["progress"] = False
    points, _layers = sweep(**kw)
    con = _console()
    t = Table(title=f"sweep: {len(points)} points ({kw.get('mode', 'full')} mode)")
    for c in ("model", "device", "precision", "placement", "status"):
        t.add_column(c)
    for c in ("cycles", "latency ms", "energy uJ", "peak RAM", "flash"):
        t.add_column(c, justify="right")
    t.add_column("engines / error")
    for r in points.itertuples(index=False):
        ok = r.status == "ok"
        t.add_row(
            _short_name(r.model),
            r.device,
            r.precision,
            r.placement,
            r.status,
            f"{r.cycles:,}" if ok else "-",
            f"{1e3 * r.latency_s:.3f}" if ok else "-",
            f"{1e6 * r.energy_j:.2f}" if ok else "-",
            f"{r.peak_ram_bytes:,}" if ok else "-",
            f"{r.flash_bytes:,}" if ok else "-",
            r.engines if ok else r.error,
        )
    con.print(t)
    n_err = int((points["status"] != "ok").sum())
    con.print(f"{len(points) - n_err} ok, {n_err} errors")
    if kw.get("out"):
        pp, lp, _ = output_paths(kw["out"])
        con.print(f"wrote {pp} and {lp}")
    return 0


__all__ = [
    "LAYER_COLUMNS",
    "POINT_COLUMNS",
    "add_sweep_parser",
    "calibration_samples",
    "cmd_sweep",
    "layer_rows",
    "load_config",
    "output_paths",
    "point_row",
    "read_results",
    "sweep",
    "traffic_columns",
]
