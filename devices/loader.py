"""Load and check device TOML files (bundled ones by name, or a user's file by path)."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mcusim.errors import DeviceError

from .model import Cache, Cluster, Core, Device, Dma, Engine, FlashAccelerator, Memory, Power, Tcdm

_PACKAGE = "mcusim.devices"
_MEMORY_KINDS = ("flash", "sram", "tcm", "external")
_REPLACEMENT = ("lru", "random", "round_robin")
_HOLDS = ("constants", "arena", "code")


def bundled_devices() -> list[str]:
    """Names of the device files shipped with mcusim."""
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files(_PACKAGE).iterdir()
        if p.name.endswith(".toml")
    )


def load_device(name_or_path: str | Path) -> Device:
    """A bundled device by name (e.g. "stm32l4r5") or a TOML file by path."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s or Path(s).suffix:
        path = Path(s)
        if not path.is_file():
            raise DeviceError(f"device file {s} not found")
        text = path.read_bytes()
        origin = str(path)
    else:
        res = resources.files(_PACKAGE) / f"{s}.toml"
        if not res.is_file():
            raise DeviceError(
                f"unknown device {s!r}; known devices: {', '.join(bundled_devices())} "
                "(or give a path to a .toml file)"
            )
        text = res.read_bytes()
        origin = f"{s}.toml"
    return _parse(text, origin)


@lru_cache(maxsize=64)
def _parse(text: bytes, origin: str) -> Device:
    """Parse once per distinct file content: sweeps load the same device thousands of times."""
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DeviceError(f"{origin}: not valid TOML: {e}") from None
    return device_from_dict(data, origin)


