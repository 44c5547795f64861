"""PULP cluster execution (mcusim/cluster.py, docs/cluster.md): PULP-NN work split, TCDM
bank conflicts, DMA tiling and overlap, speedup of a balanced split, cluster devices."""

from __future__ import annotations

import numpy as np
import pytest
from test_schedules_m4 import conv_graph, fc_graph

import mcusim
from mcusim import cluster as C
from mcusim.devices.loader import device_from_dict, load_device
from mcusim.devices.model import Cluster, Dma, Tcdm
from mcusim.errors import DeviceError, FitError
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import _FACTORIES, core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.model import Model

KB = 1024


def _cluster(cores=8, l1=64 * KB, banks=16, reserved=0, bw=8.0, setup=20, row=2, barrier=11):
    return Cluster(
        cores=cores,
        l1=Tcdm(l1, banks),
        l2="l2",
        dma=Dma(bw, setup, row),
        barrier_cycles=barrier,
        l1_reserved=reserved,
    )


# ---- work split (pulp-nn 32bit/src/pulp_nn_*_parallel.c) ------------------------------


def test_chunk_range_is_pulp_nn_chunking():
    # chunk = (15 >> 3) + ((15 & 7) != 0) = 2
    assert [C.chunk_range(15, 8, i) for i in range(8)] == [
        (0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 15)
    ]  # fmt: skip
    # fewer rows than cores: chunk 1, the last three cores idle
    assert [C.chunk_range(5, 8, i) for i in range(8)] == [
        (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 5), (5, 5), (5, 5)
    ]  # fmt: skip


def test_fc_splits_output_neurons():
    g, op = fc_graph(256, 100)
    parts = C.split(g, op, 8)
    assert [p.channels for p in parts] == [
        (0, 13), (13, 26), (26, 39), (39, 52), (52, 65), (65, 78), (78, 91), (91, 100)
    ]  # fmt: skip
    assert all(p.rows == (0, 1) and p.cols == (0, 1) for p in parts)
    assert sum(p.outputs for p in parts) == 100


def test_conv_howo_split_when_rows_do_not_divide():
    # H = 15 is not a multiple of 8: 4 row groups of ceil(15/4) = 4 rows, each row halved;
    # W = 15 is odd, section 1 takes columns 7..14 (8 columns)
    g, op = conv_graph(15, 15, 16, 32, 3)
    parts = C.split(g, op, 8)
    assert [(p.rows, p.cols) for p in parts] == [
        ((0, 4), (0, 7)), ((0, 4), (7, 15)), ((4, 8), (0, 7)), ((4, 8), (7, 15)),
        ((8, 12), (0, 7)), ((8, 12), (7, 15)), ((12, 15), (0, 7)), ((12, 15), (7, 15)),
    ]  # fmt: skip
    assert all(p.channels == (0, 32) for p in parts)
    assert sum(p.outputs for p in parts) == 15 * 15 * 32


def test_conv_rows_only_when_they_divide():
    g, op = conv_graph(16, 16, 8, 8, 3)
    parts = C.split(g, op, 8)
    assert [p.rows for p in parts] == [(2 * i, 2 * i + 2) for i in range(8)]
    assert {p.cols for p in parts} == {(0, 16)} and {p.strategy for p in parts} == {"ho"}


def test_depthwise_splits_channels_and_other_ops_run_on_core0():
    g, op = conv_graph(8, 8, 20, 20, 3, depthwise=True)
    assert [p.channels for p in C.split(g, op, 8)][:3] == [(0, 3), (3, 6), (6, 9)]
    parts = C.split(g, op, 8, strategy="single")
    assert not parts[0].empty and all(p.empty for p in parts[1:])
    with pytest.raises(ValueError):
        C.split(g, op, 8, strategy="diagonal")


def test_channel_slice_is_an_exact_sub_layer():
    # the sliced FC's schedule equals the schedule of an FC with that many neurons
    g, op = fc_graph(64, 40)
    part = C.split(g, op, 4, "co")[1]  # neurons 10..19
    sub, sub_op = C.channel_slice(g, op, part)
    assert sub.tensors[sub_op.inputs[1]].shape == (10, 64)
    assert np.array_equal(sub.tensors[sub_op.inputs[1]].data, g.tensors["w"].data[10:20])
    m4 = core_timing("cortex-m4")
    ref_g, ref_op = fc_graph(64, 10)
    assert (
        m4.time(schedule_for("armv7em-dsp", sub, sub_op)).cycles
        == m4.time(schedule_for("armv7em-dsp", ref_g, ref_op)).cycles
    )


