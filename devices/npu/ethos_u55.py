"""Arm Ethos-U55 tile: Vela's (Regor core) performance model re-derived for mcusim.

Per op: the OFM/IFM block configuration that fits the SHRAM (the block search Vela's scheduler
runs), NPU cycles from the block structure (MAC micro-blocks, sub-kernels, the two-stage
DPU / output pipeline), memory-access cycles per AXI memory from bytes moved (burst-scaled) and
the memory's bandwidth, op cycles = max(NPU, each memory's access cycles). Weights are counted
in their compressed (encoded) size, estimated from the weight values (``encoded_weight_bytes``).
Formulas and sources: docs/ethos-u55.md. Architecture constants: devices/npu/ethos_u55.toml.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mcusim.errors import DeviceError, FitError

from .base import NpuLayerCost, NpuSupport, NpuTile

Shape3 = tuple[int, int, int]  # (H, W, C)

_ARCH_FILE = Path(__file__).with_name("ethos_u55.toml")
_MEMORY_ONLY = ("reshape", "squeeze")
_RELU = ("relu", "relu6", "relu_n1_to_1", "relu0to1")
_LUT_ACT = ("sigmoid", "tanh", "logistic", "lut")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil(a, b) * b


@dataclass(frozen=True)
class U55Arch:
    """One MAC configuration of the Ethos-U55 (devices/npu/ethos_u55.toml)."""

    macs: int
    ofm_ublock: Shape3
    ifm_ublock: Shape3
    shram_banks: int
    granules: tuple[int, ...]  # ifm8, ifm16, ifm8_ew, ifm16_ew, ifm32, acc16, acc32, acc40
    out_cpe: tuple[float, ...]
    act_cpe: tuple[float, ...]
    ofm_block_max: Shape3
    subkernel_max: tuple[int, int]
    bank_bytes: int
    reserved_output_banks: int
    ofm_split_depth: int
    scale_bytes_per_channel: int
    stream_align: int

    @property
    def reserved_end_banks(self) -> int:
        return 2 if self.shram_banks > 16 else 0


@cache
def u55_arch(macs: int) -> U55Arch:
    data = tomllib.loads(_ARCH_FILE.read_text())
    if str(macs) not in data["macs"]:
        raise DeviceError(f"ethos-u55: macs = {macs} is not a U55 configuration (32, 64, 128, 256)")
    m, c = data["macs"][str(macs)], data["common"]
    return U55Arch(
        macs=macs,
        ofm_ublock=tuple(m["ofm_ublock"]),
        ifm_ublock=tuple(m["ifm_ublock"]),
        shram_banks=m["shram_banks"],
        granules=tuple(m["granules"]),
        out_cpe=tuple(m["out_cpe"]),
        act_cpe=tuple(m["act_cpe"]),
        ofm_block_max=tuple(c["ofm_block_max"]),
        subkernel_max=tuple(c["subkernel_max"]),
        bank_bytes=c["shram_bank_bytes"],
        reserved_output_banks=c["shram_reserved_output_banks"],
        ofm_split_depth=c["ofm_split_depth"],
        scale_bytes_per_channel=c["scale_bytes_per_channel"],
        stream_align=c["weight_stream_align"],
    )


@dataclass(frozen=True)
class AxiMemory:
    """A memory as the NPU sees it over AXI (Vela's vela.ini memory parameters)."""

    name: str
    bytes_per_cycle: float  # 8 B/cycle AXI x the memory's clock scale
    read_latency: int
    write_latency: int
    burst_bytes: int


@dataclass(frozen=True)
class NpuQuery:
    """One NPU operation as the performance model needs it (shapes are (H, W, C))."""

    hw: str  # conv | depthwise | vector | pool | reduce_sum | elementwise
    kind: str  # conv | maxpool | avgpool | add | sub | mul | other (output-cycle table index)
    ifm: Shape3
    ofm: Shape3
    ifm2: Shape3 | None = None
    kernel: tuple[int, int] = (1, 1)  # (H, W)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    ifm_bits: int = 8
    ofm_bits: int = 8
    activation: str = "none"
    weight_bytes: int = 0  # encoded weight stream
    scale_bytes: int = 0  # encoded bias/scale stream
    lut_bytes: int = 0
    ifm_brick: bool = False  # NHCWB16 layouts (NPU-internal intermediate tensors)
    ofm_brick: bool = False
    ifm2_brick: bool = False
    ifm_const: bool = False  # the input is a constant read from the weights memory
    ifm2_const: bool = False


@dataclass(frozen=True)
class BlockConfig:
    ofm: Shape3
    ifm: Shape3
    traversal: str  # DepthFirst | PartKernel | Depthwise
    acc40: bool = False


def _elems(s: Shape3 | None) -> int:
    return 0 if s is None else s[0] * s[1] * s[2]


def _min3(a: Shape3, b: Shape3) -> Shape3:
    return (min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]))


def _part_kernel_better(ifm_c: int, bits: int, kernel_elems: int) -> bool:
    """Vela's choice between part-kernel-first and depth-first traversal (best utilisation)."""
    if ifm_c <= 8:
        return True
    depth_util = ifm_c / _round_up(ifm_c, 32 if bits == 8 else 16)
    part_util = (ifm_c / _round_up(ifm_c, 8)) * (
        kernel_elems / _round_up(kernel_elems, 4 if bits == 8 else 2)
    )
    return part_util >= depth_util


