"""Memory stalls, traffic and energy of a layer, worked out by hand from the device file."""

from __future__ import annotations

import pytest

from mcusim.costs import StreamUse, layer_cost
from mcusim.devices.loader import load_device


@pytest.fixture(scope="module")
def l4():
    return load_device("stm32l4r5")  # flash: 64-bit words, 5 WS, ART D$ 8x32 B, I$ 32x32 B


def test_weights_streamed_from_flash(l4):
    streams = {
        "weights": StreamUse(read_bytes=4096, write_bytes=0, reads=1024, writes=0),
        "input": StreamUse(read_bytes=1000, write_bytes=0, reads=250, writes=0),
        "output": StreamUse(read_bytes=0, write_bytes=500, reads=0, writes=125),
    }
    c = layer_cost(l4, 10_000, 8_000, 600, streams, {"weights": 4096, "input": 1000})
    # weights: 4096 B > 256 B data cache -> every 8-B flash word fetched: 512 x 5 WS = 2560
    # code: 600 B fits the 1 KB I-cache -> cold misses only: ceil(600/8)=75 x 5 = 375
    # input/output live in 0-WS SRAM -> no stall
    assert c.stall_cycles == 2560 + 375
    assert c.cycles == 10_000 + 2935
    assert c.traffic == {
        "flash": {"read": 4096, "write": 0},
        "sram": {"read": 1000, "write": 500},
    }
    # core: 110 uA/MHz x 120 MHz x 3.0 V = 39.6 mW for 12,935 cycles at 120 MHz
    assert c.core_energy_j == pytest.approx(0.0396 * 12_935 / 120e6)
    # memory: 4096 B x 20 pJ + 1000 B x 2 pJ + 500 B x 2.5 pJ
    assert c.memory_energy_j == pytest.approx((4096 * 20 + 1000 * 2 + 500 * 2.5) * 1e-12)


def test_small_constants_stay_in_flash_data_cache(l4):
    streams = {"weights": StreamUse(read_bytes=20_000, write_bytes=0, reads=5000, writes=0)}
    c = layer_cost(l4, 1000, 1000, 0, streams, {"weights": 200})
    # 200-B footprint fits the 256-B data cache: fetched once, ceil(200/8)=25 words x 5 WS
    assert c.stall_cycles == 125


def test_code_larger_than_icache_refetches(l4):
    c = layer_cost(l4, 1000, 1000, 2048, {}, {})
    # 2048 B > 1 KB I-cache: 1000 instructions x 2.048 B = 2048 B -> 256 words, prefetch
    # hides every other word -> 128 x 5 WS
    assert c.stall_cycles == 640


def test_zero_wait_state_memory_adds_nothing():
    d = load_device("stm32l4r5")
    streams = {"scratch": StreamUse(read_bytes=10_000, write_bytes=10_000, reads=1, writes=1)}
    c = layer_cost(d, 500, 400, 0, streams, {})
    assert c.stall_cycles == 0 and c.cycles == 500
