"""Exports of a run: per-layer records to JSON / CSV / Parquet, a Perfetto (Chrome
trace-event) timeline, and reading a ``mcusim run --json`` file back into a RunResult.

The timeline lays the layers end to end in execution order (one inference runs its layers one
after another, whatever the engine): each layer is one complete ("X") slice on its engine's
track lasting ``cycles / clock_hz``, and each copy between CPU memory and an NPU's memory is
its own slice on the "DMA / transfers" track lasting ``transfer_cycles / CPU clock``. The
slices therefore sum to ``RunResult.latency_s``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mcusim.errors import InputError

from .records import LayerRecord, RunResult, _jsonable

LAYER_FORMATS = (".json", ".csv", ".parquet")
TRANSFER_TRACK = "DMA / transfers"

# the note _add_transfers (mcusim/runner.py) writes for each copy charged to a layer
_TRANSFER_NOTE = re.compile(r"^(cpu|npu)->(cpu|npu) (.+): (\d+) B, (\d+) cycles$")


# ---------------------------------------------------------------------------------------
# reading results back


def result_from_dict(d: dict[str, Any], source: str = "") -> RunResult:
    """A RunResult from ``RunResult.to_dict()`` (outputs are not in the JSON: empty)."""
    try:
        names = {f.name for f in fields(LayerRecord)}
        layers = []
        for row in d["layers"]:
            kw = {k: v for k, v in row.items() if k in names}
            kw["output_shape"] = tuple(kw.get("output_shape") or ())
            layers.append(LayerRecord(**kw))
        tot = d.get("totals") or {}
        return RunResult(
            model=d["model"],
            device=d["device"],
            clock_hz=float(d["clock_hz"]),
            layers=layers,
            outputs=[],
            peak_ram_bytes=int(tot.get("peak_ram_bytes", 0)),
            flash_bytes=int(tot.get("flash_bytes", 0)),
            notes=list(d.get("notes") or []),
            npu=d.get("npu") or {},
            requant_report=d.get("requant_report"),
            precision_report=d.get("precision_report"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            f"not a mcusim run result (mcusim run --json): {type(e).__name__}: {e}",
            file=source or None,
        ) from None


def load_result(path: str | Path) -> RunResult:
    """Read what ``mcusim run --json`` (``RunResult.to_json``) wrote."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read run result JSON: {e}", file=str(p)) from None
    if not isinstance(d, dict):
        raise InputError("not a mcusim run result (expected a JSON object)", file=str(p))
    return result_from_dict(d, str(p))


# ---------------------------------------------------------------------------------------
# per-layer tables


def layers_frame(result: RunResult):
    """One row per layer (LayerRecord.flat(): traffic as ``<memory>_<kind>_bytes``), with
    the model and device in front so tables of several runs concatenate."""
    import pandas as pd

    rows = [{"model": result.model, "device": result.device} | r.flat() for r in result.layers]
    return pd.DataFrame(rows)