# ---- TCDM bank conflicts -----------------------------------------------------------------


def test_bank_arbiter_serialises_one_bank():
    # two cores on bank 3 every slot: one access per cycle in total
    done = C.simulate_banks([np.full(10, 3), np.full(10, 3)], 16)
    assert sorted(done) == [19, 20]
    # eight cores, one access each to the same bank: served one per cycle
    assert sorted(C.simulate_banks([np.array([5])] * 8, 16)) == list(range(1, 9))


def test_bank_arbiter_interleaved_streams_do_not_conflict():
    # word-interleaved: core i streams words from address 4*i -> banks (i + k) mod 16,
    # all different in every cycle
    streams = [C.word_banks(4 * i + 4 * np.arange(50), 16) for i in range(8)]
    assert list(C.simulate_banks(streams, 16)) == [50] * 8
    # the same streams 64 bytes apart start on one bank: the first access serialises
    # them (core k served in cycle k), after which each is one bank ahead of the next and
    # they never meet again: core k finishes k cycles late
    same = [C.word_banks(64 * i + 4 * np.arange(50), 16) for i in range(8)]
    assert list(C.simulate_banks(same, 16)) == [50 + k for k in range(8)]
    # a stream that stays on one bank (stride 64 B) keeps colliding: one access per cycle
    col = [np.zeros(50, dtype=np.int64)] * 8
    assert max(C.simulate_banks(col, 16)) == 8 * 50
    # slots without an access (-1) are one cycle each
    assert list(C.simulate_banks([np.array([-1, -1, 2])], 16)) == [3]


def _symmetric_wait(r: float, others: int, banks: int, extra: float = 0.0) -> float:
    """Independent solve of the M/D/1 closed-system wait for identical cores by bisection:
    w = rho / (2 (1 - rho)), rho = (others r / (1 + r w) + extra) / banks."""
    lo, hi = 0.0, 100.0
    for _ in range(200):
        w = (lo + hi) / 2
        rho = (others * r / (1 + r * w) + extra) / banks
        if rho / (2 * (1 - rho)) > w:
            lo = w
        else:
            hi = w
    return (lo + hi) / 2


def test_conflict_formula_by_hand():
    # 8 cores, 100 accesses in 200 cycles (r = 0.5), 16 banks: A = 7 r / 16 = 0.21875;
    # rho = 2w / (1 + 2w) and rho = A / (1 + r w) give 2 r w^2 + (2 - 2A) w - A = 0:
    # w = (-(1.5625) + sqrt(1.5625^2 + 8 x 0.5 x 0.21875)) / (4 x 0.5) = 0.129300
    w = (-1.5625 + np.sqrt(1.5625**2 + 8 * 0.5 * 0.21875)) / 2
    assert w == pytest.approx(0.1293, abs=1e-4)
    st = C.conflict_stalls(np.full(8, 100), np.full(8, 200), 16)
    assert st == pytest.approx(np.full(8, 100 * w), rel=1e-9)
    assert w == pytest.approx(_symmetric_wait(0.5, 7, 16), rel=1e-9)
    # one core alone never conflicts; an extra requester (DMA, 1 word/cycle) does:
    # rho = 1/16, w = rho / (2 (1 - rho)) = 1/30
    assert C.conflict_stalls(np.array([100]), np.array([200]), 16)[0] == 0
    assert C.conflict_stalls(np.array([100]), np.array([200]), 16, 1.0)[0] == pytest.approx(
        100 / 30
    )


@pytest.mark.parametrize("n, banks, rate", [(8, 16, 0.5), (8, 16, 0.9), (16, 16, 0.5),
                                            (8, 32, 0.9)])  # fmt: skip
def test_conflict_formula_matches_cycle_arbiter_on_random_streams(n, banks, rate):
    rng = np.random.default_rng(1)
    slots = 4000
    streams = []
    for _ in range(n):
        s = rng.integers(0, banks, slots)
        s[rng.random(slots) >= rate] = -1
        streams.append(s)
    measured = (C.simulate_banks(streams, banks) - slots).mean()
    acc = np.array([(s >= 0).sum() for s in streams])
    predicted = C.conflict_stalls(acc, np.full(n, slots), banks).mean()
    assert predicted == pytest.approx(measured, rel=0.05)


# ---- L2 -> L1 tiling and DMA -------------------------------------------------------------


