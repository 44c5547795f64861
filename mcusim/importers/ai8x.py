"""ai8x (MAX78000) models: izer network YAML + quantized checkpoint -> mcusim Graph.

Each YAML layer is one accelerator layer. In the IR it becomes a short chain that the
MAX78000 tile fuses back into one hardware layer (docs/max78000.md section 2):

    [max_pool2d | avg_pool2d(rounding="trunc")] -> [pad (zeros)] -> conv2d(requant="ai8x")
    [pool] -> reshape (flatten) -> fully_connected(requant="ai8x")
    [pool] -> (passthrough: the pool alone, or a reshape)

Activations are NHWC int8 with zero point 0 (scale 1/128, the ai8x convention); Conv1d is a
conv2d with W = 1. Weights keep their integer values (int8 / int4 / int2 tensors), the op's
``output_shift`` is izer's effective shift (checkpoint shift + 8 − weight bits), and the bias
is stored as int32 ``bias8·128``. A 32-bit (``output_width: 32``) layer has an int32 output.

The checkpoint (a PyTorch zip of pickles) is read by :func:`load_checkpoint`, a restricted
unpickler that admits only tensor data (README of ../shared/ai8x, section 8).
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import INT8, INT32, Quant, elem_type
from ..errors import ModelFormatError, UnsupportedOpError
from ..graph import Graph, Op, Tensor
from ..ops import (
    Conv2DAttrs,
    FullyConnectedAttrs,
    PadAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
)

# -- restricted checkpoint reader --------------------------------------------------------
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass(frozen=True)
class InertClass:
    """Stands in for a class the checkpoint names but we never build (the optimizer type)."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"refusing to instantiate {self.name}")


def _rebuild_tensor(storage, offset, size, stride, *_rest) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 over a numpy storage: a strided copy."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return storage[int(offset)].copy()
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if any(n == 0 for n in size):
        return np.zeros(size, dtype=storage.dtype)
    if last >= storage.size or offset < 0 or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("tensor view reaches outside its storage")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(offset) :], shape=size, strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, *_rest) -> np.ndarray:
    return data


class _Unpickler(pickle.Unpickler):
    """Admits OrderedDict, the tensor rebuild functions and plain storage types; maps
    ``torch.optim.*`` classes to an inert placeholder; refuses every other global."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._zf, self._prefix, self._cache = zf, prefix, {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _StorageType(np.dtype(_STORAGES[name]))
        if re.fullmatch(r"torch\.optim(\.\w+)*", module) and name.isidentifier():
            return InertClass(f"{module}.{name}")
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.60}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType) or not re.fullmatch(r"\w+", key):
            raise pickle.UnpicklingError(f"bad storage reference {pid!r:.60}")
        if key not in self._cache:
            try:
                raw = self._zf.read(f"{self._prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key} missing from the archive") from None
            arr = np.frombuffer(raw, dtype=stype.dtype.newbyteorder("<")).astype(stype.dtype)
            if arr.size < numel:
                raise pickle.UnpicklingError(f"storage {key} holds {arr.size} < {numel} elements")
            self._cache[key] = arr
        return self._cache[key]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary with every tensor as a numpy array (never plain pickle)."""
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelFormatError(f"not a PyTorch zip checkpoint: {e}", file=str(p)) from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise ModelFormatError("checkpoint has no single data.pkl", file=str(p))
        prefix = pkls[0][: -len("data.pkl")]
        try:
            obj = _Unpickler(io.BytesIO(zf.read(pkls[0])), zf, prefix).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ModelFormatError(f"checkpoint refused: {e}", file=str(p)) from None
    if not isinstance(obj, dict):
        raise ModelFormatError("checkpoint is not a dictionary", file=str(p))
    return obj


# -- network YAML -----------------------------------------------------------------------
def _pair(v: Any, conv1d: bool) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        a = tuple(int(x) for x in v)
        return (a[0], 1) if len(a) == 1 else (a[0], a[1])
    if isinstance(v, str) and "x" in v.lower():
        a, b = v.lower().split("x")
        return int(a), int(b)
    return (int(v), 1) if conv1d else (int(v), int(v))


def _scalar(a: np.ndarray | float | int) -> float:
    return float(np.asarray(a).reshape(-1)[0])


