"""Device files: the bundled ones load with their documented values; bad files are named."""

from __future__ import annotations

import pytest

from mcusim.devices.loader import bundled_devices, load_device
from mcusim.errors import DeviceError


def test_bundled_devices_listed():
    assert {"stm32l4r5", "nrf52840", "max78000"} <= set(bundled_devices())


@pytest.mark.parametrize(
    "name, clock, arena, flash, ws",
    [
        ("stm32l4r5", 120e6, 655_360, 2_097_152, 5),
        ("nrf52840", 64e6, 262_144, 1_048_576, 2),
        ("max78000", 100e6, 131_072, 524_288, 4),
    ],
)
def test_bundled_values(name, clock, arena, flash, ws):
    d = load_device(name)
    assert d.core.name == "cortex-m4" and d.core.isa == "armv7em-dsp"
    assert d.core.clock_hz == clock
    assert d.memory_for("arena").size == arena
    assert d.memory_for("constants").size == flash
    assert d.memory_for("constants").wait_states == ws


def test_power_from_datasheet_current():
    d = load_device("nrf52840")
    # 52 uA/MHz * 64 MHz * 3.0 V = 9.984 mW
    assert d.power.active_power_w(d.core.clock_hz) == pytest.approx(9.984e-3)


def test_max78000_has_its_cnn_tile():
    from mcusim.devices.npu import npu_tile

    d = load_device("max78000")
    assert npu_tile(d).kind == "max78000-cnn"
    assert any("CNN accelerator supports run on it" in n for n in d.notes)


def _write(tmp_path, text):
    p = tmp_path / "board.toml"
    p.write_text(text)
    return p


GOOD = """
[device]
name = "myboard"
[core]
name = "cortex-m4"
isa = "armv7em-dsp"
clock_hz = 48_000_000
[[memory]]
name = "flash"
kind = "flash"
holds = ["constants", "code"]
size = 262144
width_bits = 32
wait_states = 1
read_pj_per_byte = 10.0
write_pj_per_byte = 0.0
[[memory]]
name = "sram"
kind = "sram"
holds = ["arena"]
size = 65536
width_bits = 32
wait_states = 0
read_pj_per_byte = 1.0
write_pj_per_byte = 1.0
[power]
voltage_v = 1.8
active_ua_per_mhz = 60.0
"""


def test_user_device_file(tmp_path):
    d = load_device(_write(tmp_path, GOOD))
    assert d.name == "myboard" and d.core.clock_hz == 48e6
    assert d.memory("sram").size == 65536


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("clock_hz = 48_000_000", "clock_hz = -1"), "key 'core.clock_hz': must be > 0"),
        (("clock_hz = 48_000_000", 'clock_hz = "fast"'), "key 'core.clock_hz': expected float"),
        (("size = 65536", 'size = "big"'), "key 'memory[1].size': expected int"),
        (('kind = "sram"', 'kind = "dram"'), "key 'memory[1].kind'"),
        (('name = "cortex-m4"', 'name = "cortex-m99"'), "key 'core.name': unknown core"),
        (("active_ua_per_mhz = 60.0", ""), "key 'power.active_ua_per_mhz': missing"),
        (('holds = ["arena"]', "holds = []"), "no memory has 'arena'"),
        (("[power]", "[power"), "not valid TOML"),
    ],
)
def test_malformed_device_names_key(tmp_path, edit, fragment):
    p = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(DeviceError) as e:
        load_device(p)
    assert fragment in str(e.value)
    assert "board.toml" in str(e.value)


def test_unknown_device_name():
    with pytest.raises(DeviceError, match="unknown device 'stm99'.*stm32l4r5"):
        load_device("stm99")


def test_missing_device_file(tmp_path):
    with pytest.raises(DeviceError, match="not found"):
        load_device(tmp_path / "nope.toml")


CACHED = GOOD.replace(
    "clock_hz = 48_000_000",
    "clock_hz = 48_000_000\n[core.dcache]\nsize = 4096\nways = 4\nline_bytes = 32\n"
    'replacement = "random"',
)


def test_core_cache_parsed(tmp_path):
    d = load_device(_write(tmp_path, CACHED))
    c = d.core.dcache
    assert (c.size, c.ways, c.line_bytes, c.replacement, c.sets) == (4096, 4, 32, "random", 32)
    assert d.core.icache is None


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("line_bytes = 32", "line_bytes = 24"), "core.dcache.line_bytes': must be a power of two"),
        (("size = 4096", "size = 4000"), "core.dcache.size'"),
        (('replacement = "random"', 'replacement = "mru"'), "core.dcache.replacement'"),
    ],
)
def test_bad_cache_names_key(tmp_path, edit, fragment):
    with pytest.raises(DeviceError) as e:
        load_device(_write(tmp_path, CACHED.replace(*edit)))
    assert fragment in str(e.value)


def test_placement_override_moves_roles(tmp_path):
    d = load_device(_write(tmp_path, GOOD))
    moved = d.with_placement({"constants": "sram"})
    assert moved.memory_for("constants").name == "sram"
    assert "constants" not in moved.memory("flash").holds
    assert d.memory_for("constants").name == "flash"  # the original is unchanged
    with pytest.raises(DeviceError, match="activations need writable memory"):
        d.with_placement({"arena": "flash"})
    with pytest.raises(DeviceError, match="no memory named 'dtcm'"):
        d.with_placement({"arena": "dtcm"})
    with pytest.raises(DeviceError, match="unknown placement role 'weights'"):
        d.with_placement({"weights": "sram"})


ACCEL = GOOD.replace(
    "write_pj_per_byte = 0.0\n",
    "write_pj_per_byte = 0.0\n[memory.accelerator]\nline_bytes = 16\nicache_lines = 512\n"
    "ways = 2\nunified = true\n",
    1,
)


def test_unified_set_associative_flash_cache(tmp_path):
    from mcusim.cache import CacheConfig

    acc = load_device(_write(tmp_path, ACCEL)).memory("flash").accelerator
    assert (acc.ways, acc.unified, acc.icache_lines, acc.dcache_lines) == (2, True, 512, 512)
    c = CacheConfig.accelerator(acc.icache_lines, acc)
    assert (c.ways, c.sets, c.size) == (2, 256, 8192)  # 512 lines of 16 B in 256 sets x 2 ways


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("ways = 2", "ways = 3"), "accelerator.icache_lines': 512 lines do not form power-of-two"),
        (("unified = true", "unified = true\ndcache_lines = 8"), "a unified accelerator"),
    ],
)
def test_bad_flash_cache(tmp_path, edit, fragment):
    with pytest.raises(DeviceError) as e:
        load_device(_write(tmp_path, ACCEL.replace(*edit)))
    assert fragment in str(e.value)
