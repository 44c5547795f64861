"""Per-layer cross-check of the simulator against the compiled firmware.

For each selected layer the layer's C twin (kernels/c, built for the device's core) runs in
the Unicorn harness on that layer's inputs, which come from the simulator's own compute of
the preceding layers (so a layer is judged alone, never on an earlier layer's error). The
report gives, per layer: outputs bit-exact (else the first mismatching flat index with the
firmware and simulator values, and how many differ), instructions executed, the
simulator's cycles for the layer (mcusim.runner device costs: compute + memory stalls),
the firmware's trace-driven cycles (mcusim.firmware.trace) and their difference in
percent of the simulator's.

Like for like: the firmware runs one layer alone, caches cold, with its buffers where the
harness put them. On a device with caches (or a flash accelerator) the simulator's cycles
that are compared are therefore its schedule's address stream simulated the same way:
alone, cold, each stream at the twin's buffer and the code at the twin's entry
(``sim_cycles``). The layer's cycles inside the whole model run, as ``mcusim run`` reports
them (caches warm from the previous layer, the runner's memory layout), are
``sim_model_cycles``; without caches the two are the same number.

The twin follows the device's ISA family: on ``rv32-xpulpnn`` / ``rv32-xpulpv2`` conv2d
and fully_connected run the Xpulp twin (kernels/c/pulp.c, pv.sdot* emulated by the RV32
harness) where its dot widths fit (mcusim.firmware.layer.pulp_bits); W1A1 layers run the
XNOR-popcount twin, other sub-byte conv / FC the CMix-style twin.

``--elf F --entry FN`` runs a user's own firmware function instead of the bundled twin:
it is called exactly like the twin of the layer's op kind (one pointer to the argument
struct of kernels/c/mcusim_nn.h, documented in kernels/c/README.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, UserError


@dataclass
class LayerCheck:
    index: int
    name: str
    op: str
    sim_kernel: str
    twin: str | None = None  # C path that ran, None when skipped
    bit_exact: bool | None = None
    mismatch: dict | None = None  # {"index", "firmware", "simulator", "count"}
    instructions: int | None = None  # firmware, executed
    sim_instructions: int | None = None
    sim_cycles: int | None = None  # simulator: compute + stalls, as the firmware ran it
    sim_model_cycles: int | None = None  # simulator: the layer inside the model run
    sim_compute_cycles: int | None = None
    fw_cycles: int | None = None  # firmware trace: compute + stalls
    fw_compute_cycles: int | None = None
    delta_pct: float | None = None  # (fw - sim) / sim * 100
    compute_delta_pct: float | None = None  # the same on zero-wait-state compute cycles
    skipped: str | None = None
    unmodeled: dict = field(default_factory=dict)  # mnemonics the trace could not time


@dataclass
class CrosscheckReport:
    model: str
    device: str
    core: str
    compiler: str
    compiler_version: str
    flags: tuple[str, ...]
    layers: list[LayerCheck]

    @property
    def checked(self) -> list[LayerCheck]:
        return [r for r in self.layers if r.skipped is None]

    @property
    def all_bit_exact(self) -> bool:
        return all(r.bit_exact for r in self.checked)

    @property
    def max_abs_delta_pct(self) -> float | None:
        ds = [abs(r.delta_pct) for r in self.checked if r.delta_pct is not None]
        return max(ds) if ds else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["all_bit_exact"] = self.all_bit_exact
        d["max_abs_delta_pct"] = self.max_abs_delta_pct
        return d

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def _parse_layers(spec: str | None, n: int) -> list[int] | None:
    if spec is None:
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            idx = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise UserError(f"--layers {spec!r}: expected indices like 0,3 or 2-5") from None
        for i in idx:
            if not 0 <= i < n:
                raise UserError(f"--layers: layer {i} out of range (model has {n} layers)")
            out.append(i)
    return sorted(set(out))


def _isa_family(dev) -> str | None:
    """The device core's ISA family as kernels/schedules names it (None if unknown)."""
    from mcusim.kernels.schedules import ISA_ALIASES

    return ISA_ALIASES.get(str(dev.core.isa).lower())


