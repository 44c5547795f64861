"""A parameterized NPU tile for accelerators whose internals are not public (STM32N6
Neural-ART, GAP9 NE16, MCX N947 eIQ Neutron): a MAC array with a utilization model, a
list of supported ops with constraints, and memories with bandwidth and latency.

Every number comes from the device file's ``[npu]`` table, where each parameter carries a
label (``measured``, ``published`` or ``estimate``) in ``[npu.labels]``; a parameter
without a label is refused. Every cost this tile returns is marked ``estimate=True``.
The model is the first-order roofline Vela uses for Ethos-U (docs/npu-generic.md):

    compute = setup + ceil(padded MACs / (peak MACs/cycle x efficiency))
    memory  = max over memories of (bytes moved / bytes per cycle + latency)
    cycles  = max(compute, memory)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mcusim.errors import DeviceError, FitError
from mcusim.stats import op_macs

from .base import NpuLayerCost, NpuSupport, NpuTile

LABELS = ("measured", "published", "estimate")
MAC_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected")
POOL_KINDS = ("avg_pool2d", "max_pool2d")
ROLES = ("activations", "weights", "staging")
# keys of an [npu.ops.<kind>] table that are constraints or rates (everything else refused)
_OP_KEYS = {
    "kernels",
    "max_kernel",
    "strides",
    "max_stride",
    "dilation",
    "max_channels",
    "depth_multiplier",
    "granularity",
    "efficiency",
    "efficiency_by_kernel",
    "peak_by_kernel",
    "elements_per_cycle",
    "activations",
    "free",
}
# rates and utilization constants of an op: they need their own label (the op entry's
# label says where its support comes from, not where these numbers come from)
_RATE_KEYS = {
    "granularity",
    "efficiency",
    "efficiency_by_kernel",
    "peak_by_kernel",
    "elements_per_cycle",
}


@dataclass
class GenericPlan:
    """Where each NPU layer's tensors live: op name -> role -> memory name."""

    homes: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class NpuMemory:
    name: str
    holds: tuple[str, ...]
    bytes_per_cycle: float  # NPU clock cycles
    latency_cycles: int  # paid once per layer that touches the memory
    size: int = 0  # bytes; 0 = not checked (staging buffers, large external memories)
    read_pj_per_byte: float = 0.0
    write_pj_per_byte: float = 0.0