def _shram_fits(
    a: U55Arch,
    ew: str,
    ofm_b: Shape3,
    ifm_b: Shape3,
    bits: int,
    ifm_gran: int,
    acc_bits: int,
    acc_gran: int,
    lut_banks: int,
) -> bool:
    """Do IFM buffers (double-buffered) + accumulators fit in the SHRAM banks."""
    ifm_bytes = ifm_b[0] * ifm_b[1] * _round_up(ifm_b[2] * bits // 8, 8)
    ifm_banks = _round_up(_ceil(ifm_bytes, a.bank_bytes) * 2, ifm_gran)
    lut_start = a.shram_banks - lut_banks
    ifm_end = a.reserved_output_banks + ifm_banks
    acc_start = lut_start
    if ew == "no":
        acc_bytes = ofm_b[0] * ofm_b[1] * _round_up(ofm_b[2], 8) * acc_bits // 8
        acc_start -= _round_up(_ceil(acc_bytes, a.bank_bytes) * 2, acc_gran)
    else:
        ifm2_banks = ifm_banks if ew == "full" else 0
        if ifm_end + ifm2_banks > acc_start:
            return False
        ifm_end = acc_start
    return ifm_end <= acc_start


@lru_cache(maxsize=4096)
def find_block_config(a: U55Arch, q: NpuQuery) -> BlockConfig:
    """The OFM/IFM block Vela's block search picks: the SHRAM-fitting block with the least
    IFM + weight fetch per output element."""
    ifm = q.ifm2 if q.ifm2 is not None and _elems(q.ifm2) > _elems(q.ifm) else q.ifm
    ew = "no"
    if q.hw == "elementwise":
        scalar = _elems(q.ifm) == 1 or (q.ifm2 is not None and _elems(q.ifm2) == 1)
        ew = "scalar" if scalar and q.ifm_bits <= 16 else "full"
    is_pool = q.hw in ("pool", "reduce_sum")
    is_dw = q.hw == "depthwise"
    equal_depth = ew != "no" or (is_pool and q.hw != "reduce_sum") or is_dw
    kh, kw = q.kernel
    # Vela 5.2 reports the traversal of FC layers as for a 1x1 convolution
    part = q.hw in ("conv", "vector") and _part_kernel_better(ifm[2], q.ifm_bits, kh * kw)
    acc40 = q.ifm_bits == 16 and (not is_pool or q.hw == "reduce_sum")
    acc_gran = a.granules[7 if acc40 else 6]
    acc_bits = 40 if acc40 else 32
    bit_idx = {8: 0, 16: 1, 32: 4}[q.ifm_bits]
    ifm_gran = a.granules[bit_idx + (2 if ew != "no" and bit_idx < 2 else 0)]
    lut_banks = max(_ceil(q.lut_bytes, 1024), a.reserved_end_banks)
    dkh, dkw = (kh - 1) * q.dilation[0] + 1, (kw - 1) * q.dilation[1] + 1
    sk_h, sk_w = a.subkernel_max
    ifm_repeats = _ceil(dkw, sk_w) * _ceil(dkh, sk_h)
    if q.ifm_bits == 16:
        ifm_blk_depth = _round_up(min(ifm[2], 16), 4)
    else:
        ifm_blk_depth = _round_up(min(ifm[2], 16 if part else 32), a.ifm_ublock[2])
    weight_wh = kh * kw if q.hw in ("conv", "depthwise") else 0
    ub = a.ofm_ublock
    mx = _min3(q.ofm, a.ofm_block_max)
    search = (_round_up(mx[0], ub[0]), _round_up(mx[1], ub[1]), _round_up(mx[2], ub[2]))
    ofm_elems = _elems(q.ofm)
    ifm_elems = _elems(ifm)
    best, best_cov, best_cfg = math.inf, math.inf, None
    depth = max(ub[2], min(search[2], a.ofm_split_depth))
    if depth < q.ofm[2]:
        depth = _round_up(depth, a.ofm_split_depth)
    wont_fit: set[tuple[int, int]] = set()
    while depth <= search[2]:
        for h in range(ub[0], search[0] + 1, ub[0]):
            for w in range(ub[1], search[1] + 1, ub[1]):
                if (h, w) in wont_fit:
                    continue
                ih = _round_up((h - 1) * q.stride[0] + min(dkh, sk_h), ub[0])
                iw = _round_up((w - 1) * q.stride[1] + min(dkw, sk_w), ub[1])
                ifm_b = (ih, iw, depth if equal_depth else ifm_blk_depth)
                ofm_b = (h, w, depth)
                if q.ofm[0] == 1 and kh == 1 and ub[0] == 2:
                    ofm_b = (min(h, q.ofm[0]), w, depth)
                if not _shram_fits(
                    a, ew, ofm_b, ifm_b, q.ifm_bits, ifm_gran, acc_bits, acc_gran, lut_banks
                ):
                    wont_fit.add((h, w))
                    continue
                full = (
                    _ceil(q.ofm[0], ofm_b[0]),
                    _ceil(q.ofm[1], ofm_b[1]),
                    _ceil(q.ofm[2], ofm_b[2]),
                )
                # float32 arithmetic in Vela's order: equal-cost candidates tie-break alike
                f32 = np.float32
                bh, bw = f32(q.ofm[0]) / f32(ofm_b[0]), f32(q.ofm[1]) / f32(ofm_b[1])
                bc = f32(q.ofm[2]) / f32(ofm_b[2])
                wfetch = f32(weight_wh * ifm[2] * full[0] * full[1])
                if not is_dw:
                    wfetch *= bc * f32(ofm_b[2])
                ifetch = f32(ih * iw * ifm[2] * ifm_repeats) * bw * bh
                if not equal_depth:
                    ifetch *= f32(full[2])
                if ew != "no":
                    cost = f32(ofm_elems) / f32(h * w * depth)
                else:
                    cost = (ifetch + wfetch) / f32(ofm_elems)
                if ifm_elems < ih * iw * ifm_b[2] * 2:
                    cost = cost / f32(2.0)
                if cost <= best:
                    choose = False
                    if cost == best:
                        cov_s = _min3(ifm, ifm_b)
                        cov = ifm[0] * ifm[1] / max(cov_s[0] * cov_s[1], 1)
                        if cov <= best_cov and h <= 4 and w <= 4:
                            best_cov, choose = cov, True
                    else:
                        best_cov, choose = math.inf, True
                    if choose:
                        best = cost
                        trav = "Depthwise" if is_dw else ("PartKernel" if part else "DepthFirst")
                        best_cfg = BlockConfig((h, w, depth), ifm_b, trav, acc40)
        depth += ub[2]
        if depth < q.ofm[2]:
            depth = _round_up(depth, a.ofm_split_depth)
    if best_cfg is None:
        raise FitError(
            f"Ethos-U55-{a.macs}: SHRAM ({a.shram_banks} KB) cannot hold even the smallest "
            f"IFM + accumulator block of this {q.hw} layer (OFM {q.ofm}, kernel {q.kernel})"
        )
    return best_cfg


def _burst_bytes(
    mem: AxiMemory, brick: bool, is_read: bool, bits: int, block: Shape3, shape: Shape3, nbytes: int
) -> int:
    """Bytes the AXI moves for ``nbytes`` of tensor data: short bursts cost whole bursts."""
    burst = 8
    if brick:
        if shape[1] * bits * 16 // 8 == block[2]:
            burst = bits * block[1] * block[2]
        else:
            burst = 16 * bits * block[1]
    else:
        x_stride = shape[2] * bits // 8
        if is_read:
            burst = bits * block[1] * block[2] if x_stride == block[2] else bits * block[2]
        elif block[2] <= 16 and x_stride == block[2]:
            burst = bits * block[1] * block[2]
        else:
            burst = min(64 * 8, 16 * bits, block[2] * bits)
    burst = max(1, min(mem.burst_bytes, burst // 8))
    return nbytes * mem.burst_bytes // burst


def _min_memory_cycles(
    q: NpuQuery, cfg: BlockConfig, fm: AxiMemory, const: AxiMemory | None = None
) -> int:
    """Latency + transfer of one IFM block read and one OFM block write."""
    cyc_ifm = 0
    for shape, brick, is_const in (
        (q.ifm, q.ifm_brick, q.ifm_const),
        (q.ifm2, q.ifm2_brick, q.ifm2_const),
    ):
        if shape is None:
            continue
        mem = const if (is_const and const is not None) else fm
        nbytes = _elems(_min3(shape, cfg.ifm)) * q.ifm_bits // 8
        tx = _burst_bytes(mem, brick, True, q.ifm_bits, cfg.ifm, shape, nbytes)
        cyc_ifm = max(cyc_ifm, mem.read_latency + int(tx / mem.bytes_per_cycle))
    nbytes = _elems(_min3(q.ofm, cfg.ofm)) * q.ofm_bits // 8
    tx = _burst_bytes(fm, q.ofm_brick, False, q.ofm_bits, cfg.ofm, q.ofm, nbytes)
    return cyc_ifm + fm.write_latency + int(tx / fm.bytes_per_cycle)


def _output_cycles_per_element(
    a: U55Arch, q: NpuQuery, cfg: BlockConfig, fm: AxiMemory, const: AxiMemory | None = None
) -> tuple[float, float]:
    """(cycles per output element, output-stage cycles per element) for the op's kind."""
    ew = q.hw == "elementwise"
    if ew and q.ifm_bits == 32:
        idx = 1 if q.ifm2 is not None else 0
    elif q.kind == "mul" and q.ofm_bits == 32:
        idx = 2
    elif q.kind == "mul" or (not ew and cfg.acc40):
        idx = 3
    elif q.kind in ("add", "sub"):
        idx = 5
    elif q.kind == "maxpool":
        idx = 6
    else:
        idx = 7
    # act_cpe index: 0 LUT activations (sigmoid/tanh/LUT), 1 ReLU family, 2 none
    act = 1 if q.activation in _RELU else (0 if q.activation in _LUT_ACT else 2)
    cpe = max(a.out_cpe[idx], a.act_cpe[act])
    ao = cpe
    if ew:
        blk = _elems(cfg.ofm)
        cmd = (_min_memory_cycles(q, cfg, fm, const) / blk + cpe) / 4.0
        cpe = max(cpe, cmd)
    return cpe, ao


def npu_cycles(
    a: U55Arch,
    q: NpuQuery,
    cfg: BlockConfig,
    fm: AxiMemory,
    const: AxiMemory,
    parts: dict | None = None,
) -> tuple[int, int]:
    """(NPU cycles, MACs) of one operation (Vela's EstimateConvCycles / elementwise)."""
    if q.hw == "elementwise":
        cpe, _ = _output_cycles_per_element(a, q, cfg, fm, const)
        ofm = (q.ofm[0], q.ofm[1], _round_up(q.ofm[2], 16)) if q.ofm_brick else q.ofm
        return int(cpe * _elems(ofm)), 0
    ifm_b = _min3(q.ifm, cfg.ifm)
    ofm_b = _min3(q.ofm, cfg.ofm)
    ub = a.ofm_ublock
    kh, kw = q.kernel
    if (
        ub[0] == 2
        and q.hw in ("conv", "vector")
        and q.ofm[0] == 1
        and q.ofm[1] % 2 == 0
        and kh == 1
    ):
        ub = (1, 4, ub[2])
        ofm_b = (1, ofm_b[1], ofm_b[2])
    nu_h, nu_w, nu_c = _ceil(ofm_b[0], ub[0]), _ceil(ofm_b[1], ub[1]), _ceil(ofm_b[2], ub[2])
    nu_xy = nu_h * nu_w
    wb = 32 * ub[2] // 8
    sk_h, sk_w = (1, 1) if q.hw == "vector" else a.subkernel_max
    acc40 = cfg.acc40
    dpu_blk = 0
    for x in range(0, kw, sk_w):
        for y in range(0, kh, sk_h):
            e = min(kh - y, sk_h) * min(kw - x, sk_w)
            if q.hw in ("pool",):
                steps = 1
                cyc = max(4, e) * nu_xy * nu_c
                if a.macs != 32:
                    cyc *= q.ifm_bits // 2
            elif q.hw == "depthwise":
                steps = _ceil(e, 4)
                cyc = max(wb, 4 * nu_xy * (q.ifm_bits // 8)) * steps * nu_c
            elif (q.hw == "conv" and cfg.traversal != "PartKernel") or q.hw in (
                "vector",
                "reduce_sum",
            ):
                steps = e
                cyc = max(wb, 4 * nu_xy) * steps * nu_c
            else:
                steps = _ceil(e, 2 if q.ifm_bits == 16 else 4)
                cyc = max(wb, 4 * nu_xy) * steps * nu_c * _ceil(ifm_b[2], 8)
            delay = 0
            if a.macs == 32:
                d = 7 if acc40 else 3
                if nu_xy == 1:
                    if nu_c == 1:
                        delay = d * steps
                    elif steps > 1:
                        delay = d * (steps - 1) * nu_c
                if (nu_w == 1 or nu_h == 1) and nu_c > 1 and acc40:
                    delay += d * nu_c
            else:
                d = 3 if (acc40 and a.macs <= 128) else 2
                if nu_xy == 1:
                    if nu_c == 1:
                        delay = d * steps
                    elif steps > 1:
                        delay = d * (steps - 1) * nu_c
            if q.hw == "conv" and cfg.traversal == "PartKernel":
                delay *= _ceil(ifm_b[2], 8)
            dpu_blk += cyc + delay
    if q.hw in ("conv", "vector", "reduce_sum"):
        dpu_blk *= _ceil(q.ifm[2], ifm_b[2])
    # Vela 5.2 counts OFM blocks fractionally (OFM volume / block volume)
    n_blocks = _elems(q.ofm) / _elems(ofm_b)
    cpe, _ = _output_cycles_per_element(a, q, cfg, fm, const)
    out_blk = int(cpe * _elems(ofm_b))
    if q.scale_bytes:
        out_blk = max(out_blk, 10 * ofm_b[2] * const.read_latency // 256)
    cmd = (_min_memory_cycles(q, cfg, fm, const) + out_blk + dpu_blk) // 4
    if parts is not None:
        parts.update(
            dpu_blk=dpu_blk,
            out_blk=out_blk,
            n_blocks=n_blocks,
            cmd=cmd,
            ofm_b=ofm_b,
            minmem=_min_memory_cycles(q, cfg, fm, const),
        )
    dpu_blk = max(dpu_blk, cmd)
    out_blk = max(out_blk, cmd)
    if dpu_blk > out_blk:
        total = dpu_blk * n_blocks + out_blk
    else:
        total = out_blk * n_blocks + dpu_blk
    # pipeline fill and drain: the first IFM block read and the last OFM block write
    total += _min_memory_cycles(q, cfg, fm, const)
    macs = kh * kw * _elems(q.ofm)
    if q.hw not in ("depthwise", "pool"):
        macs *= q.ifm[2]
    return int(total), macs


def feature_map_bytes(
    q: NpuQuery, cfg: BlockConfig, fm: AxiMemory, const: AxiMemory
) -> tuple[dict[str, dict[str, int]], int]:
    """({memory: {read, write}} burst-scaled feature-map bytes, weight re-fetch count)."""
    ifm_b = _min3(q.ifm, cfg.ifm)
    ofm_b = _min3(q.ofm, cfg.ofm)
    blocks = (_ceil(q.ofm[0], ofm_b[0]), _ceil(q.ofm[1], ofm_b[1]), _ceil(q.ofm[2], ofm_b[2]))
    if q.hw in ("depthwise", "pool"):
        blocks = (blocks[0], blocks[1], 1)
    refetch = 1
    ifm2_elems = 0
    rnd = 16 if q.ifm_brick else 1
    if q.hw == "elementwise":
        ofm_r = q.ofm[0] * q.ofm[1] * _round_up(q.ofm[2], rnd)
        if _elems(q.ifm) == 1:
            # a scalar first operand: wider than 8 bits it is read once, else it rides in
            # a register and the second operand is streamed
            ifm_elems = _round_up(1, rnd) if q.ifm_bits > 8 else 0
            if q.ifm_bits <= 8 and q.ifm2 is not None:
                ifm2_elems = ofm_r
        else:
            ifm_elems = ofm_r
            if q.ifm2 is not None:
                ifm2_elems = ofm_r
    else:
        kh, kw = q.kernel
        sk_h, sk_w = (1, 1) if q.hw == "vector" else (8, 8)
        subkernels = _ceil(kw, sk_w) * _ceil(kh, sk_h)
        fetch = ifm_b[0] * ifm_b[1] * _round_up(q.ifm[2], rnd)
        ifm_elems = fetch * subkernels * blocks[0] * blocks[1] * blocks[2]
        refetch = blocks[0] * blocks[1]
    out: dict[str, dict[str, int]] = {}

    def add(mem: AxiMemory, rw: str, n: int) -> None:
        if n:
            t = out.setdefault(mem.name, {"read": 0, "write": 0})
            t[rw] += int(n)

    for shape, elems, brick, is_const in (
        (q.ifm, ifm_elems, q.ifm_brick, q.ifm_const),
        (q.ifm2, ifm2_elems, q.ifm2_brick, q.ifm2_const),
    ):
        if shape is None or not elems:
            continue
        mem = const if is_const else fm
        add(
            mem,
            "read",
            _burst_bytes(mem, brick, True, q.ifm_bits, cfg.ifm, shape, elems * q.ifm_bits // 8),
        )
    rnd_o = 16 if q.ofm_brick else 1
    ofm_bytes = q.ofm[0] * q.ofm[1] * _round_up(q.ofm[2], rnd_o) * q.ofm_bits // 8
    add(fm, "write", _burst_bytes(fm, q.ofm_brick, False, q.ofm_bits, cfg.ofm, q.ofm, ofm_bytes))
    return out, refetch


# -- weight compression ----------------------------------------------------------------------


def _grc_bits(u: np.ndarray) -> int:
    """Fewest bits of a Golomb-Rice code of the non-negative values ``u`` over divisors 2^k."""
    if u.size == 0:
        return 0
    return int(min(np.sum((u >> k) + 1 + k) for k in range(8)))


def encoded_weight_bytes(w: np.ndarray, chunk: int = 512) -> int:
    """Estimated size of the weight stream after Ethos-U weight compression.

    The U55 weight decoder reads a lossless stream: sign-folded weight values coded with
    Golomb-Rice codes, optionally with runs of zeros coded separately. We estimate the size
    per ``chunk`` of weights as the better of the two codings with the best divisor; checked
    against Vela's encoder (ethosu.mlw_codec) within ~10 % on the shared models (tests).
    """
    v = np.asarray(w, dtype=np.int64).reshape(-1)
    bits = 0
    for i in range(0, v.size, chunk):
        c = v[i : i + chunk]
        u = np.abs(c) * 2 - (c < 0)
        plain = _grc_bits(u)
        nz = np.flatnonzero(c)
        un = u[nz] - 1
        runs = np.diff(np.concatenate(([-1], nz, [c.size]))) - 1
        bits += min(plain, _grc_bits(un) + _grc_bits(runs)) + 16  # + slice header
    return _ceil(bits, 8)


def weight_buffering(
    q: NpuQuery, cfg: BlockConfig, refetch: int, prev_cycles: int | None, const: AxiMemory
) -> str:
    """How Vela's scheduler stages an op's encoded weights (reproduces its choices on the
    shared models, docs/ethos-u55.md section 3.3):

    * "first": the network's first op copies its weights to SRAM with nothing to hide behind;
    * "prefetch": the weights fit in the flash transfer the previous op's time hides, so they
      are in SRAM when the op starts (flash pays only the scale stream);
    * "double": too big to hide, but used by several OFM blocks (streaming them per block
      would cost more), or at least half can be hidden and the OFM depth splits into two
      halves of whole OFM blocks: the first depth slice is prefetched, the rest streams in
      during the op;
    * "none": fully-connected weights, depthwise weights used by one OFM block, and single-
      slice weights too big to prefetch are read straight from flash.
    """
    if q.hw not in ("conv", "depthwise"):
        return "none"
    if q.hw == "depthwise" and refetch == 1 and prev_cycles is not None:
        return "none"
    if prev_cycles is None:
        return "first"
    if q.weight_bytes <= prev_cycles * const.bytes_per_cycle:
        return "prefetch"
    hidden = prev_cycles * const.bytes_per_cycle
    halves = 2 * hidden >= q.weight_bytes and q.ofm[2] % (2 * cfg.ofm[2]) == 0
    if q.hw == "conv" and (halves or refetch > 1):
        return "double"
    return "none"


# -- the tile -----------------------------------------------------------------------------------


@dataclass
class U55Plan:
    """Per-op estimates for a graph's NPU ops (in execution order)."""

    costs: dict[str, NpuLayerCost]
    queries: dict[str, list[NpuQuery]]


class EthosU55Tile(NpuTile):
    """Arm Ethos-U55 with 32/64/128/256 MACs per cycle, as Vela estimates it."""

    kind = "ethos-u55"

    def __init__(self, config: dict[str, Any], device: Any, origin: str = ""):
        super().__init__(config, device, origin)
        where = f"{origin or device.name}: key 'npu"
        macs = config.get("macs")
        if macs not in (32, 64, 128, 256):
            raise DeviceError(f"{where}.macs': {macs!r} is not one of 32, 64, 128, 256")
        self.arch = u55_arch(int(macs))
        mems = config.get("memories")
        if not isinstance(mems, dict) or not mems:
            raise DeviceError(f"{where}.memories': missing (one table per memory the NPU reaches)")
        names = {m.name for m in device.memories}
        self.axi: dict[str, AxiMemory] = {}
        for name, t in mems.items():
            if name not in names:
                raise DeviceError(f"{where}.memories.{name}': no device memory named {name!r}")
            try:
                self.axi[name] = AxiMemory(
                    name=name,
                    bytes_per_cycle=float(t["bytes_per_cycle"]),
                    read_latency=int(t["read_latency"]),
                    write_latency=int(t["write_latency"]),
                    burst_bytes=int(t["burst_bytes"]),
                )
            except KeyError as e:
                raise DeviceError(f"{where}.memories.{name}': missing key {e}") from None
        fm_name = config.get("feature_maps") or device.memory_for("arena").name
        w_name = config.get("weights") or device.memory_for("constants").name
        for key, name in (("feature_maps", fm_name), ("weights", w_name)):
            if name not in self.axi:
                raise DeviceError(f"{where}.{key}': memory {name!r} has no npu.memories entry")
        self.fm = self.axi[fm_name]
        self.const = self.axi[w_name]
        self.pj_per_mac = float(config.get("pj_per_mac", 0.0))
        self._plans: dict[int, tuple[Any, U55Plan]] = {}  # id(graph) -> (graph, plan)

    # -- what runs where ------------------------------------------------------------
    def supports(self, graph, op) -> NpuSupport:
        # The U55 computes 8-bit (and 16-bit) TFLite arithmetic: sub-byte, binary and
        # threshold-requantized layers stay on the CPU.
        for n in list(op.inputs) + list(op.outputs):
            t = graph.tensors[n] if n else None
            if t is not None and not t.dtype.is_float and (t.dtype.bits < 8 or t.dtype.binary):
                return NpuSupport(False, f"tensor {t.name!r} is {t.dtype}: Ethos-U55 is 8/16-bit")
        if getattr(op.attrs, "requant", "fixed_point") != "fixed_point":
            return NpuSupport(False, f"requant {op.attrs.requant!r}: Ethos-U55 is TFLite-only")
        ok, reason = u55_supports(graph, op)
        return NpuSupport(ok, reason)

    def plan(self, graph, ops: list) -> U55Plan:
        costs: dict[str, NpuLayerCost] = {}
        queries: dict[str, list[NpuQuery]] = {}
        prev_cycles = None
        for op in ops:
            try:
                qs = op_queries(self.arch, graph, op)
            except FitError as e:
                raise FitError(f"layer {op.name!r}: {e}") from None
            queries[op.name] = qs
            cost = self._cost(qs, prev_cycles)
            costs[op.name] = cost
            if qs:
                prev_cycles = cost.cycles
        return U55Plan(costs, queries)

    def layer_cost(self, graph, op, plan: Any) -> NpuLayerCost:
        """Cost of ``op``; without a plan (standalone use) the graph's supported ops are
        planned once, in order, so weight prefetching sees the previous layer."""
        if not isinstance(plan, U55Plan) or op.name not in plan.costs:
            graph_seen, plan = self._plans.get(id(graph), (None, None))
            if graph_seen is not graph or op.name not in plan.costs:
                plan = self.plan(graph, [o for o in graph.ops if self.supports(graph, o).ok])
                self._plans[id(graph)] = (graph, plan)
            if op.name not in plan.costs:
                plan = self.plan(graph, [op])
        return plan.costs[op.name]

    def _cost(self, qs: list[NpuQuery], prev_cycles: int | None) -> NpuLayerCost:
        a, fm, const = self.arch, self.fm, self.const
        npu = 0
        macs = 0
        traffic: dict[str, dict[str, int]] = {}

        def add(mem: str, rw: str, n: int) -> None:
            if n:
                t = traffic.setdefault(mem, {"read": 0, "write": 0})
                t[rw] += int(n)

        notes: list[str] = []
        done: dict[str, int] = {}
        mem_total = op_total = 0
        for q in qs:
            cfg = find_block_config(a, q)
            cyc, m = npu_cycles(a, q, cfg, fm, const)
            npu += cyc
            macs += m
            fm_bytes, refetch = feature_map_bytes(q, cfg, fm, const)
            for mem, t in fm_bytes.items():
                for rw, n in t.items():
                    add(mem, rw, n)
            if q.weight_bytes:
                mode = weight_buffering(q, cfg, refetch, prev_cycles, const)
                add(const.name, "read", refetch * q.scale_bytes)
                if mode == "none":  # streamed from where they live, per OFM block
                    add(const.name, "read", refetch * q.weight_bytes)
                else:  # copied into SRAM, read from there per OFM block
                    add(fm.name, "write", q.weight_bytes)
                    add(fm.name, "read", refetch * q.weight_bytes)
                    hidden = 0 if prev_cycles is None else prev_cycles * const.bytes_per_cycle
                    if mode == "first":
                        add(const.name, "read", q.weight_bytes)
                    elif mode == "double":
                        add(const.name, "read", max(0, q.weight_bytes - int(hidden)))
                notes.append(f"weights {q.weight_bytes} B encoded ({mode} buffering)")
            if q.lut_bytes:
                add(const.name, "read", q.lut_bytes)
            # each NPU command costs the larger of its compute and its memory transfers
            q_mem = (
                max(
                    (sum(t.values()) - done.get(name, 0)) / self.axi[name].bytes_per_cycle
                    for name, t in traffic.items()
                )
                if traffic
                else 0
            )
            done = {name: sum(t.values()) for name, t in traffic.items()}
            mem_total += int(q_mem)
            op_total += max(cyc, int(q_mem))
            prev_cycles = max(cyc, int(q_mem))
            notes.append(
                f"{q.hw} ofm block {cfg.ofm[0]}x{cfg.ofm[1]}x{cfg.ofm[2]} ({cfg.traversal})"
            )
        energy = macs * self.pj_per_mac * 1e-12
        for name, t in traffic.items():
            try:
                m = self.device.memory(name)
            except KeyError:
                continue
            energy += (t["read"] * m.read_pj_per_byte + t["write"] * m.write_pj_per_byte) * 1e-12
        if not qs:
            notes.append("memory-only op (no NPU command)")
        return NpuLayerCost(
            cycles=op_total,
            compute_cycles=npu,
            memory_cycles=mem_total,
            traffic=traffic,
            energy_j=energy,
            notes=notes[:4] + ([f"+{len(notes) - 4} NPU commands"] if len(notes) > 4 else []),
            estimate=True,
        )

    def transfer_cycles(self, nbytes: int) -> int:
        """The NPU and the CPU share the SRAM: nothing to copy between engines."""
        return 0

    def compute_kernel(self, graph, op):
        """None: the U55 computes TFLite's integer arithmetic (docs/ethos-u55.md section 5)."""
        return None


# -- lowering: mcusim ops -> NPU operations -----------------------------------------------------


def _hwc(shape: tuple[int, ...]) -> Shape3:
    """NHWC (or N..C) tensor shape as (H, W, C); lower ranks put everything in W and C."""
    s = tuple(int(d) for d in shape)
    if len(s) == 4:
        return (s[1], s[2], s[3])
    if len(s) == 3:
        return (1, s[1], s[2])
    if len(s) == 2:
        return (1, 1, s[1])
    return (1, 1, s[0] if s else 1)


def _bits(t) -> int:
    return max(8, int(getattr(t.dtype, "bits", 8)))


def _act(op) -> str:
    return str(getattr(op.attrs, "activation", "none") or "none")


def _weight_streams(a: U55Arch, q: NpuQuery, w: np.ndarray, depthwise: bool = False) -> NpuQuery:
    """``q`` with its encoded weight and scale stream sizes.

    The encoder works on the weights in the order the MAC array consumes them, zero-padded
    to whole micro-blocks: output channels to the OFM micro-block depth, input channels to
    the IFM block depth (32 depth-first, 8 part-kernel), kernel elements to 4 (part-kernel),
    one stream per OFM block depth, each 16-byte aligned; checked against Vela's encoder
    (ethosu.mlw_codec.reorder_encode)."""
    cfg = find_block_config(a, q)
    w = np.asarray(w, dtype=np.int64)
    if w.ndim == 2:  # fully connected (O, I)
        w = w.reshape(w.shape[0], 1, 1, w.shape[1])
    if depthwise:  # (1, kh, kw, C) -> per output channel (C, kh, kw, 1)
        w = np.moveaxis(w, 3, 0)
    o, kh, kw, i = w.shape
    ub_o = a.ofm_ublock[2]
    part = cfg.traversal == "PartKernel"
    ic = 1 if q.hw == "depthwise" else (a.ifm_ublock[2] if part else 32)
    # part-kernel-first steps through the kernel 4 elements (8-bit) at a time
    k = kh * kw
    k_p = _round_up(k, 4 if q.ifm_bits == 8 else 2) if part else k
    o_p, i_p = _round_up(o, ub_o), _round_up(i, ic)
    pad = np.zeros((o_p, k_p, i_p), dtype=np.int64)
    pad[:o, :k, :i] = w.reshape(o, k, i)
    order = pad.reshape(o_p // ub_o, ub_o, k_p, i_p // ic, ic).transpose(0, 3, 2, 1, 4)
    order = order.reshape(o_p // ub_o, -1)
    per_stream = max(1, cfg.ofm[2] // ub_o)
    enc = 0
    for s0 in range(0, order.shape[0], per_stream):
        enc += _round_up(
            encoded_weight_bytes(order[s0 : s0 + per_stream].reshape(-1)), a.stream_align
        )
    scales = _round_up(a.scale_bytes_per_channel * o, a.stream_align)
    return replace(q, weight_bytes=enc, scale_bytes=scales)


def _softmax_queries(n: int, bits: int) -> list[NpuQuery]:
    """Vela (Regor) lowers an 8-bit softmax over ``n`` classes to 28 NPU commands: a max
    pool for the row maximum, x - max through the exp LUT, a shift, a reduce-sum, then a
    Newton-Raphson reciprocal of the sum on one element (CLZ, shifts, three iterations of
    multiply/subtract/add with constants from the weights memory) and the final scaling.
    Intermediate tensors are NHCWB16; "c" marks the input that is a constant."""
    row, one = (1, 1, n), (1, 1, 1)

    def ew(
        kind,
        ifm,
        ifm2,
        ofm,
        *,
        ob=32,
        ib=32,
        c1=False,
        c2=False,
        b1=True,
        b2=True,
        bo=True,
        act="none",
        lut=0,
    ):
        return NpuQuery(
            "elementwise",
            kind,
            ifm,
            ofm,
            ifm2=ifm2,
            ifm_bits=ib,
            ofm_bits=ob,
            activation=act,
            lut_bytes=lut,
            ifm_const=c1,
            ifm2_const=c2,
            ifm_brick=b1 and not c1,
            ifm2_brick=b2 and not c2,
            ofm_brick=bo,
        )

    qs = [
        NpuQuery("pool", "maxpool", (1, n, 1), one, kernel=(1, n), ifm_bits=bits, ofm_brick=True),
        ew("sub", row, one, row, ib=bits, b1=False, act="lut"),
        ew("other", row, one, row, c2=True, bo=False),
        NpuQuery("reduce_sum", "other", row, one, ifm_bits=32, ofm_bits=32, ofm_brick=True),
        ew("other", one, None, one),  # count leading zeros
        ew("sub", one, one, one, c1=True),
        ew("sub", one, one, one, c2=True),
        ew("other", one, one, one),  # shift left
    ]
    steps = (("mul", 2), ("add", 2), ("mul", 0))
    for it in range(3):  # Newton-Raphson iterations: 1/x
        if it:
            steps = (("sub", 1), ("mul", 0), ("mul", 2), ("add", 0), ("mul", 0))
        for kind, c in steps:
            qs.append(ew(kind, one, one, one, c1=c == 1, c2=c == 2))
    qs += [
        ew("sub", one, one, one, c1=True),
        ew("mul", one, one, one),
        ew("mul", one, one, one, c2=True),
        ew("add", one, one, one),
        ew("mul", row, one, row),
        ew("add", row, row, row, c1=True),
        ew("other", row, one, row, ob=bits, bo=False),
    ]
    return qs


_NHWC_USERS = ("reshape", "squeeze", "fully_connected", "softmax", "concat", "transpose")


def _brick(graph, name: str) -> bool:
    """Vela keeps NPU-internal feature maps in 16-channel bricks (NHCWB16); graph inputs and
    outputs, and tensors a reshape / FC / softmax / concat touches, stay NHWC."""
    if name in graph.inputs or name in graph.outputs:
        return False
    for o in graph.ops:
        if (name in o.inputs or name in o.outputs) and o.kind in _NHWC_USERS:
            return False
    return True


def op_queries(a: U55Arch, graph, op) -> list[NpuQuery]:
    """The NPU operations ``op`` lowers to (empty for memory-only ops)."""
    return _lower(a, graph, op)


def _lower(a: U55Arch, graph, op) -> list[NpuQuery]:
    t = graph.tensors
    k = op.kind
    if k in _MEMORY_ONLY:
        return []
    x = t[op.inputs[0]]
    y = t[op.outputs[0]]
    ifm, ofm = _hwc(x.shape), _hwc(y.shape)
    ib, ob = _bits(x), _bits(y)
    act = _act(op)
    if k in ("conv2d", "depthwise_conv2d"):
        w = t[op.inputs[1]].data
        kh, kw = int(w.shape[1]), int(w.shape[2])
        to_conv = k == "depthwise_conv2d" and ifm[2] == 1 and ofm[2] > 1
        hw = "conv" if k == "conv2d" or to_conv else "depthwise"
        q = NpuQuery(
            hw,
            "conv",
            ifm,
            ofm,
            kernel=(kh, kw),
            stride=tuple(op.attrs.stride),
            dilation=tuple(op.attrs.dilation),
            ifm_bits=ib,
            ofm_bits=ob,
            activation=act,
            ifm_brick=_brick(graph, op.inputs[0]),
            ofm_brick=_brick(graph, op.outputs[0]),
        )
        return [_weight_streams(a, q, w, depthwise=k == "depthwise_conv2d")]
    if k == "fully_connected":
        w = t[op.inputs[1]].data
        n_in = int(w.shape[1])
        batch = max(1, _elems(ifm) // n_in)
        q = NpuQuery(
            "vector",
            "conv",
            (1, batch, n_in),
            (1, batch, int(w.shape[0])),
            ifm_bits=ib,
            ofm_bits=ob,
            activation=act,
        )
        return [_weight_streams(a, q, w)]
    if k in ("avg_pool2d", "max_pool2d"):
        # a stride along an axis with one output is irrelevant; Vela normalises it to 1
        stride = tuple(1 if ofm[i] == 1 else op.attrs.stride[i] for i in range(2))
        return [
            NpuQuery(
                "pool",
                "maxpool" if k == "max_pool2d" else "avgpool",
                ifm,
                ofm,
                kernel=tuple(op.attrs.filter),
                stride=stride,
                ifm_bits=ib,
                ofm_bits=ob,
                activation=act,
                ifm_brick=_brick(graph, op.inputs[0]),
                ofm_brick=_brick(graph, op.outputs[0]),
            )
        ]
    if k in ("add", "sub", "mul"):
        x2 = t[op.inputs[1]]
        return [
            NpuQuery(
                "elementwise",
                k,
                ifm,
                ofm,
                ifm2=_hwc(x2.shape),
                ifm_bits=ib,
                ofm_bits=ob,
                activation=act,
                ifm_brick=_brick(graph, op.inputs[0]),
                ofm_brick=_brick(graph, op.outputs[0]),
            )
        ]
    if k == "softmax":
        return _softmax_queries(ifm[2], ib)
    if k == "mean":
        return [
            NpuQuery("pool", "avgpool", ifm, ofm, kernel=(ifm[0], ifm[1]), ifm_bits=ib, ofm_bits=ob)
        ]
    if k in ("logistic", "tanh", "hard_swish"):
        return [
            NpuQuery(
                "pool", "other", ifm, ofm, ifm_bits=ib, ofm_bits=ob, activation="lut", lut_bytes=256
            )
        ]
    if k in ("relu", "relu6"):
        return [NpuQuery("pool", "other", ifm, ofm, ifm_bits=ib, ofm_bits=ob, activation="relu")]
    if k == "concat":
        return [
            NpuQuery(
                "pool",
                "other",
                _hwc(t[i].shape),
                _hwc(t[i].shape),
                ifm_bits=ib,
                ofm_bits=ob,
                activation="copy",
            )
            for i in op.inputs
        ]
    # pad, quantize, transpose, strided_slice: one pass through the NPU (an AvgPool no-op)
    return [NpuQuery("pool", "other", ofm, ofm, ifm_bits=ib, ofm_bits=ob, activation="copy")]


# -- supported operators (Vela 5.2 TFLite supported-operator rules for U55) ---------------------

_SUPPORTED = (
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "avg_pool2d",
    "max_pool2d",
    "add",
    "sub",
    "mul",
    "reshape",
    "squeeze",
    "softmax",
    "logistic",
    "tanh",
    "pad",
    "concat",
    "mean",
    "transpose",
    "quantize",
    "relu",
    "relu6",
    "hard_swish",
    "strided_slice",
)


def u55_supports(graph, op) -> tuple[bool, str]:
    """Vela's checks for the U55 (ethosu/vela/tflite_supported_operators.py, 5.2): types,
    tensor sizes, strides, kernel sizes; the first failing rule is the reason."""
    k = op.kind
    if k not in _SUPPORTED:
        return False, f"{k} is not in Vela's supported-operator list for Ethos-U55"
    prec = getattr(op, "precision", None)
    if prec and prec.upper() not in ("W8A8", "W8A16"):
        return False, f"precision {prec}: the U55 runs 8-bit weights with 8/16-bit activations"
    t = graph.tensors
    for name in list(op.inputs[:1]) + list(op.outputs):
        tt = t[name]
        dn = getattr(tt.dtype, "name", str(tt.dtype)).lower()
        if k in _MEMORY_ONLY:
            break
        if dn not in ("int8", "uint8", "int16") and not (
            dn == "int32" and k in ("add", "sub", "mul")
        ):
            return False, f"tensor {name!r} is {dn}: the U55 takes int8/uint8/int16 feature maps"
        if len(tt.shape) > 4:
            return False, f"tensor {name!r} has {len(tt.shape)} dimensions (at most 4)"
        if len(tt.shape) == 4 and tt.shape[0] != 1 and k not in ("fully_connected",):
            return False, f"tensor {name!r}: batch {tt.shape[0]} (the U55 runs batch 1)"
        if any(d > 65535 for d in tt.shape):
            return False, f"tensor {name!r}: a dimension exceeds 65535"
    a = op.attrs
    if k in ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d"):
        sh, sw = a.stride
        ofm_h = t[op.outputs[0]].shape[1] if len(t[op.outputs[0]].shape) == 4 else 1
        if k == "max_pool2d" and not (1 <= sh <= 3 and 1 <= sw <= 3):
            return False, f"max pool stride {sh}x{sw}: Vela supports strides 1 to 3"
        if not (1 <= sh <= 3) and ofm_h != 1:
            return False, f"stride height {sh}: Vela supports 1 to 3 (unless the OFM height is 1)"
    if k in ("conv2d", "depthwise_conv2d"):
        w = t[op.inputs[1]]
        if w.data is None:
            return False, "weights are not constant (Vela needs constant weights)"
        kh, kw = int(w.shape[1]), int(w.shape[2])
        dh = (kh - 1) * a.dilation[0] + 1
        dw = (kw - 1) * a.dilation[1] + 1
        if dh > 64:
            return False, f"dilated kernel height {dh} > 64"
        if dh * dw > 64 * 64:
            return False, f"dilated kernel area {dh * dw} > 4096"
        wsum = np.abs(w.data.astype(np.int64) - 0).reshape(w.shape[0], -1).sum(axis=1).max()
        if wsum > 127 * 65536:
            return False, f"sum of absolute weights {wsum} > {127 * 65536}"
        if k == "depthwise_conv2d" and getattr(a, "depth_multiplier", 1) > 1:
            c_in = t[op.inputs[0]].shape[-1]
            if c_in != 1:
                return False, "depth multiplier > 1 needs 1 input channel (Vela rule)"
    if k == "avg_pool2d":
        fh, fw = a.filter
        if a.padding == "same" and (fh > 8 or fw > 8):
            return False, f"avg pool {fh}x{fw} with SAME padding: kernel at most 8x8"
        if fh > 256 or fw > 256 or fh * fw > 256 * 256:
            return False, f"avg pool kernel {fh}x{fw} exceeds 256x256"
    if k == "max_pool2d":
        fh, fw = a.filter
        if fh > 256 or fh * fw > 256 * 256:
            return False, f"max pool kernel {fh}x{fw} exceeds Vela's limits"
    if k == "fully_connected" and t[op.inputs[1]].data is None:
        return False, "weights are not constant (Vela needs constant weights)"
    return True, ""