_OPERATORS = {
    "conv2d": "conv2d",
    "conv1d": "conv1d",
    "mlp": "linear",
    "linear": "linear",
    "fc": "linear",
    "fullyconnected": "linear",
    "none": "passthrough",
    "passthrough": "passthrough",
}


def _sample_for(yaml_path: Path, cfg: dict) -> Path | None:
    ds = str(cfg.get("dataset", "")).lower()
    cand = yaml_path.resolve().parent.parent / "tests" / f"sample_{ds}.npy"
    return cand if ds and cand.is_file() else None


def load_ai8x(
    yaml_path: str | Path,
    checkpoint: str | Path,
    input_shape: tuple[int, ...] | None = None,
) -> Graph:
    """Graph of an izer network. ``input_shape`` is (C, H, W) or (C, L) for Conv1d; by
    default it comes from izer's sample input ``tests/sample_<dataset>.npy`` next to the
    ``networks/`` folder, as izer itself finds it."""
    import yaml

    yp = Path(yaml_path)
    try:
        cfg = yaml.safe_load(yp.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ModelFormatError(f"cannot read network YAML: {e}", file=str(yp)) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ModelFormatError("network YAML has no 'layers' list", file=str(yp))
    ck = load_checkpoint(checkpoint)
    arch = ck.get("arch")
    if cfg.get("arch") and arch and cfg["arch"] != arch:
        raise ModelFormatError(
            f"YAML arch {cfg['arch']!r} differs from checkpoint arch {arch!r}", file=str(yp)
        )
    sd = ck.get("state_dict")
    if not isinstance(sd, dict):
        raise ModelFormatError("checkpoint has no state_dict", file=str(checkpoint))
    if input_shape is None:
        sample = _sample_for(yp, cfg)
        if sample is None:
            raise ModelFormatError(
                "no input shape: pass input_shape (C,H,W) or (C,L); izer's sample "
                f"tests/sample_{str(cfg.get('dataset', '')).lower()}.npy was not found",
                file=str(yp),
            )
        input_shape = tuple(np.load(sample, allow_pickle=False).shape)
    return _build(cfg, sd, tuple(int(s) for s in input_shape), yp, ck)


def _weight_keys(sd: dict) -> list[str]:
    """izer: the n-th state_dict key ending in 'weight' feeds the n-th weighted layer."""
    return [k for k in sd if k.endswith("weight") and len(k.split(".")) >= 3]


def _build(cfg: dict, sd: dict, in_shape: tuple[int, ...], yp: Path, ck: dict) -> Graph:
    layers = cfg["layers"]
    wkeys = _weight_keys(sd)
    tensors: dict[str, Tensor] = {}
    ops: list[Op] = []
    act_q = Quant(np.array([1 / 128], np.float32), np.array([0]))
    first_op = _OPERATORS.get(
        str(layers[0].get("op", layers[0].get("operation", "conv2d"))).lower().replace("_", "")
    )
    if len(in_shape) == 2 or first_op == "conv1d":
        c, h = in_shape[0], in_shape[1]
        shape = (1, h, 1, c)
    elif len(in_shape) == 3:
        c, h, w = in_shape
        shape = (1, h, w, c)
    else:
        raise ModelFormatError(f"input shape {in_shape} is not (C,H,W) or (C,L)", file=str(yp))
    cur = "input"
    tensors[cur] = Tensor(cur, shape, INT8, act_q)
    meta_layers = []
    wi = 0

    def add_t(name: str, shp: tuple[int, ...], dtype=INT8, q=act_q, data=None) -> str:
        tensors[name] = Tensor(name, tuple(int(s) for s in shp), dtype, q, data)
        return name

    for li, lay in enumerate(layers):
        name = str(lay.get("name", f"l{li}"))
        where = f"{yp.name} layer {li}"
        opname = str(lay.get("op", lay.get("operation", "conv2d"))).lower().replace("_", "")
        kind = _OPERATORS.get(opname)
        if kind is None:
            raise UnsupportedOpError(f"{where}: operation {opname!r} is not supported by mcusim")
        for key in ("in_sequences", "eltwise", "operands", "write_gap", "streaming", "fifo"):
            if lay.get(key) not in (None, False, 1):
                raise UnsupportedOpError(f"{where}: '{key}' is not supported by the importer yet")
        conv1d = kind == "conv1d"
        first = len(ops)
        x = tensors[cur]
        # 1. pooling (before the conv, no padding)
        pool_kind = "max_pool2d" if "max_pool" in lay else "avg_pool2d" if "avg_pool" in lay else ""
        if pool_kind:
            pk = _pair(lay.get("max_pool", lay.get("avg_pool")), conv1d)
            ps = _pair(lay.get("pool_stride", pk if not conv1d else pk[0]), conv1d)
            ph = (x.shape[1] - pk[0]) // ps[0] + 1
            pw = (x.shape[2] - pk[1]) // ps[1] + 1
            t = add_t(f"{name}.pooled", (1, ph, pw, x.shape[3]))
            attrs = Pool2DAttrs(
                pk, ps, "valid", "none", "trunc" if pool_kind[0] == "a" else "tflite"
            )
            ops.append(Op(pool_kind, f"{name}.pool", [cur], [t], attrs, source_index=li))
            cur, x = t, tensors[t]
        act = {"relu": "relu", "abs": "abs", "none": "none"}.get(
            str(lay.get("activate", lay.get("activation", "none"))).lower()
        )
        if act is None:
            raise UnsupportedOpError(f"{where}: activation {lay.get('activate')!r} not supported")
        wide = int(lay.get("output_width", 8)) == 32
        if kind == "passthrough":
            meta_layers.append(_meta(lay, li, ops[first:], "passthrough"))
            if first == len(ops):
                raise UnsupportedOpError(f"{where}: a passthrough layer without pooling")
            continue
        if wi >= len(wkeys):
            raise ModelFormatError(f"{where}: checkpoint has no weights left for this layer")
        wkey = wkeys[wi]
        wi += 1
        prefix = wkey[: -len(".op.weight")] if wkey.endswith(".op.weight") else wkey[:-7]
        wts = np.asarray(sd[wkey])
        bits = int(_scalar(sd.get(f"{prefix}.weight_bits", 8)))
        if bits not in (2, 4, 8):
            raise UnsupportedOpError(f"{where}: {bits}-bit weights are not representable yet")
        wq = np.rint(wts).astype(np.int64)
        if (
            not np.array_equal(wq, wts)
            or wq.min() < -(1 << (bits - 1))
            or wq.max() >= 1 << (bits - 1)
        ):
            raise ModelFormatError(f"{where}: {wkey} is not {bits}-bit integer data")
        shift = int(_scalar(sd.get(f"{prefix}.output_shift", 0))) + 8 - bits
        if "output_shift" in lay:
            shift = int(lay["output_shift"]) + 8 - bits
        b_name = ""
        co = wq.shape[0]
        if f"{prefix}.op.bias" in sd and lay.get("bias", True) is not False:
            b8 = np.floor(np.asarray(sd[f"{prefix}.op.bias"], np.float64) / 2 ** (bits - 1))
            if b8.min() < -128 or b8.max() > 127:
                raise ModelFormatError(f"{where}: bias of {prefix} does not fit 8 bits")
            b_name = add_t(
                f"{name}.bias", (co,), INT32, None, (b8.astype(np.int64) * 128).astype(np.int32)
            )
        wdt = INT8 if bits == 8 else elem_type(f"int{bits}")
        wquant = Quant(np.full(co, 2.0 ** -(bits - 1), np.float32), np.zeros(co, np.int64), 0)
        out_dt = INT32 if wide else INT8
        out_q = None if wide else act_q
        if kind in ("conv2d", "conv1d"):
            if conv1d:
                if wq.ndim != 3:
                    raise ModelFormatError(f"{where}: Conv1d weights {wkey} are {wq.shape}")
                w_ohwi = wq.transpose(0, 2, 1)[:, :, None, :]
            else:
                if wq.ndim != 4:
                    raise ModelFormatError(f"{where}: Conv2d weights {wkey} are {wq.shape}")
                w_ohwi = wq.transpose(0, 2, 3, 1)
            if w_ohwi.shape[3] != x.shape[3]:
                raise ModelFormatError(
                    f"{where}: {wkey} expects {w_ohwi.shape[3]} input channels, "
                    f"the layer input has {x.shape[3]}"
                )
            ksz = _pair(lay.get("kernel_size", w_ohwi.shape[1]), conv1d)
            if ksz != tuple(w_ohwi.shape[1:3]):
                raise ModelFormatError(f"{where}: kernel_size {ksz} != weights {wq.shape}")
            pad = int(lay.get("pad", 1 if not conv1d and ksz[0] == 3 else 0))
            if pad:
                pads = ((0, 0), (pad, pad), (0, 0) if conv1d else (pad, pad), (0, 0))
                shp = tuple(d + a + b for d, (a, b) in zip(x.shape, pads, strict=True))
                t = add_t(f"{name}.padded", shp)
                ops.append(Op("pad", f"{name}.pad", [cur], [t], PadAttrs(pads), source_index=li))
                cur, x = t, tensors[t]
            wt = add_t(f"{name}.weights", w_ohwi.shape, wdt, wquant, w_ohwi.astype(wdt.np_dtype))
            oh, ow = x.shape[1] - ksz[0] + 1, x.shape[2] - ksz[1] + 1
            y = add_t(f"{name}.out", (1, oh, ow, co), out_dt, out_q)
            attrs = Conv2DAttrs(activation=act, requant="ai8x", output_shift=shift)
            ops.append(Op("conv2d", f"{name}.conv", [cur, wt, b_name], [y], attrs, source_index=li))
        else:  # linear, flattened when the data is not 1x1
            h, w_, c = x.shape[1], x.shape[2], x.shape[3]
            if wq.ndim != 2 or wq.shape[1] != h * w_ * c:
                raise ModelFormatError(
                    f"{where}: Linear weights {wkey} {wq.shape} need {h * w_ * c} inputs"
                )
            if h * w_ > 1 and not lay.get("flatten", False):
                raise ModelFormatError(f"{where}: Linear on {h}x{w_} data needs 'flatten: true'")
            # izer flattens channel-first (c·H·W + h·W + w); the IR flattens NHWC
            w_nhwc = wq.reshape(co, c, h, w_).transpose(0, 2, 3, 1).reshape(co, -1)
            flat = add_t(f"{name}.flat", (1, h * w_ * c))
            ops.append(
                Op("reshape", f"{name}.flatten", [cur], [flat], ReshapeAttrs((1, h * w_ * c)),
                   source_index=li)
            )  # fmt: skip
            wt = add_t(f"{name}.weights", w_nhwc.shape, wdt, wquant, w_nhwc.astype(wdt.np_dtype))
            y = add_t(f"{name}.out", (1, co), out_dt, out_q)
            attrs = FullyConnectedAttrs(activation=act, requant="ai8x", output_shift=shift)
            ops.append(
                Op("fully_connected", f"{name}.fc", [flat, wt, b_name], [y], attrs, source_index=li)
            )
        cur = ops[-1].outputs[0]
        meta_layers.append(_meta(lay, li, ops[first:], kind, wkey))
    graph = Graph(
        tensors,
        ops,
        ["input"],
        [cur],
        name=str(cfg.get("arch", yp.stem)),
        metadata={
            "source": "ai8x",
            # ai8x sample inputs (tests/sample_*.npy) are channel-first: CHW or, for Conv1d,
            # (C, L); mcusim.inputs accepts that layout for this input and transposes it.
            "input_layouts": {"input": "channels_first"},
            "ai8x": {
                "arch": str(cfg.get("arch", "")),
                "dataset": str(cfg.get("dataset", "")),
                "checkpoint_epoch": int(ck.get("epoch", -1)) if "epoch" in ck else -1,
                "layers": meta_layers,
            },
        },
    )
    return graph.validate()


def _meta(lay: dict, li: int, ops: list[Op], kind: str, wkey: str = "") -> dict[str, Any]:
    """What the tile needs from the YAML beyond the ops: processor maps, formats, offsets."""

    def _hex(key: str) -> str | None:
        v = lay.get(key)
        return None if v is None else hex(int(v)) if not isinstance(v, str) else v

    return {
        "layer": li,
        "kind": kind,
        "ops": [o.name for o in ops],
        "weights": wkey,
        "processors": _hex("processors"),
        "output_processors": _hex("output_processors"),
        "data_format": str(lay.get("data_format", "HWC")).upper(),
        "out_offset": _hex("out_offset"),
        "flatten": bool(lay.get("flatten", False)),
    }