def write_layers(result: RunResult, path: str | Path) -> Path:
    """Per-layer records by file extension: .json (the whole result, readable by
    :func:`load_result`), .csv or .parquet (flat rows of :func:`layers_frame`)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".json":
        result.to_json(p)
    elif ext == ".csv":
        layers_frame(result).to_csv(p, index=False)
    elif ext == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            raise InputError("writing Parquet needs pyarrow (pip install pyarrow)") from None
        layers_frame(result).to_parquet(p, index=False)
    else:
        raise InputError(
            f"unknown per-layer export format {ext or '(none)'!r}: use " + ", ".join(LAYER_FORMATS),
            file=str(p),
        )
    return p


# ---------------------------------------------------------------------------------------
# Perfetto / Chrome trace-event JSON


@dataclass(frozen=True)
class _Copy:
    src: str
    dst: str
    tensor: str
    nbytes: int
    cycles: int


def _copies(r: LayerRecord) -> tuple[list[_Copy], list[_Copy]]:
    """The layer's copies (before it runs: its inputs; after: a graph output it produced on
    the NPU). Falls back to one copy when the notes do not account for transfer_cycles."""
    found = []
    for n in r.notes:
        m = _TRANSFER_NOTE.match(n)
        if m:
            found.append(_Copy(m[1], m[2], m[3], int(m[4]), int(m[5])))
    if sum(c.cycles for c in found) != r.transfer_cycles or (
        r.transfer_bytes and sum(c.nbytes for c in found) != r.transfer_bytes
    ):
        found = [_Copy("?", "?", "inputs", r.transfer_bytes, r.transfer_cycles)]
    side = r.engine.split(":")[0]
    before = [c for c in found if c.dst == side or c.dst == "?"]
    after = [c for c in found if c not in before]
    return before, after


def _short(name: str, width: int = 40) -> str:
    """A readable tensor/layer label: TFLite names join scopes with ';', keep the first."""
    first = name.split(";")[0]
    return first if len(first) <= width else "…" + first[-(width - 1) :]


def _layer_args(r: LayerRecord, clock_hz: float) -> dict[str, Any]:
    args = {
        "index": r.index,
        "layer": r.name,
        "op": r.op,
        "engine": r.engine,
        "precision": r.precision,
        "kernel": r.kernel,
        "macs": r.macs,
        "cycles": r.cycles,
        "compute_cycles": r.compute_cycles,
        "stall_cycles": r.stall_cycles,
        "clock_mhz": clock_hz / 1e6,
        "instructions": r.instructions,
        "energy_uj": r.energy_j * 1e6,
        "core_energy_uj": r.core_energy_j * 1e6,
        "memory_energy_uj": r.memory_energy_j * 1e6,
        "npu_energy_uj": r.npu_energy_j * 1e6,
        "traffic_bytes": r.traffic,
        "output_shape": "x".join(map(str, r.output_shape)),
    }
    if r.cache:
        args["cache"] = r.cache
    if r.cores > 1 or r.tiles:
        args |= {
            "cores": r.cores,
            "bank_conflict_cycles": r.bank_conflict_cycles,
            "barrier_cycles": r.barrier_cycles,
            "dma_stall_cycles": r.dma_stall_cycles,
            "tiles": r.tiles,
        }
    if r.transfer_bytes:
        args |= {"transfer_bytes": r.transfer_bytes, "transfer_cycles": r.transfer_cycles}
    if r.placement_reason:
        args["placement_reason"] = r.placement_reason
    if r.estimate:
        args["estimate"] = True
    return args


def trace_events(result: RunResult) -> dict[str, Any]:
    """The run as a trace-event JSON object (``{"traceEvents": [...], ...}``), ts/dur in µs.

    Tracks (threads of one process named after the model and device): one per engine in
    order of first use, "DMA / transfers" when a copy happens, and on cluster devices one
    "cluster core k" track per worker core (the same layer slice on each core the layer was
    split over, ``LayerRecord.cores``, mirroring the engine track)."""
    cpu_clk = result.clock_hz
    engines = list(dict.fromkeys(r.engine for r in result.layers))
    tracks = list(engines)
    if any(r.transfer_cycles or r.transfer_bytes for r in result.layers):
        tracks.append(TRANSFER_TRACK)
    n_cluster = max((r.cores for r in result.layers if r.cores > 1), default=0)
    tracks += [f"cluster core {k}" for k in range(n_cluster)]
    tid = {name: k + 1 for k, name in enumerate(tracks)}
    pid = 1
    ev: list[dict[str, Any]] = [
        {
            "ph": "M",
            "pid": pid,
            "tid": 0,
            "ts": 0,
            "name": "process_name",
            "args": {"name": f"{result.model} on {result.device}"},
        }
    ]
    for name, t in tid.items():
        ev.append(
            {
                "ph": "M",
                "pid": pid,
                "tid": t,
                "ts": 0,
                "name": "thread_name",
                "args": {"name": name},
            }
        )
        ev.append(
            {
                "ph": "M",
                "pid": pid,
                "tid": t,
                "ts": 0,
                "name": "thread_sort_index",
                "args": {"sort_index": t},
            }
        )

    def copy_slice(c: _Copy, r: LayerRecord, ts: float) -> float:
        dur = c.cycles / cpu_clk * 1e6
        ev.append(
            {
                "ph": "X",
                "pid": pid,
                "tid": tid[TRANSFER_TRACK],
                "ts": ts,
                "dur": dur,
                "name": f"{c.src}->{c.dst} {_short(c.tensor)}" if c.src != "?" else "transfer",
                "cat": "transfer",
                "args": {
                    "layer": r.index,
                    "tensor": c.tensor,
                    "bytes": c.nbytes,
                    "cpu_cycles": c.cycles,
                },
            }
        )
        return ts + dur

    ts = 0.0
    for r in result.layers:
        clk = r.clock_hz or cpu_clk
        before, after = _copies(r) if (r.transfer_cycles or r.transfer_bytes) else ([], [])
        for c in before:
            ts = copy_slice(c, r, ts)
        dur = r.cycles / clk * 1e6
        args = _layer_args(r, clk)
        name = f"{r.index} {r.op}"
        ev.append(
            {
                "ph": "X",
                "pid": pid,
                "tid": tid[r.engine],
                "ts": ts,
                "dur": dur,
                "name": name,
                "cat": "layer",
                "args": args,
            }
        )
        if n_cluster and r.engine.startswith("cpu:"):  # cluster layers: 1..N worker cores
            for k in range(r.cores):
                ev.append(
                    {
                        "ph": "X",
                        "pid": pid,
                        "tid": tid[f"cluster core {k}"],
                        "ts": ts,
                        "dur": dur,
                        "name": name,
                        "cat": "cluster",
                        "args": {"index": r.index, "core": k, "of_cores": r.cores},
                    }
                )
        ts += dur
        for c in after:
            ts = copy_slice(c, r, ts)
    return {
        "traceEvents": json.loads(json.dumps(ev, default=_jsonable)),
        "displayTimeUnit": "ns",
        "otherData": {
            "model": result.model,
            "device": result.device,
            "cpu_clock_hz": cpu_clk,
            "latency_us": result.latency_s * 1e6,
            "energy_uj": result.energy_j * 1e6,
            "generator": "mcusim",
        },
    }


def write_trace(result: RunResult, path: str | Path) -> Path:
    """Write the Perfetto / chrome://tracing JSON (open it in ui.perfetto.dev)."""
    p = Path(path)
    p.write_text(json.dumps(trace_events(result), default=_jsonable) + "\n")
    return p


def record_dicts(result: RunResult) -> list[dict[str, Any]]:
    """The layers as plain dicts (JSON-ready), e.g. for a notebook."""
    return [asdict(r) | {"output_shape": list(r.output_shape)} for r in result.layers]