def _leaves(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _leaves(v, key + ".")
        else:
            out.append((key, v))
    return out


def _bits(t) -> int:
    return t.dtype.bits


def _ceil_to(n: int, g: int) -> int:
    return -(-n // g) * g


class GenericTile(NpuTile):
    """The generic tile (device file ``[npu] kind = "generic"``)."""

    kind = "generic"

    def __init__(self, config: dict[str, Any], device: Any, origin: str = ""):
        super().__init__(config, device, origin)
        self.origin = origin or getattr(device, "source", "") or "<device>"
        self.name = str(config.get("name", "NPU"))
        self.labels: dict[str, str] = dict(config.get("labels", {}))
        self.macs_per_cycle: dict[str, float] = {
            k: float(v) for k, v in config.get("macs_per_cycle", {}).items()
        }
        self.activation_bits: tuple[int, ...] = tuple(config.get("activation_bits", (8,)))
        self.setup_cycles = int(config.get("setup_cycles", 0))
        self.power_w = float(config.get("power_w", 0.0))
        self.pj_per_mac = float(config.get("pj_per_mac", 0.0))
        self.ops: dict[str, dict[str, Any]] = dict(config.get("ops", {}))
        tr = config.get("transfer", {})
        self.transfer_bytes_per_cycle = float(tr.get("cpu_bytes_per_cycle", 0.0))
        self.transfer_setup_cycles = int(tr.get("setup_cycles", 0))
        self.memories = tuple(self._memory(m) for m in config.get("memory", []))
        self._check()

    # -- configuration ----------------------------------------------------------------
    def _err(self, key: str, what: str) -> DeviceError:
        return DeviceError(f"{self.origin}: key 'npu.{key}': {what}")

    def _memory(self, m: dict[str, Any]) -> NpuMemory:
        name = m.get("name")
        if not isinstance(name, str):
            raise self._err("memory.name", "every [[npu.memory]] needs a name")
        holds = tuple(m.get("holds", ()))
        for role in holds:
            if role not in ROLES:
                raise self._err(f"memory.{name}.holds", f"unknown role {role!r}; roles: {ROLES}")
        bpc = float(m.get("bytes_per_cycle", 0))
        if bpc <= 0:
            raise self._err(f"memory.{name}.bytes_per_cycle", "must be > 0")
        return NpuMemory(
            name,
            holds,
            bpc,
            int(m.get("latency_cycles", 0)),
            int(m.get("size", 0)),
            float(m.get("read_pj_per_byte", 0.0)),
            float(m.get("write_pj_per_byte", 0.0)),
        )

    def _check(self) -> None:
        if self.clock_hz <= 0:
            raise self._err("clock_hz", "missing or not > 0")
        if not self.macs_per_cycle or "int8" not in self.macs_per_cycle:
            raise self._err("macs_per_cycle", "needs at least an int8 entry (MACs per cycle)")
        for role in ("activations", "weights"):
            if not any(role in m.holds for m in self.memories):
                raise self._err("memory", f"no [[npu.memory]] holds {role!r}")
        for kind, spec in self.ops.items():
            unknown = set(spec) - _OP_KEYS
            if unknown:
                raise self._err(f"ops.{kind}", f"unknown keys {sorted(unknown)}")
            if kind not in MAC_KINDS and not spec.get("free") and "elements_per_cycle" not in spec:
                raise self._err(f"ops.{kind}", "non-MAC op needs elements_per_cycle or free")
        for key, label in self.labels.items():
            if not isinstance(label, str) or label.split(":", 1)[0].strip() not in LABELS:
                raise self._err(f"labels.{key}", f"label must start with one of {LABELS}")
        missing = [k for k, _ in self.parameters() if self.label_of(k) is None]
        if missing:
            raise self._err("labels", f"parameters without a source label: {', '.join(missing)}")

    def parameters(self) -> list[tuple[str, Any]]:
        """Every parameter of the tile (dotted key, value): the numbers and the op list."""
        skip = {"kind", "name", "labels", "notes", "memory", "ops"}
        out = [(k, v) for k, v in _leaves(self.config) if k.split(".")[0] not in skip]
        for m in self.config.get("memory", []):
            out += [
                (f"memory.{m['name']}.{k}", v) for k, v in m.items() if k not in ("name", "holds")
            ]
        for kind, spec in self.ops.items():
            out.append((f"ops.{kind}", "supported"))
            out += _leaves(spec, f"ops.{kind}.")
        return out

    def label_of(self, key: str) -> str | None:
        """The label of a parameter: its own, else the nearest labelled parent key."""
        parts = key.split(".")
        stop = 3 if parts[0] == "ops" and len(parts) > 2 and parts[2] in _RATE_KEYS else 1
        for n in range(len(parts), stop - 1, -1):
            k = ".".join(parts[:n])
            if k in self.labels:
                return self.labels[k]
        return None

    def parameter_table(self) -> list[tuple[str, Any, str, str]]:
        """(parameter, value, label, source) rows for reports and docs."""
        rows = []
        for k, v in self.parameters():
            lab = self.label_of(k) or ""
            kind, _, src = lab.partition(":")
            rows.append((k, v, kind.strip(), src.strip()))
        return rows

    # -- what runs where ----------------------------------------------------------------
    def _no(self, op, why: str) -> NpuSupport:
        return NpuSupport(False, f"{self.name}: {why}")

    def supports(self, graph, op) -> NpuSupport:
        spec = self.ops.get(op.kind)
        if spec is None:
            return self._no(
                op, f"op kind {op.kind!r} is not supported (supported: {', '.join(self.ops)})"
            )
        for t in graph.op_inputs(op) + graph.op_outputs(op):
            if t is None or t.is_const:
                continue
            if t.dtype.is_float or _bits(t) not in self.activation_bits:
                return self._no(
                    op,
                    f"tensor {t.name!r} is {t.dtype.name}; the tile takes "
                    f"{'/'.join(str(b) for b in self.activation_bits)}-bit integer activations",
                )
        attrs = op.attrs
        if getattr(attrs, "requant", "fixed_point") != "fixed_point":
            return self._no(op, "threshold requantization is not supported (fixed-point only)")
        act = getattr(attrs, "activation", "none")
        allowed_act = spec.get("activations")
        if allowed_act is not None and act not in allowed_act:
            return self._no(op, f"fused activation {act!r} not in {allowed_act}")
        if op.kind in MAC_KINDS:
            prec = self._precision(graph, op)
            if prec not in self.macs_per_cycle:
                return self._no(
                    op,
                    f"{prec} weights are not supported (MAC array precisions: "
                    f"{', '.join(self.macs_per_cycle)})",
                )
        if op.kind in ("conv2d", "depthwise_conv2d") or op.kind in POOL_KINDS:
            why = self._window_check(graph, op, spec)
            if why:
                return self._no(op, why)
        max_ch = spec.get("max_channels")
        if max_ch is not None:
            for t in graph.op_inputs(op) + graph.op_outputs(op):
                if t is not None and not t.is_const and t.shape and t.shape[-1] > max_ch:
                    return self._no(
                        op, f"{t.shape[-1]} channels in {t.name!r} exceed the tile's {max_ch}"
                    )
        return NpuSupport(True)

    def _window_check(self, graph, op, spec) -> str:
        attrs = op.attrs
        if op.kind in POOL_KINDS:
            kh, kw = attrs.filter
        else:
            w = graph.tensor(op.inputs[1])
            kh, kw = w.shape[1], w.shape[2]
        kernels = spec.get("kernels")
        if kernels is not None and [kh, kw] not in [list(k) for k in kernels]:
            allowed = ", ".join(f"{a}x{b}" for a, b in kernels)
            return f"kernel {kh}x{kw} not supported (kernels: {allowed})"
        mk = spec.get("max_kernel")
        if mk is not None and max(kh, kw) > mk:
            return f"kernel {kh}x{kw} exceeds the tile's {mk}x{mk}"
        sh, sw = attrs.stride
        strides = spec.get("strides")
        if strides is not None and (sh not in strides or sw not in strides):
            return f"stride {sh}x{sw} not supported (strides: {strides})"
        ms = spec.get("max_stride")
        if ms is not None and max(sh, sw) > ms:
            return f"stride {sh}x{sw} exceeds the tile's {ms}"
        dil = getattr(attrs, "dilation", (1, 1))
        if tuple(dil) != (1, 1) and not spec.get("dilation", False):
            return f"dilation {dil[0]}x{dil[1]} not supported"
        dm = spec.get("depth_multiplier")
        if op.kind == "depthwise_conv2d" and dm is not None and attrs.depth_multiplier not in dm:
            return f"depth multiplier {attrs.depth_multiplier} not supported ({dm})"
        return ""

    def _precision(self, graph, op) -> str:
        w = graph.tensor(op.inputs[1])
        return "binary" if w.dtype.binary else f"int{_bits(w)}"

    def _working_set(self, graph, op) -> tuple[int, int, int]:
        """(activation bytes read, weight/constant bytes read, bytes written)."""
        act = sum(t.nbytes for t in graph.op_inputs(op) if t is not None and not t.is_const)
        const = sum(t.nbytes for t in graph.op_inputs(op) if t is not None and t.is_const)
        out = sum(t.nbytes for t in graph.op_outputs(op))
        return act, const, out

    def plan(self, graph, ops: list) -> GenericPlan:
        plan = GenericPlan()
        weight_mem = self._home("weights", 0, None)
        total_w = 0
        for op in ops:
            act, const, out = self._working_set(graph, op)
            plan.homes[op.name] = {
                "activations": self._home("activations", act + out, op).name,
                "weights": weight_mem.name,
            }
            total_w += const
        if weight_mem.size and total_w > weight_mem.size:
            raise FitError(
                f"{self.name} weight memory {weight_mem.name!r}: needs {total_w} B of "
                f"constants, has {weight_mem.size} B",
                file=self.origin,
            )
        return plan

    def _home(self, role: str, nbytes: int, op) -> NpuMemory:
        cands = [m for m in self.memories if role in m.holds]
        for m in cands:
            if not m.size or nbytes <= m.size:
                return m
        biggest = max(cands, key=lambda m: m.size)
        raise FitError(
            f"{self.name} {role} memory {biggest.name!r}: needs {nbytes} B (inputs + outputs), "
            f"has {biggest.size} B",
            file=self.origin,
            layer=op.label if op is not None else None,
        )

    # -- what it costs ------------------------------------------------------------------
    def padded_macs(self, graph, op) -> tuple[int, int, float]:
        """(MACs, MACs the array performs after padding to its granularity, peak MACs/cycle
        x efficiency for this op). The utilization is MACs / padded x efficiency."""
        spec = self.ops[op.kind]
        macs = op_macs(graph, op)
        out = graph.tensor(op.outputs[0])
        w = graph.tensor(op.inputs[1])
        g = spec.get("granularity", {})
        if op.kind == "fully_connected":
            c_in, c_out = w.shape[1], w.shape[0]
            rows = macs // max(c_in * c_out, 1)  # batch rows
            dims = {"in": c_in, "out": c_out, "h": rows, "w": 1}
            kernel = "1x1"
        else:
            _, oh, ow, oc = out.shape
            kh, kw = w.shape[1], w.shape[2]
            c_in = oc if op.kind == "depthwise_conv2d" else w.shape[3]
            dims = {"in": c_in, "out": oc, "h": oh, "w": ow}
            kernel = f"{kh}x{kw}"
        ratio = 1.0
        for k, n in dims.items():
            gk = int(g.get(k, 1))
            if op.kind == "depthwise_conv2d" and k == "in":
                continue  # one input channel per output channel: padded with "out"
            ratio *= _ceil_to(n, gk) / n if n else 1.0
        padded = int(round(macs * ratio))
        prec = self._precision(graph, op)
        peak = self.macs_per_cycle[prec]
        by_kernel = spec.get("peak_by_kernel", {}).get(kernel)
        if by_kernel is not None and prec in by_kernel:
            peak = float(by_kernel[prec])
        eff = float(spec.get("efficiency_by_kernel", {}).get(kernel, spec.get("efficiency", 1.0)))
        return macs, padded, peak * eff

    def _work_elements(self, graph, op) -> int:
        """Elements a non-MAC op processes (pooling: output x window; mean: input)."""
        out = graph.tensor(op.outputs[0])
        if op.kind in POOL_KINDS:
            fh, fw = op.attrs.filter
            n = out.size * fh * fw
        elif op.kind == "mean":
            n = graph.tensor(op.inputs[0]).size
        else:
            n = out.size
        g = int(self.ops[op.kind].get("granularity", {}).get("out", 1))
        if g > 1 and out.shape:
            c = out.shape[-1]
            n = n // c * _ceil_to(c, g)
        return n

    def layer_cost(self, graph, op, plan: Any = None) -> NpuLayerCost:
        sup = self.supports(graph, op)
        if not sup.ok:
            raise FitError(sup.reason, file=self.origin, layer=op.label)
        spec = self.ops[op.kind]
        notes = [f"estimate: {self.name} generic tile, parameters labelled in {self.origin}"]
        if spec.get("free"):
            notes.append("layout-only op: no data moved")
            return NpuLayerCost(0, 0, 0, {}, 0.0, notes, estimate=True)
        macs = padded = 0
        if op.kind in MAC_KINDS:
            macs, padded, rate = self.padded_macs(graph, op)
            compute = self.setup_cycles + math.ceil(padded / rate)
            notes.append(
                f"utilization {macs / (compute * self.macs_per_cycle['int8']):.2f} of the int8 "
                f"peak ({macs:,} MACs, {padded:,} after padding, {rate:g} MACs/cycle sustained)"
            )
        else:
            work = self._work_elements(graph, op)
            compute = self.setup_cycles + math.ceil(work / float(spec["elements_per_cycle"]))
        homes = (plan.homes.get(op.name) if isinstance(plan, GenericPlan) else None) or {}
        act, const, out = self._working_set(graph, op)
        act_mem = homes.get("activations") or self._home("activations", act + out, op).name
        w_mem = homes.get("weights") or self._home("weights", 0, None).name
        traffic: dict[str, dict[str, int]] = {}

        def add(mem: str, read: int, write: int) -> None:
            if read or write:
                t = traffic.setdefault(mem, {"read": 0, "write": 0})
                t["read"] += read
                t["write"] += write

        add(act_mem, act, out)
        add(w_mem, const, 0)
        for m in self.memories:
            if "staging" in m.holds:
                add(m.name, act + const, out)
        memory = 0
        bound = ""
        energy_pj = self.pj_per_mac * padded
        by_name = {m.name: m for m in self.memories}
        for name, t in traffic.items():
            m = by_name[name]
            cyc = math.ceil((t["read"] + t["write"]) / m.bytes_per_cycle) + m.latency_cycles
            if cyc > memory:
                memory, bound = cyc, name
            energy_pj += t["read"] * m.read_pj_per_byte + t["write"] * m.write_pj_per_byte
        cycles = max(compute, memory)
        if memory > compute:
            notes.append(f"memory-bound on {bound} ({memory} vs {compute} compute cycles)")
        energy = self.power_w * cycles / self.clock_hz + energy_pj * 1e-12
        return NpuLayerCost(cycles, compute, memory, traffic, energy, notes, estimate=True)

    def transfer_cycles(self, nbytes: int) -> int:
        """CPU cycles to hand ``nbytes`` between CPU and tile; 0 when they share memory."""
        if self.transfer_bytes_per_cycle <= 0 or nbytes <= 0:
            return 0
        return self.transfer_setup_cycles + math.ceil(nbytes / self.transfer_bytes_per_cycle)
