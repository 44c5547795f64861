"""Model inputs: check what the user gave, or draw seeded random ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError
from .graph import Graph


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Uniform random values over each input's full integer range (normal for float)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype.is_float:
            out.append(rng.standard_normal(t.shape).astype(np.float32))
        elif t.dtype.binary:  # values are -1 / +1 (docs/precision.md section 1)
            out.append((2 * rng.integers(0, 1, size=t.shape, endpoint=True) - 1).astype(np.int8))
        else:
            out.append(
                rng.integers(t.dtype.min, t.dtype.max, size=t.shape, endpoint=True).astype(
                    t.dtype.np_dtype
                )
            )
    return out


def check_inputs(
    graph: Graph, inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Inputs in graph order, with the exact shape and dtype the model wants.

    Integer arrays of another integer dtype are accepted when every value fits the
    model's type (e.g. int64 arrays from ``np.load``); anything else is an InputError.
    Inputs the model declares channel-first (``graph.metadata["input_layouts"]``, e.g.
    ai8x networks, whose sample inputs are CHW or (C, L)) are also accepted in that layout.
    """
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        missing = [n for n in graph.inputs if n not in inputs]
        extra = [n for n in inputs if n not in graph.inputs]
        if missing or extra:
            raise InputError(
                f"inputs by name: missing {missing}, unknown {extra}; model inputs are "
                f"{graph.inputs}"
            )
        inputs = [inputs[n] for n in graph.inputs]
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise InputError(f"model takes {len(graph.inputs)} input(s), got {len(inputs)}")
    out = []
    for i, (name, x) in enumerate(zip(graph.inputs, inputs, strict=True)):
        t = graph.tensors[name]
        x = np.asarray(x)
        layout = (graph.metadata.get("input_layouts") or {}).get(name)
        if layout == "channels_first" and tuple(x.shape) != tuple(t.shape):
            x = _from_channels_first(x, tuple(t.shape))
        if tuple(x.shape) != tuple(t.shape):
            raise InputError(
                f"input {i} ({name!r}) has shape {tuple(x.shape)}, the model expects "
                f"{tuple(t.shape)}"
            )
        want = t.dtype.np_dtype
        if x.dtype != want:
            ok = (
                np.issubdtype(x.dtype, np.integer)
                and not t.dtype.is_float
                and (x.size == 0 or (x.min() >= t.dtype.min and x.max() <= t.dtype.max))
            ) or (t.dtype.is_float and np.issubdtype(x.dtype, np.floating))
            if not ok:
                raise InputError(
                    f"input {i} ({name!r}) has dtype {x.dtype}, the model expects {want} "
                    f"(values {t.dtype.min}..{t.dtype.max})"
                )
            x = x.astype(want)
        out.append(np.ascontiguousarray(x))
    return out


def _from_channels_first(x: np.ndarray, nhwc: tuple[int, ...]) -> np.ndarray:
    """(C, H, W) or (C, L) data for an NHWC (1, H, W, C) / (1, L, 1, C) input; unchanged if
    the shape is neither (the caller then reports the mismatch)."""
    if len(nhwc) != 4 or nhwc[0] != 1:
        return x
    _, h, w, c = nhwc
    if x.shape == (c, h, w):
        return x.transpose(1, 2, 0)[None]
    if w == 1 and x.shape == (c, h):
        return x.T[None, :, None, :]
    return x
