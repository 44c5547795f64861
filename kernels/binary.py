"""XNOR-popcount accumulators of binary-by-binary (W1A1) layers, on packed 64-bit words.

docs/precision.md section 2: with both operands in {-1, +1} (bit 1 = +1), the dot product over
n valid taps is ``n - 2 * popcount(a XOR w)``. Activations are packed at run time along the
reduction axis (the channels, innermost in NHWC) into uint64 words; weights are packed once at
prepare time with :func:`mcusim.precision.pack_rows` (the .qnn bit order). Bits past a row's end
are 0 in both operands, so they never count; padding taps are skipped, so they count neither
in n nor in the popcount.

Depthwise layers reduce over taps, not channels: the per-channel XOR bits of a tap are added
into bit-sliced counters (one word per counter bit, a ripple-carry add of a 1-bit vector), so
64 channels are counted per word operation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .fixedpoint import wrap32


@intrinsic
def popcount(typingctx, x):
    """Bits set in an unsigned or signed integer: LLVM's ctpop (int.bit_count in njit code)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (v,) = args
        assert isinstance(v.type, ir.IntType)
        return builder.ctpop(v)

    return x(x), codegen


@njit(cache=True)
def popcount_swar(v):
    """The same count by the SWAR bit trick (what a core without a popcount instruction does)."""
    v = np.uint64(v)
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (v * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, boundscheck=False)
def pack_channels(x, groups):
    """±1 int8 NHWC activations -> uint64 words (n*h*w, groups, words per group).

    Bit k of word j of group g is 1 where channel g*cg + j*64 + k holds +1 (cg = c / groups);
    the same layout :func:`mcusim.precision.pack_rows` gives the weights.
    """
    n_b, h, wd, c = x.shape
    cg = c // groups
    nw = (cg + 63) // 64
    x2 = x.reshape((n_b * h * wd, c))
    out = np.zeros((n_b * h * wd, groups, nw), np.uint64)
    for r in range(n_b * h * wd):
        for g in range(groups):
            for j in range(nw):
                lo = j * 64
                hi = min(lo + 64, cg)
                word = np.uint64(0)
                for k in range(hi - lo):
                    word |= np.uint64(x2[r, g * cg + lo + k] > 0) << np.uint64(k)
                out[r, g, j] = word
    return out


@njit(cache=True, boundscheck=False)
def xnor_conv_acc(xp, n_b, h, wd, wp, bias, geom, cg):
    """int32 accumulators (n*oh*ow, cout) of a binary convolution (grouped allowed).

    ``xp`` (n*h*w, groups, nw) from :func:`pack_channels`; ``wp`` (kh*kw, nw, cout) packed
    weights; ``cg`` input channels per group. acc = bias + n_valid*cg - 2*popcount(x ^ w).
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    groups = xp.shape[1]
    nw = xp.shape[2]
    cout = wp.shape[2]
    cout_g = cout // groups
    acc = np.empty((n_b * oh * ow, cout), np.int32)
    pc = np.empty(cout, np.int64)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            for ox in range(ow):
                ix0 = ox * sw - pw
                r = (b * oh + oy) * ow + ox
                pc[:] = 0
                nv = 0
                for ky in range(kh):
                    iy = iy0 + ky * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        if ix < 0 or ix >= wd:
                            continue
                        nv += 1
                        row = (b * h + iy) * wd + ix
                        t = ky * kw + kx
                        for g in range(groups):
                            c0 = g * cout_g
                            for j in range(nw):
                                xw = xp[row, g, j]
                                for c in range(cout_g):
                                    pc[c0 + c] += popcount(xw ^ wp[t, j, c0 + c])
                n = np.int64(nv * cg)
                for c in range(cout):
                    acc[r, c] = wrap32(np.int64(bias[c]) + n - 2 * pc[c])
    return acc


@njit(cache=True, boundscheck=False)
def xnor_depthwise_acc(xp, n_b, h, wd, wp, bias, geom, n_planes):
    """int32 accumulators (n*oh*ow, cout) of a binary depthwise convolution.

    ``xp`` (n*h*w, nw): the input channels, repeated depth-multiplier times so that bit c is
    output channel c's input, packed in words; ``wp`` (kh*kw, nw). Per output pixel each valid
    tap's XOR word is added into ``n_planes`` bit-sliced counters (2^n_planes > kh*kw).
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    nw = xp.shape[1]
    cout = bias.shape[0]
    acc = np.empty((n_b * oh * ow, cout), np.int32)
    planes = np.empty((n_planes, nw), np.uint64)
    one = np.uint64(1)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            for ox in range(ow):
                ix0 = ox * sw - pw
                r = (b * oh + oy) * ow + ox
                planes[:, :] = 0
                nv = 0
                for ky in range(kh):
                    iy = iy0 + ky * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        if ix < 0 or ix >= wd:
                            continue
                        nv += 1
                        row = (b * h + iy) * wd + ix
                        t = ky * kw + kx
                        for j in range(nw):
                            carry = xp[row, j] ^ wp[t, j]
                            for i in range(n_planes):
                                p = planes[i, j]
                                planes[i, j] = p ^ carry
                                carry = p & carry
                for c in range(cout):
                    j = c >> 6
                    s = np.uint64(c & 63)
                    cnt = np.int64(0)
                    for i in range(n_planes):
                        cnt += np.int64((planes[i, j] >> s) & one) << i
                    acc[r, c] = wrap32(np.int64(bias[c]) + nv - 2 * cnt)
    return acc