class _Reader:
    """Typed access to a TOML table that names the file and the dotted key on error."""

    def __init__(self, data: dict[str, Any], origin: str, prefix: str):
        self.data, self.origin, self.prefix = data, origin, prefix

    def _err(self, key: str, what: str) -> DeviceError:
        return DeviceError(f"{self.origin}: key '{self.prefix}{key}': {what}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self._err(key, "missing")
            return default
        v = self.data[key]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or (isinstance(v, bool) and typ in (int, float)):
            tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self._err(key, f"expected {tname}, got {type(v).__name__} {v!r}")
        return v

    def positive(self, key: str, typ: type = int, default: Any = ...) -> Any:
        v = self.get(key, typ, default)
        if v is not None and v <= 0:
            raise self._err(key, f"must be > 0, got {v}")
        return v

    def non_negative(self, key: str, typ: type = int, default: Any = ...) -> Any:
        v = self.get(key, typ, default)
        if v < 0:
            raise self._err(key, f"must be >= 0, got {v}")
        return v

    def table(self, key: str, default: Any = ...) -> _Reader | None:
        v = self.get(key, dict, default)
        return None if v is None else _Reader(v, self.origin, f"{self.prefix}{key}.")


def device_from_dict(data: dict[str, Any], origin: str) -> Device:
    top = _Reader(data, origin, "")
    dev = top.table("device")
    core_t = top.table("core")
    power_t = top.table("power")
    core = Core(
        name=core_t.get("name", str),
        isa=core_t.get("isa", str),
        clock_hz=core_t.positive("clock_hz", float),
        icache=_cache(core_t.table("icache", None)),
        dcache=_cache(core_t.table("dcache", None)),
    )
    from mcusim.isa.timing import available_cores  # lazy: isa imports are heavier

    if core.name.lower() not in available_cores():
        raise DeviceError(
            f"{origin}: key 'core.name': unknown core {core.name!r}; "
            f"known: {', '.join(available_cores())}"
        )
    mems_raw = top.get("memory", list)
    if not mems_raw:
        raise DeviceError(f"{origin}: key 'memory': at least one [[memory]] table is needed")
    memories = []
    for i, m in enumerate(mems_raw):
        if not isinstance(m, dict):
            raise DeviceError(f"{origin}: key 'memory[{i}]': expected a table")
        r = _Reader(m, origin, f"memory[{i}].")
        kind = r.get("kind", str)
        if kind not in _MEMORY_KINDS:
            raise r._err("kind", f"must be one of {_MEMORY_KINDS}, got {kind!r}")
        holds = tuple(r.get("holds", list, []))
        for h in holds:
            if h not in _HOLDS:
                raise r._err("holds", f"entries must be among {_HOLDS}, got {h!r}")
        acc_t = r.table("accelerator", None)
        acc = None
        if acc_t is not None:
            unified = acc_t.get("unified", bool, False)
            icache_lines = acc_t.non_negative("icache_lines", int, 0)
            dcache_lines = acc_t.non_negative("dcache_lines", int, icache_lines if unified else 0)
            acc = FlashAccelerator(
                line_bytes=acc_t.positive("line_bytes"),
                icache_lines=icache_lines,
                dcache_lines=dcache_lines,
                prefetch=acc_t.get("prefetch", bool, False),
                ways=acc_t.non_negative("ways", int, 0),
                unified=unified,
            )
            for lines_key in ("icache_lines", "dcache_lines"):
                n_lines = getattr(acc, lines_key)
                if (
                    acc.ways
                    and n_lines
                    and (n_lines % acc.ways or (n_lines // acc.ways) & (n_lines // acc.ways - 1))
                ):
                    raise acc_t._err(
                        lines_key,
                        f"{n_lines} lines do not form power-of-two sets of {acc.ways} ways",
                    )
            if acc.unified and acc.dcache_lines != acc.icache_lines:
                raise acc_t._err(
                    "dcache_lines", "a unified accelerator has one set of lines: give icache_lines"
                )
        memories.append(
            Memory(
                name=r.get("name", str),
                kind=kind,
                size=r.positive("size"),
                width_bits=r.positive("width_bits"),
                wait_states=r.non_negative("wait_states"),
                read_pj_per_byte=r.non_negative("read_pj_per_byte", float),
                write_pj_per_byte=r.non_negative("write_pj_per_byte", float),
                holds=holds,
                accelerator=acc,
                cached=r.get("cached", bool, False),
                base_address=r.non_negative("base_address", int, 0),
            )
        )
    names = [m.name for m in memories]
    if len(set(names)) != len(names):
        raise DeviceError(f"{origin}: key 'memory': duplicate memory names {names}")
    for what in ("constants", "arena", "code"):
        if not any(what in m.holds for m in memories):
            raise DeviceError(f"{origin}: key 'memory': no memory has '{what}' in its 'holds'")
    power = Power(
        voltage_v=power_t.positive("voltage_v", float),
        active_ua_per_mhz=power_t.positive("active_ua_per_mhz", float),
    )
    cluster = _cluster(top.table("cluster", None), names, origin)
    fc_t = top.table("fabric_controller", None)
    fc = None
    if fc_t is not None:
        fc = Core(
            name=fc_t.get("name", str),
            isa=fc_t.get("isa", str),
            clock_hz=fc_t.positive("clock_hz", float),
        )
    return Device(
        name=dev.get("name", str),
        description=dev.get("description", str, ""),
        core=core,
        memories=tuple(memories),
        power=power,
        npu=top.get("npu", dict, None),
        notes=tuple(dev.get("notes", list, [])),
        source=origin,
        cluster=cluster,
        fabric_controller=fc,
        engines=_engines(top.get("engine", list, []), names, origin),
    )


def _cluster(t: _Reader | None, memory_names: list[str], origin: str) -> Cluster | None:
    """The optional [cluster] table (+ [cluster.l1], [cluster.dma]); docs/cluster.md."""
    if t is None:
        return None
    l1_t = t.table("l1")
    dma_t = t.table("dma")
    l1 = Tcdm(
        size=l1_t.positive("size"),
        banks=l1_t.positive("banks"),
        bank_width=l1_t.positive("bank_width", int, 4),
        interleaved=l1_t.get("interleaved", bool, True),
        read_pj_per_byte=l1_t.non_negative("read_pj_per_byte", float, 0.0),
        write_pj_per_byte=l1_t.non_negative("write_pj_per_byte", float, 0.0),
    )
    if l1.size % (l1.banks * l1.bank_width):
        raise l1_t._err("size", f"{l1.size} B is not a whole number of {l1.banks} banks")
    dma = Dma(
        bytes_per_cycle=dma_t.positive("bytes_per_cycle", float),
        setup_cycles=dma_t.non_negative("setup_cycles"),
        row_cycles=dma_t.non_negative("row_cycles", int, 0),
        channels=dma_t.positive("channels", int, 1),
    )
    l2 = t.get("l2", str)
    if l2 not in memory_names:
        raise t._err("l2", f"no memory named {l2!r} (memories: {', '.join(memory_names)})")
    c = Cluster(
        cores=t.positive("cores"),
        l1=l1,
        l2=l2,
        dma=dma,
        barrier_cycles=t.non_negative("barrier_cycles"),
        extra_cores=t.non_negative("extra_cores", int, 0),
        l1_reserved=t.non_negative("l1_reserved", int, 0),
    )
    if c.l1_reserved >= l1.size:
        raise t._err("l1_reserved", f"{c.l1_reserved} B leaves nothing of the {l1.size} B L1")
    return c


def _engines(raw: list, memory_names: list[str], origin: str) -> tuple[Engine, ...]:
    """Optional [[engine]] tables: further CPU engines (not timed until placement uses
    them, so their core names are checked then, not here)."""
    out = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise DeviceError(f"{origin}: key 'engine[{i}]': expected a table")
        r = _Reader(e, origin, f"engine[{i}].")
        mems = tuple(r.get("memories", list, []))
        for m in mems:
            if m not in memory_names:
                raise r._err("memories", f"no memory named {m!r}")
        out.append(
            Engine(
                name=r.get("name", str),
                core=r.get("core", str),
                isa=r.get("isa", str),
                clock_hz=r.positive("clock_hz", float),
                memories=mems,
                notes=tuple(r.get("notes", list, [])),
            )
        )
    return tuple(out)


def _cache(t: _Reader | None) -> Cache | None:
    if t is None:
        return None
    c = Cache(
        size=t.positive("size"),
        ways=t.positive("ways"),
        line_bytes=t.positive("line_bytes"),
        replacement=t.get("replacement", str, "lru"),
        write_back=t.get("write_back", bool, True),
        write_allocate=t.get("write_allocate", bool, True),
    )
    if c.replacement not in _REPLACEMENT:
        raise t._err("replacement", f"must be one of {_REPLACEMENT}, got {c.replacement!r}")
    if c.line_bytes & (c.line_bytes - 1):
        raise t._err("line_bytes", f"must be a power of two, got {c.line_bytes}")
    if c.size % (c.ways * c.line_bytes) or c.sets & (c.sets - 1):
        raise t._err("size", f"{c.size} B is not ways x line_bytes x a power-of-two sets")
    return c