def crosscheck(
    model,
    device="stm32l4r5",
    layers=None,
    cc: str = "zig",
    seed: int = 0,
    inputs=None,
    elf: str | Path | None = None,
    entry: str | None = None,
    budget: int | None = None,
) -> CrosscheckReport:
    """Cross-check ``layers`` (indices; None = all) of ``model`` on ``device``.

    ``cc``: "zig" | "gcc" (the twins' compiler). ``elf``/``entry``: run a user's function
    (same calling convention as the twin of each layer's op kind) instead of the twins."""
    from mcusim.devices.loader import load_device
    from mcusim.devices.model import Device

    from .cache import needs_simulation
    from .firmware import Tracer, harness_for
    from .firmware.layer import (
        PULP_ENTRY,
        build_twins,
        marshal,
        run_firmware,
        run_qemu,
        supports,
    )
    from .inputs import check_inputs, random_inputs
    from .model import Model, load
    from .observed import observe
    from .runner import compute_outputs, device_costs

    m = model if isinstance(model, Model) else load(model)
    dev = device if isinstance(device, Device) else load_device(device)
    g = m.graph
    if isinstance(layers, str):
        layers = _parse_layers(layers, len(g.ops))
    sel = list(range(len(g.ops))) if layers is None else sorted(set(layers))
    for i in sel:
        if not 0 <= i < len(g.ops):
            raise UserError(f"layer {i} out of range (model has {len(g.ops)} layers)")
    if (elf is None) != (entry is None):
        raise UserError("--elf and --entry go together")
    core = dev.core.name
    from .firmware.build import target

    tgt = target(core)
    use_qemu = tgt.arch == "arm" and tgt.unicorn_cpu is None  # Cortex-M55/M85: Helium
    if use_qemu and elf is not None:
        raise UserError(f"--elf runs in the Unicorn harness, which has no {core} model")
    if elf is not None:
        if not Path(elf).is_file():
            raise InputError("firmware ELF not found", file=str(elf))
        elf_path, compiler, version, flags = Path(elf), "user", "", ()
    elif use_qemu:
        from .firmware.build import compiler_version

        elf_path, compiler, version, flags = None, cc, compiler_version(cc, tgt), ()
    else:
        res = build_twins(core, cc)
        elf_path, compiler, version, flags = res.elf, res.compiler, res.version, res.flags
    h = None if use_qemu else harness_for(elf_path, core)
    xs = random_inputs(g, seed) if inputs is None else check_inputs(g, inputs)
    env = compute_outputs(m, xs)
    # softmax and FC timed on the same data
    dc = device_costs(m, dev, observe(g, env, [p.params for p in m.prepared()]))
    prepared = m.prepared()
    tracer = Tracer(device=dev)
    cached = needs_simulation(dev)
    family = _isa_family(dev)
    rows: list[LayerCheck] = []
    for i in sel:
        op = g.ops[i]
        tm, cost = dc.timings[i], dc.costs[i]
        row = LayerCheck(
            index=i,
            name=op.name,
            op=op.kind,
            sim_kernel=tm.kernel,
            sim_instructions=int(cost.instructions),
            sim_cycles=int(cost.cycles),
            sim_model_cycles=int(cost.cycles),
            sim_compute_cycles=int(cost.compute_cycles),
        )
        rows.append(row)
        why = supports(g, op)
        if why is not None:
            row.skipped = why
            continue
        p = prepared[i]
        call = marshal(g, op, p.params, [env[n] for n in p.inputs], family=family)
        if entry is not None:
            from dataclasses import replace

            call = replace(call, entry=entry)
        if use_qemu:  # whole firmware in QEMU: outputs only, no cycle model
            out, value = run_qemu(call, core=tgt.name, cc=cc)
        else:
            run = run_firmware(call, h, tracer=tracer, budget=budget)
            out, value = run.output, run.value
        if value != 0:
            raise UserError(f"layer {i} ({op.name}): {call.entry} returned {value} (bad arguments)")
        if use_qemu:
            row.twin = f"Helium build of {call.entry} (QEMU: no cycles)"
        elif tgt.arch == "riscv" and call.entry == PULP_ENTRY[0]:
            row.twin = f"{call.path} ({family})"
        elif tgt.arch == "riscv":
            row.twin = f"portable C of {call.entry} on RV32IMC ({call.path}; no Xpulp twin)"
        else:
            row.twin = call.path
        ref = np.asarray(env[op.outputs[0]]).reshape(-1)
        got = out.reshape(-1)
        diff = np.flatnonzero(got != ref)
        row.bit_exact = diff.size == 0
        if diff.size:
            j = int(diff[0])
            row.mismatch = dict(
                index=j, firmware=int(got[j]), simulator=int(ref[j]), count=int(diff.size)
            )
        if use_qemu:
            continue
        tr = run.result.trace
        if cached:
            row.sim_cycles = _as_run_cycles(dev, tm, call, run, h)
        row.instructions = int(tr.instructions)
        row.fw_cycles = int(tr.cycles)
        row.fw_compute_cycles = int(tr.compute_cycles)
        row.unmodeled = dict(tr.unmodeled)
        if row.sim_cycles:
            row.delta_pct = round(100.0 * (row.fw_cycles - row.sim_cycles) / row.sim_cycles, 2)
        if row.sim_compute_cycles:
            row.compute_delta_pct = round(
                100.0 * (row.fw_compute_cycles - row.sim_compute_cycles) / row.sim_compute_cycles,
                2,
            )
    return CrosscheckReport(g.name, dev.name, core, compiler, version, tuple(flags), rows)