def test_transfer_cycles_by_hand():
    dma = Dma(8.0, 20, 2)
    assert C.transfer_cycles(dma, 800) == 20 + 100
    assert C.transfer_cycles(dma, 800, rows=10) == 20 + 9 * 2 + 100
    assert C.transfer_cycles(dma, 0) == 0


def test_dma_overlap_by_hand():
    # tile 0 inputs load alone (50); tile 0 computes while tile 1 loads (150 > 100: 50);
    # tile 1 computes while out0 + in2 (70 < 100); tile 2 while out1 (40); out2 alone (40)
    assert C.dma_overlap([100, 100, 100], [50, 150, 30], [40, 40, 40]) == 50 + 50 + 40
    assert C.dma_overlap([1000], [300], [200]) == 500  # one tile: nothing overlaps


def test_conv_footprint_and_tiles_by_hand():
    # 16x16x16 -> 32, 3x3 same, 8 cores: input row 16x16 = 256 B, weights+bias per
    # channel 144 + 4, output 16 B per (row, channel), im2col 2 x 144 x 8 = 2304 B
    g, op = conv_graph(16, 16, 16, 32, 3)
    fp = C.footprint(g, op, 8)
    assert (fp.in_row_bytes, fp.w_bytes_per_channel, fp.out_bytes_per_row_channel) == (
        256,
        148,
        16,
    )
    assert fp.scratch_bytes == 2304 and fp.in_rows(2) == 4 and fp.in_rows(16) == 16
    # whole layer: 4096 + 4736 + 8192 + 2304 = 19328 B
    assert C.plan_tiles(fp, 19328) == C.TilePlan(16, 32, 1, 1, False, 4096, 4736, 8192)
    # 16000 B: 2 x ((h + 2) 256 + 4736 + 512 h) + 2304 = 1536 h + 12800 -> h = 2
    p = C.plan_tiles(fp, 16000)
    assert (p.h, p.c, p.n_h, p.n_c, p.double_buffered) == (2, 32, 8, 1, True)
    # 12000 B: one row of all channels needs 14336 -> channels: 3840 + 328 c -> c = 24,
    # then rows: 1280 h + 10432 -> h = 1
    p = C.plan_tiles(fp, 12000)
    assert (p.h, p.c, p.n_h, p.n_c) == (1, 24, 16, 2) and p.tiles == 32
    with pytest.raises(FitError):
        C.plan_tiles(fp, 3000)


def test_tiled_layer_dma_stall_and_barriers_by_hand():
    # the 16000 B plan above, 8 balanced cores of 8000 cycles without L1 accesses:
    # tile 0 loads input (20 + 1024/8) and all weights (20 + 4736/8): 760 stall; the other
    # transfers (148 each) hide behind 1000-cycle tiles; the last output: 148 stall
    g, op = conv_graph(16, 16, 16, 32, 3)
    cl = _cluster(l1=16000)
    runs = [C.CoreRun(p, 8000, 100, 0, 0, 0, 64, "k") for p in C.split(g, op, 8)]
    lay = C.combine(cl, runs, C.footprint(g, op, 8))
    assert lay.tiles.tiles == 8
    assert lay.dma_stall_cycles == 760 + 148
    assert lay.barrier_cycles == 8 * 11 and lay.bank_conflict_cycles == 0
    assert lay.cycles == 8000 + 908 + 88
    assert lay.dma_in_bytes == 8 * 1024 + 4736 and lay.dma_out_bytes == 16 * 16 * 32


# ---- a balanced synthetic workload: speedup ------------------------------------------------

_BODY = Block.asm("ldr r3, [r0], #4 {input}\nldr r4, [r1], #4 {weights}\n"
                  "smlad r5, r3, r4, r5\nsubs r2, #1\nbne .L")  # fmt: skip


def _synthetic(graph, op, part):
    return Program([Loop("mac", part.outputs * 4, [_BODY])], kernel="synthetic")


