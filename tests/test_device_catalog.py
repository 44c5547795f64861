"""The issue-3 device catalog: every file loads with the values docs/devices.md documents.

Three independent copies of each headline number must agree: the device file, the table in
docs/devices.md and the literal values below. Changing a file without its doc (or the other
way round) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcusim.devices.loader import bundled_devices, load_device
from mcusim.devices.model import ROLES
from mcusim.errors import DeviceError

DOC = Path(__file__).resolve().parents[1] / "docs" / "devices.md"

KB = 1024
# name: (kind, base address, size, wait states, cached, holds)
EXPECTED: dict[str, dict] = {
    "stm32f746": dict(
        core="cortex-m7",
        isa="armv7em-dsp",
        clock=216e6,
        icache=(4 * KB, 2, 32),
        dcache=(4 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x0000_0000, 16 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x2000_0000, 64 * KB, 0, False, ()),
            "sram": ("sram", 0x2001_0000, 256 * KB, 0, True, ("arena",)),
            "flash": ("flash", 0x0800_0000, 1024 * KB, 7, True, ("constants", "code")),
            "flash_itcm": ("flash", 0x0020_0000, 1024 * KB, 7, False, ()),
        },
        accel={"flash_itcm": (32, 64, 64, True)},
        power=(3.3, 470.0),
    ),
    "stm32h743": dict(
        core="cortex-m7",
        isa="armv7em-dsp",
        clock=480e6,
        icache=(16 * KB, 2, 32),
        dcache=(16 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x0000_0000, 64 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x2000_0000, 128 * KB, 0, False, ("arena",)),
            "axi_sram": ("sram", 0x2400_0000, 512 * KB, 1, True, ()),
            "sram_d2": ("sram", 0x3000_0000, 288 * KB, 2, True, ()),
            "flash": ("flash", 0x0800_0000, 2048 * KB, 9, True, ("constants", "code")),
        },
        accel={},
        power=(3.3, 275.0),
    ),
    "stm32h7a3": dict(
        core="cortex-m7",
        isa="armv7em-dsp",
        clock=280e6,
        icache=(16 * KB, 2, 32),
        dcache=(16 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x0000_0000, 64 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x2000_0000, 128 * KB, 0, False, ("arena",)),
            "axi_sram": ("sram", 0x2400_0000, 1024 * KB, 0, True, ()),
            "ahb_sram": ("sram", 0x3000_0000, 128 * KB, 1, True, ()),
            "flash": ("flash", 0x0800_0000, 2048 * KB, 6, True, ("constants", "code")),
        },
        accel={},
        power=(3.3, 120.0),
    ),
    "stm32u575": dict(
        core="cortex-m33",
        isa="armv8m-dsp",
        clock=160e6,
        icache=None,
        dcache=None,
        memories={
            "sram": ("sram", 0x2000_0000, 768 * KB, 0, False, ("arena",)),
            "flash": ("flash", 0x0800_0000, 2048 * KB, 4, False, ("constants", "code")),
        },
        accel={"flash": (16, 512, 512, False)},
        power=(3.3, 19.5),
    ),
    "ra6m4": dict(
        core="cortex-m33",
        isa="armv8m-dsp",
        clock=200e6,
        icache=None,
        dcache=None,
        memories={
            "sram": ("sram", 0x2000_0000, 256 * KB, 1, False, ("arena",)),
            "flash": ("flash", 0x0000_0000, 1024 * KB, 3, False, ("constants", "code")),
        },
        accel={"flash": (32, 256, 256, False)},
        power=(3.3, 100.0),
    ),
    "nrf5340": dict(
        core="cortex-m33",
        isa="armv8m-dsp",
        clock=128e6,
        icache=None,
        dcache=None,
        memories={
            "ram": ("sram", 0x2000_0000, 512 * KB, 0, False, ("arena",)),
            "flash": ("flash", 0x0000_0000, 1024 * KB, 5, False, ("constants", "code")),
        },
        accel={"flash": (16, 512, 512, False)},
        power=(3.0, 50.0),
    ),
    "ra8d1": dict(
        core="cortex-m85",
        isa="armv8.1m-mve",
        clock=480e6,
        icache=(32 * KB, 2, 32),
        dcache=(32 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x0000_0000, 64 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x2000_0000, 64 * KB, 0, False, ()),
            "sram": ("sram", 0x2200_0000, 896 * KB, 3, True, ("arena",)),
            "flash": ("flash", 0x0200_0000, 2016 * KB, 9, True, ("constants", "code")),
        },
        accel={},
        power=(3.3, 150.0),
    ),
    "rp2040": dict(
        core="cortex-m0plus",
        isa="armv6m",
        clock=133e6,
        icache=None,
        dcache=None,
        memories={
            "sram": ("sram", 0x2000_0000, 256 * KB, 0, False, ("arena",)),
            "flash": ("flash", 0x1000_0000, 2048 * KB, 56, False, ("constants", "code")),
        },
        accel={"flash": (8, 2048, 2048, False)},
        power=(3.3, 150.0),
    ),
    "stm32n6": dict(
        core="cortex-m55",
        isa="armv8.1m-mve",
        clock=800e6,
        icache=(32 * KB, 2, 32),
        dcache=(32 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x1000_0000, 64 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x3000_0000, 128 * KB, 0, False, ("arena",)),
            "axisram": ("sram", 0x3410_0000, 1024 * KB, 1, True, ()),
            "xspi_flash": ("external", 0x7000_0000, 65536 * KB, 160, True, ("constants", "code")),
        },
        accel={},
        power=(3.3, 150.0),
    ),
    "alif-e3-hp": dict(
        core="cortex-m55",
        isa="armv8.1m-mve",
        clock=400e6,
        icache=(32 * KB, 2, 32),
        dcache=(32 * KB, 4, 32),
        memories={
            "itcm": ("tcm", 0x0000_0000, 256 * KB, 0, False, ()),
            "dtcm": ("tcm", 0x2000_0000, 1024 * KB, 0, False, ("arena",)),
            "sram0": ("sram", 0x0200_0000, 4096 * KB, 2, True, ()),
            "sram1": ("sram", 0x0800_0000, 2560 * KB, 2, True, ()),
            "mram": ("flash", 0x8000_0000, 5632 * KB, 10, True, ("constants", "code")),
        },
        accel={},
        power=(3.3, 60.0),
    ),
}
NEW = sorted(EXPECTED)
ISA_OF_CORE = {
    "cortex-m7": "armv7em-dsp",
    "cortex-m33": "armv8m-dsp",
    "cortex-m0plus": "armv6m",
    "cortex-m55": "armv8.1m-mve",
    "cortex-m85": "armv8.1m-mve",
}


def _geometry(c):
    return None if c is None else (c.size, c.ways, c.line_bytes)


def test_catalog_is_bundled():
    assert set(NEW) <= set(bundled_devices())


@pytest.mark.parametrize("name", NEW)
def test_device_values(name):
    d, e = load_device(name), EXPECTED[name]
    assert d.name == name
    assert (d.core.name, d.core.isa, d.core.clock_hz) == (e["core"], e["isa"], e["clock"])
    assert _geometry(d.core.icache) == e["icache"]
    assert _geometry(d.core.dcache) == e["dcache"]
    got = {
        m.name: (m.kind, m.base_address, m.size, m.wait_states, m.cached, m.holds)
        for m in d.memories
    }
    assert got == e["memories"]
    accel = {
        m.name: (
            m.accelerator.line_bytes,
            m.accelerator.icache_lines,
            m.accelerator.dcache_lines,
            m.accelerator.prefetch,
        )
        for m in d.memories
        if m.accelerator is not None
    }
    assert accel == e["accel"]
    assert (d.power.voltage_v, d.power.active_ua_per_mhz) == e["power"]


# ---- docs/devices.md: parse its tables and compare with the files ----------------------


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _summary_row(name: str) -> list[str]:
    text = _doc().split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"docs/devices.md summary has {len(rows)} rows for {name}"
    return _cells(rows[0])


def _memory_rows(name: str) -> dict[str, list[str]]:
    text = _doc()
    start = text.index(f"### `{name}`")
    section = text[start:].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows = {}
    for ln in section.splitlines():
        m = re.match(r"^\| `([\w-]+)` \|", ln)
        if m:
            rows[m.group(1)] = _cells(ln)
    return rows


def _cache_cell(c) -> str:
    return "—" if c is None else f"{c.size // 1024} KB, {c.ways}-way, {c.line_bytes} B"


def test_doc_lists_exactly_the_catalog():
    documented = set(re.findall(r"^### `([\w-]+)`", _doc(), flags=re.M))
    assert documented == set(NEW)


@pytest.mark.parametrize("name", NEW)
def test_doc_summary_matches_file(name):
    d = load_device(name)
    row = _summary_row(name)
    assert row[1] == d.core.name
    assert float(row[2]) * 1e6 == d.core.clock_hz
    assert row[4] == _cache_cell(d.core.icache)
    assert row[5] == _cache_cell(d.core.dcache)
    acc = [m.accelerator for m in d.memories if m.accelerator is not None]
    assert row[7] == (f"{acc[0].icache_lines} × {acc[0].line_bytes} B" if acc else "—")
    p = re.fullmatch(r"([\d.]+) µA/MHz @ ([\d.]+) V", row[8])
    assert p, row[8]
    assert (float(p.group(2)), float(p.group(1))) == (d.power.voltage_v, d.power.active_ua_per_mhz)
    for source_col in (3, 9):  # every number in the summary names a source
        assert row[source_col] and row[source_col] != "—"


@pytest.mark.parametrize("name", NEW)
def test_doc_memories_match_file(name):
    d = load_device(name)
    rows = _memory_rows(name)
    assert set(rows) == {m.name for m in d.memories}
    for m in d.memories:
        r = rows[m.name]
        assert r[1] == m.kind
        assert int(r[2].replace("_", ""), 16) == m.base_address
        assert int(r[3]) * 1024 == m.size
        assert int(r[4]) == m.wait_states
        assert r[5] == ("yes" if m.cached else "no")
        assert r[6] == (", ".join(m.holds) or "—")
        assert r[7] and r[8], f"{name}.{m.name}: size and wait states need a source"


# ---- plausibility of every file ---------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_memory_map_plausible(name):
    d = load_device(name)
    assert ISA_OF_CORE[d.core.name] == d.core.isa
    for m in d.memories:
        assert 1024 <= m.size <= 256 * 1024 * 1024, m.name
        assert m.base_address % 1024 == 0, m.name
        assert m.base_address + m.size <= 1 << 32, m.name
        if m.kind == "tcm":
            assert not m.cached and m.wait_states == 0, m.name
        if m.cached:
            assert d.core.icache is not None or d.core.dcache is not None, m.name
        if m.accelerator is not None:
            assert m.kind in ("flash", "external"), m.name
    spans = sorted((m.base_address, m.base_address + m.size, m.name) for m in d.memories)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"{name}: {a} overlaps {b}"


@pytest.mark.parametrize("name", NEW)
def test_every_role_held_and_writable_arena(name):
    d = load_device(name)
    for role in ROLES:
        assert d.memory_for(role).holds.count(role) == 1
        assert sum(role in m.holds for m in d.memories) == 1
    assert d.memory_for("arena").kind in ("sram", "tcm")


def test_dtcm_holds_the_arena_only_when_large_enough():
    # placement rule of docs/devices.md: DTCM of >= 128 KB holds the arena
    for name in NEW:
        d = load_device(name)
        dtcm = [m for m in d.memories if m.name == "dtcm"]
        if dtcm:
            assert ("arena" in dtcm[0].holds) == (dtcm[0].size >= 128 * KB), name


@pytest.mark.parametrize(
    "name, memory, vendor_ws, cpu_per_bus_clock",
    [
        ("stm32h743", "flash", 4, 480 / 240),  # FLASH_LATENCY_4 at ACLK = 240 MHz
        ("ra8d1", "flash", 4, 480 / 240),  # FLWT = 4 at ICLK = 240 MHz
        ("ra8d1", "sram", 1, 480 / 240),  # SRAMWTSC: 1 wait at ICLK = 240 MHz
        ("stm32h7a3", "flash", 6, 1),  # HCLK = CPU = 280 MHz
        ("stm32f746", "flash", 7, 1),  # HCLK = CPU = 216 MHz
        ("stm32u575", "flash", 4, 1),
        ("ra6m4", "flash", 3, 1),  # ICLK = CPU = 200 MHz
    ],
)
def test_wait_states_converted_to_cpu_cycles(name, memory, vendor_ws, cpu_per_bus_clock):
    # (WS + 1) bus cycles per access, minus the one cycle the core model already counts
    expected = round((vendor_ws + 1) * cpu_per_bus_clock) - 1
    assert load_device(name).memory(memory).wait_states == expected


def test_rp2040_xip_miss_from_boot2_settings():
    addr_mode_sck, wait_sck, line_bits, quad, clkdiv = 8, 4, 64, 4, 2
    sck = addr_mode_sck + wait_sck + line_bits // quad
    flash = load_device("rp2040").memory("flash")
    assert flash.wait_states == sck * clkdiv == 56
    assert flash.width_bits == line_bits == flash.accelerator.line_bytes * 8


@pytest.mark.parametrize(
    "name, dsets, isets",
    [("stm32f746", 32, 64), ("stm32h743", 128, 256), ("ra8d1", 256, 512), ("stm32n6", 256, 512)],
)
def test_l1_sets(name, dsets, isets):
    core = load_device(name).core
    assert (core.dcache.sets, core.icache.sets) == (dsets, isets)


def test_unified_flash_caches_cover_the_cache_size():
    # U5 ICACHE 8 KB, nRF5340 CACHE 8 KB, RP2040 XIP cache 16 KB (docs/devices.md)
    for name, nbytes in (("stm32u575", 8 * KB), ("nrf5340", 8 * KB), ("rp2040", 16 * KB)):
        acc = load_device(name).memory_for("constants").accelerator
        assert acc.icache_bytes == acc.dcache_bytes == nbytes, name


def test_power_figure():
    d = load_device("stm32u575")
    # 19.5 uA/MHz * 160 MHz * 3.3 V = 10.296 mW
    assert d.power.active_power_w(d.core.clock_hz) == pytest.approx(10.296e-3)


def test_placement_override_on_catalog_device():
    d = load_device("stm32h743")
    moved = d.with_placement({"arena": "axi_sram"})
    assert moved.memory_for("arena").name == "axi_sram" and moved.memory_for("arena").cached
    with pytest.raises(DeviceError, match="is flash"):
        d.with_placement({"arena": "flash"})
    itcm = load_device("stm32f746").with_placement(
        {"constants": "flash_itcm", "code": "flash_itcm"}
    )
    assert itcm.memory_for("code").accelerator is not None and not itcm.memory_for("code").cached