def _as_run_cycles(dev, tm, call, run, harness) -> int:
    """The simulator's cycles for the layer's schedule run as the firmware ran the twin:
    alone, caches cold, streams at the twin's buffers, code at its entry."""
    from .cache import simulate_at
    from .costs import layer_cost
    from .firmware.layer import stream_layout

    bases, code_base = stream_layout(call, run, harness, dev)
    stats = simulate_at(tm.program, dev, bases, code_base)
    cost = layer_cost(
        dev, tm.compute_cycles, tm.instructions, tm.code_bytes, tm.streams, {}, cache=stats
    )
    return int(cost.cycles)


def format_table(rep: CrosscheckReport):
    from rich.table import Table

    t = Table(
        title=f"crosscheck {rep.model} on {rep.device} ({rep.core}, {rep.compiler} "
        f"{rep.compiler_version})"
    )
    for col, j in [
        ("#", "right"),
        ("op", "left"),
        ("bit-exact", "left"),
        ("fw instr", "right"),
        ("sim cycles (model)", "right"),
        ("sim cycles (as run)", "right"),
        ("fw cycles", "right"),
        ("delta %", "right"),
        ("compute delta %", "right"),
    ]:
        t.add_column(col, justify=j)
    for r in rep.layers:
        if r.skipped:
            t.add_row(str(r.index), r.op, f"skipped: {r.skipped}", "", "", "", "", "", "")
            continue
        exact = "yes" if r.bit_exact else (
            f"NO: [{r.mismatch['index']}] fw {r.mismatch['firmware']} sim "
            f"{r.mismatch['simulator']} ({r.mismatch['count']} differ)"
        )  # fmt: skip
        t.add_row(
            str(r.index),
            r.op,
            exact,
            f"{r.instructions:,}" if r.instructions is not None else "-",
            f"{r.sim_model_cycles:,}",
            f"{r.sim_cycles:,}",
            f"{r.fw_cycles:,}" if r.fw_cycles is not None else "-",
            f"{r.delta_pct:+.1f}" if r.delta_pct is not None else "",
            f"{r.compute_delta_pct:+.1f}" if r.compute_delta_pct is not None else "",
        )
    return t


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .model import load

    m = load(args.model)
    layers = _parse_layers(args.layers, len(m.graph.ops))
    rep = crosscheck(
        m,
        args.device,
        layers=layers,
        cc=args.cc,
        seed=args.seed,
        elf=args.elf,
        entry=args.entry,
    )
    Console().print(format_table(rep))
    n_ok = sum(1 for r in rep.checked if r.bit_exact)
    mx = rep.max_abs_delta_pct
    print(
        f"{n_ok}/{len(rep.checked)} checked layers bit-exact; max |delta| {mx:.1f} %"
        if mx is not None
        else "no layer checked"
    )
    if args.json:
        rep.to_json(args.json)
    return 0 if rep.all_bit_exact else 1


def add_crosscheck_parser(subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser(
        "crosscheck",
        help="run each layer's C twin in firmware (Unicorn) and compare outputs and cycles",
    )
    c.add_argument("model", help=".tflite / .qnn model")
    c.add_argument("--device", default="stm32l4r5", help="device name or TOML file")
    c.add_argument("--layers", help="layer indices, e.g. 0,3 or 2-5 (default: all)")
    c.add_argument("--cc", choices=("zig", "gcc"), default="zig", help="twin compiler")
    c.add_argument("--seed", type=int, default=0, help="seed of the random model inputs")
    c.add_argument("--json", metavar="FILE", help="write the report as JSON")
    c.add_argument("--elf", help="run your own firmware ELF instead of the bundled twins")
    c.add_argument(
        "--entry", help="function in --elf, called like the layer's twin (kernels/c/README.md)"
    )
    c.set_defaults(func=cmd_crosscheck)
    return c