def test_eight_core_speedup_of_a_balanced_layer():
    g, op = conv_graph(16, 16, 8, 8, 3)  # 16 rows: 2 per core, every part equal
    one = C.combine(
        _cluster(cores=1, l1=1 << 20),
        C.run_parts(_cluster(cores=1), "cortex-m4", g, op, _synthetic),
        C.footprint(g, op, 1),
    )
    eight = C.combine(_cluster(l1=1 << 20), C.run_parts(
        _cluster(), "cortex-m4", g, op, _synthetic), C.footprint(g, op, 8))  # fmt: skip
    c1 = one.compute_cycles
    assert len(set(eight.core_cycles)) == 1 and one.cores_used == 1 and eight.cores_used == 8
    c8 = eight.core_cycles[0]
    n_iter = 16 * 16 * 8 * 4
    assert c8 * 8 == pytest.approx(c1, rel=1e-3)
    # conflicts: every core makes 2 accesses per iteration (rate r = 2 n / c8) against
    # the 7 others and the DMA's words per cycle
    r = 2 * (n_iter // 8) / c8
    dma_r = (eight.dma_in_bytes + eight.dma_out_bytes) / 4 / c8
    conf = 2 * (n_iter // 8) * _symmetric_wait(r, 7, 16, dma_r)
    assert eight.bank_conflict_cycles == round(conf)
    dma_1 = (one.dma_in_bytes + one.dma_out_bytes) / 4 / c1
    assert one.bank_conflict_cycles == round(2 * n_iter * _symmetric_wait(0, 0, 16, dma_1))
    # layer time without the DMA: max core + its conflicts + one barrier
    t1 = one.cycles - one.dma_stall_cycles
    t8 = eight.cycles - eight.dma_stall_cycles
    assert (t1, t8) == (c1 + one.bank_conflict_cycles + 11, c8 + round(conf) + 11)
    # speedup 8 c8 / (c8 (1 + 7 r^2 / 32 + ...) + 11): 8x minus conflicts and barrier
    assert 7.0 < t1 / t8 < 8.0


# ---- devices -------------------------------------------------------------------------------


@pytest.fixture
def riscv_cores(monkeypatch):
    """Device files name the RI5CY cores; until isa/ri5cy.py registers them, stand in a
    name so the files' schema and values can be checked (never timed here)."""
    for name in ("ri5cy", "xpulpnn", "cv32e40p"):
        if name not in _FACTORIES:
            monkeypatch.setitem(_FACTORIES, name, "mcusim.isa.cortex_m4:CortexM4Timing")


def test_gap8_file(riscv_cores):
    d = load_device("gap8")
    cl = d.cluster
    assert (d.core.name, d.core.isa, d.core.clock_hz) == ("ri5cy", "rv32-xpulpv2", 175e6)
    assert d.fabric_controller.clock_hz == 250e6
    assert (cl.cores, cl.extra_cores, cl.barrier_cycles) == (8, 0, 11)
    assert (cl.l1.size, cl.l1.banks, cl.l1.bank_width, cl.l1.interleaved) == (64 * KB, 16, 4, True)
    assert cl.l1.bank_of(0x44) == 1 and cl.l1.bank_of(64) == 0
    assert d.memory(cl.l2).size == 512 * KB and d.memory_for("arena").name == "l2"
    assert cl.dma.bytes_per_cycle == 8.0


def test_gap9_and_xpulpnn_files(riscv_cores):
    d = load_device("gap9")
    assert (d.cluster.cores, d.cluster.extra_cores, d.core.clock_hz) == (8, 1, 370e6)
    assert d.cluster.l1.size == 128 * KB and d.memory("l2").size == 1536 * KB
    x = load_device("xpulpnn")
    assert x.cluster is None and (x.core.name, x.core.isa) == ("xpulpnn", "rv32-xpulpnn")


def test_max78000_riscv_engine_leaves_the_m4_alone():
    d = load_device("max78000")
    assert (d.core.name, d.core.clock_hz, d.cluster) == ("cortex-m4", 100e6, None)
    (e,) = d.engines
    assert (e.name, e.isa, e.clock_hz, e.memories) == ("riscv", "rv32imc", 60e6, ("flash", "sram"))


def test_existing_devices_have_no_cluster():
    for name in ("stm32l4r5", "nrf52840", "stm32h743", "rp2040"):
        d = load_device(name)
        assert d.cluster is None and d.engines == () and d.fabric_controller is None


def _dev_dict(**cluster):
    c = {
        "cores": 8,
        "l2": "l2",
        "barrier_cycles": 11,
        "l1": {"size": 65536, "banks": 16},
        "dma": {"bytes_per_cycle": 8.0, "setup_cycles": 20, "row_cycles": 2},
    }
    c.update(cluster)
    mem = {"kind": "sram", "size": 1 << 20, "width_bits": 32, "wait_states": 0,
           "read_pj_per_byte": 1.0, "write_pj_per_byte": 1.0}  # fmt: skip
    return {
        "device": {"name": "syn"},
        "core": {"name": "cortex-m4", "isa": "armv7em-dsp", "clock_hz": 100e6},
        "cluster": c,
        "memory": [dict(mem, name="l2", holds=["arena", "constants", "code"])],
        "power": {"voltage_v": 1.0, "active_ua_per_mhz": 100.0},
    }


def test_cluster_schema_errors_name_the_key():
    with pytest.raises(DeviceError, match=r"cluster\.l2.*no memory named 'sram'"):
        device_from_dict(_dev_dict(l2="sram"), "x.toml")
    with pytest.raises(DeviceError, match=r"cluster\.l1\.banks"):
        device_from_dict(_dev_dict(l1={"size": 65536, "banks": 0}), "x.toml")
    with pytest.raises(DeviceError, match=r"cluster\.dma\.bytes_per_cycle"):
        device_from_dict(_dev_dict(dma={"setup_cycles": 1}), "x.toml")


def test_run_on_a_cluster_device_records_the_breakdown(monkeypatch):
    """mcusim.run on a synthetic cluster device (Cortex-M4 workers, synthetic part
    schedules): outputs as on any device, cycles = compute + conflicts + barrier + DMA."""
    dev = device_from_dict(_dev_dict(), "syn.toml")
    monkeypatch.setattr(C, "part_builder", lambda isa: _synthetic)
    g, op = conv_graph(16, 16, 8, 8, 3)
    m = Model(g)
    r = mcusim.run(m, device=dev, seed=1)
    ref = mcusim.run(Model(conv_graph(16, 16, 8, 8, 3)[0]), device="stm32l4r5", seed=1)
    assert np.array_equal(r.outputs[0], ref.outputs[0])
    (rec,) = r.layers
    lay = C.cluster_layer(dev, g, op, _synthetic)
    assert rec.cores == 8 and rec.tiles == 1 and rec.kernel == "synthetic"
    assert rec.compute_cycles == lay.compute_cycles
    assert rec.stall_cycles == rec.bank_conflict_cycles + rec.barrier_cycles + rec.dma_stall_cycles
    assert rec.cycles == lay.cycles and rec.dma_stall_cycles == lay.dma_stall_cycles > 0
    assert rec.traffic["l2"] == {"read": lay.dma_in_bytes, "write": lay.dma_out_bytes}


# ---- the API the PULP-NN schedules plug into: gap8 with a RI5CY inner loop --------------


def test_gap8_cluster_with_the_pulp_nn_4x2_inner_loop():
    """The PULP-NN INT8 4x2 matmul inner loop (4 weight + 2 im2col p.lw, 8 pv.sdotusp.b:
    32 MACs in 14 cycles on RI5CY, riscv-xpulp.md §6) as each core's whole part: the
    cluster model gives 8 x 32/14 MAC/cycle minus TCDM conflicts and the barrier. The
    PULP-NN schedules add im2col and requantisation around it (published: 15.5 MAC/cycle
    on 8 cores, Garofalo et al. 2020); this test pins the cluster arithmetic only."""
    from mcusim.isa import riscv_asm as rv

    assert "ri5cy" in _FACTORIES
    lines = [f"p.lw t{i}, 4(a{i}!) {{weights}}" for i in range(4)]
    lines += ["p.lw t4, 4(a4!) {input}", "p.lw t5, 4(a5!) {input}"]
    lines += [f"pv.sdotusp.b s{4 * p + c}, t{4 + p}, t{c}" for p in range(2) for c in range(4)]
    body = rv.rv_block("\n".join(lines), rvc=False)
    g, op = conv_graph(16, 16, 32, 64, 3)
    k = 3 * 3 * 32

    def build(graph, o, part):
        return Program([rv.hw_loop("mm", part.outputs * k // 32, [body])], kernel="4x2")

    dev = load_device("gap8")
    lay = C.cluster_layer(dev, g, op, build)
    per_core = 2 * 16 * 64 * k  # MACs: 2 rows of 16 pixels x 64 channels each
    assert lay.cores_used == 8 and set(lay.core_cycles) == {per_core // 32 * 14}
    assert lay.barrier_cycles == 11 * lay.tiles.tiles
    r = 6 / 14
    dma_r = (lay.dma_in_bytes + lay.dma_out_bytes) / 4 / lay.compute_cycles
    w = _symmetric_wait(r, 7, 16, dma_r)
    assert lay.bank_conflict_cycles == round(per_core // 32 * 6 * w)
    mac_per_cycle = 8 * per_core / (lay.cycles - lay.dma_stall_cycles)
    assert 8 * 32 / 14 * 0.93 < mac_per_cycle < 8 * 32 / 14
