"""The ``.qnn`` model file: a zip holding ``manifest.json`` plus one ``.npy`` per constant.

The format is specified in docs/qnn-format.md; the manifest's JSON schema ships as
``mcusim/schema/qnn-manifest.schema.json``. Reading is defensive because model files come
from users: member names, sizes and counts are checked before anything is read, every read
is bounded, arrays are loaded with ``allow_pickle=False`` and nothing is ever unpickled or
evaluated. Every problem is a :class:`~mcusim.errors.ModelFormatError` naming the file and
what is wrong.

Sub-byte constants (ElemType.bits < 8, including binary) are stored packed as an LSB-first
bit stream; in memory they stay unpacked, as everywhere else in mcusim.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import io
import json
import math
import os
import re
import tempfile
import types
import typing
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from .dtypes import ElemType, Quant, elem_type
from .errors import GraphError, ModelFormatError, UnsupportedOpError
from .graph import Graph, Op, Tensor
from .ops import OPS

FORMAT_NAME = "mcusim-qnn"
FORMAT_VERSION = 1  # the newest version this code reads and the one it writes
MANIFEST = "manifest.json"
TENSOR_DIR = "tensors/"
PACKING = "lsb_first"
SCHEMA_RESOURCE = "schema/qnn-manifest.schema.json"

_MiB = 1 << 20
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same graph -> same bytes
_ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class Limits:
    """Upper bounds checked against the zip's declared sizes before any member is read."""

    max_member_bytes: int = 512 * _MiB
    max_total_bytes: int = 2048 * _MiB
    max_manifest_bytes: int = 64 * _MiB
    max_members: int = 100_000


DEFAULT_LIMITS = Limits()


# --------------------------------------------------------------------------------------
# Public API


def save(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write ``graph`` to ``path`` as a .qnn file (atomically: temp file, then rename)."""
    path = Path(path)
    data = dumps(graph, _where=str(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ModelFormatError(f"cannot write: {e.strerror or e}", file=str(path)) from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the model private
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ModelFormatError(f"cannot write: {e.strerror or e}", file=str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(
    path: str | os.PathLike[str], *, validate: bool = True, limits: Limits = DEFAULT_LIMITS
) -> Graph:
    """Read a .qnn file; the graph is checked with ``Graph.validate()`` unless told not to."""
    where = str(path)
    try:
        zf = zipfile.ZipFile(path, "r")
    except FileNotFoundError:
        raise ModelFormatError("no such file", file=where) from None
    except IsADirectoryError:
        raise ModelFormatError("is a directory, not a .qnn file", file=where) from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise _not_a_zip(where, e) from None
    except OSError as e:
        raise ModelFormatError(f"cannot read: {e.strerror or e}", file=where) from None
    with zf:
        return _read(zf, where, validate=validate, limits=limits)


def dumps(graph: Graph, *, _where: str = "<bytes>") -> bytes:
    """The .qnn file of ``graph`` as bytes (deterministic for a given graph)."""
    manifest, arrays = _manifest_of(graph, _where)
    _validate_schema(manifest, _where, saving=True)  # never write a file load() refuses
    text = _format_manifest(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _write_member(zf, MANIFEST, text.encode("utf-8"))
        for member, arr in arrays:
            npy = io.BytesIO()
            np.save(npy, arr, allow_pickle=False)
            _write_member(zf, member, npy.getvalue())
    return buf.getvalue()


def loads(
    data: bytes, *, name: str = "<bytes>", validate: bool = True, limits: Limits = DEFAULT_LIMITS
) -> Graph:
    """Read a .qnn file held in memory; ``name`` is used in error messages."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data), "r")
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise _not_a_zip(name, e) from None
    with zf:
        return _read(zf, name, validate=validate, limits=limits)


# --------------------------------------------------------------------------------------
# Sub-byte packing


def pack_bits(values: np.ndarray, dtype: ElemType) -> np.ndarray:
    """Pack sub-byte ``values`` (any shape, flattened in C order) into a uint8 array.

    Element i occupies bits [i*bits, (i+1)*bits) of an LSB-first bit stream whose bit k is
    bit (k % 8) of byte k // 8; its code is the two's complement value (signed types), the
    value (unsigned types) or (v + 1) / 2 (binary). Unused high bits of the last byte are 0.
    """
    bits = dtype.bits
    v = np.asarray(values).reshape(-1)
    if v.dtype.kind not in "iu":
        raise ValueError(f"{dtype} values must be integers, got {v.dtype}")
    outside = (v < dtype.min) | (v > dtype.max)
    if dtype.binary:
        outside |= v == 0
    if np.any(outside):
        bad = v[outside][0]
        if dtype.binary:
            raise ValueError(f"binary tensors hold only -1 and +1, found {bad}")
        raise ValueError(f"value {bad} is outside {dtype} [{dtype.min}, {dtype.max}]")
    v16 = v.astype(np.int16)
    codes = ((v16 + 1) >> 1 if dtype.binary else v16 & ((1 << bits) - 1)).astype(np.uint8)
    if 8 % bits == 0:  # 1, 2, 4 bits: whole elements per byte
        per = 8 // bits
        padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
        padded[: codes.size] = codes
        lanes = padded.reshape(-1, per)
        out = np.zeros(lanes.shape[0], dtype=np.uint8)
        for j in range(per):
            out |= lanes[:, j] << np.uint8(j * bits)
        return out
    stream = np.empty((codes.size, bits), dtype=np.uint8)
    for j in range(bits):
        stream[:, j] = (codes >> np.uint8(j)) & np.uint8(1)
    return np.packbits(stream.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, dtype: ElemType, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values as a 1-D ``dtype.np_dtype`` array."""
    bits = dtype.bits
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size < packed_size(dtype, count):
        raise ValueError(f"{packed.size} bytes hold fewer than {count} {dtype} values")
    mask = np.uint8((1 << bits) - 1)
    if 8 % bits == 0:
        per = 8 // bits
        shifts = (np.arange(per) * bits).astype(np.uint8)
        codes = ((packed[:, None] >> shifts) & mask).reshape(-1)[:count]
    else:
        stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
        codes = np.zeros(count, dtype=np.uint8)
        for j in range(bits):
            codes |= stream[:, j] << np.uint8(j)
    if dtype.binary:
        return (codes.astype(np.int8) << 1) - np.int8(1)
    if dtype.signed:
        v = codes.astype(np.int16)
        v -= (v >= 1 << (bits - 1)).astype(np.int16) << bits
        return v.astype(dtype.np_dtype)
    return codes.astype(dtype.np_dtype)


def packed_size(dtype: ElemType, count: int) -> int:
    return (count * dtype.bits + 7) // 8


def _is_packed(dtype: ElemType) -> bool:
    return not dtype.is_float and dtype.bits < 8


# --------------------------------------------------------------------------------------
# Typed op attributes <-> JSON (generic over the attrs dataclasses of mcusim/ops.py)


def attrs_to_json(attrs: Any) -> dict[str, Any]:
    """JSON object of an attrs dataclass instance: tuples become lists, enums their value."""
    if not dataclasses.is_dataclass(attrs) or isinstance(attrs, type):
        raise TypeError(f"op attributes must be a dataclass instance, got {type(attrs).__name__}")
    init = {f.name for f in dataclasses.fields(attrs) if f.init}
    fields = {k: v for k, v in dataclasses.asdict(attrs).items() if k in init}
    return _jsonable(fields, "attrs")


def attrs_from_json(kind: str, obj: dict[str, Any]) -> Any:
    """Rebuild the attrs dataclass of op ``kind`` from its JSON object, restoring tuples.

    Missing fields take their dataclass default (files written before a field existed);
    unknown fields and values of the wrong type raise ValueError naming the field.
    """
    return _dataclass_from_json(OPS[kind].attrs, obj, "attrs")


def _dataclass_from_json(cls: type, obj: Any, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object for {cls.__name__}, got {_jtype(obj)}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown attribute {unknown[0]!r} for {cls.__name__} "
            f"(known: {', '.join(fields) or 'none'})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in obj:
            kwargs[name] = _value_from_json(obj[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: missing attribute {name!r} of {cls.__name__}")
    return cls(**kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value_from_json(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _value_from_json(value, arg, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(
            errors[0] if len(errors) == 1 else f"{where}: {_jtype(value)} fits no {tp}"
        )
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_jtype(value)}")
        if origin is list:
            return [
                _value_from_json(v, args[0] if args else Any, f"{where}[{i}]")
                for i, v in enumerate(value)
            ]
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value_from_json(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _value_from_json(v, a, f"{where}[{i}]")
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_jtype(value)}")
        vt = args[1] if args else Any
        return {k: _value_from_json(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return _dataclass_from_json(tp, value, where)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not a {tp.__name__}") from None
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                if not -(1 << 63) <= value < (1 << 63):
                    raise ValueError(f"{where}: {value} does not fit in 64 bits")
                return value
        elif tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                if isinstance(value, int) and abs(value) > 1 << 1023:
                    raise ValueError(f"{where}: {value} is out of the range of a double")
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        elif tp is type(None):
            if value is None:
                return None
        else:
            raise TypeError(f"{where}: attribute type {tp!r} is not supported by the .qnn format")
        raise ValueError(f"{where}: expected {tp.__name__}, got {_jtype(value)} {value!r}")
    raise TypeError(f"{where}: attribute type {tp!r} is not supported by the .qnn format")


def _jtype(value: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        type(None): "null",
        int: "integer",
        float: "number",
    }.get(type(value), type(value).__name__)


def _jsonable(value: Any, where: str) -> Any:
    """Plain-JSON copy of ``value``: tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise ValueError(f"{where}: {value} cannot be stored (JSON has no NaN/Infinity)")
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: key {k!r} is not a string")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    raise ValueError(f"{where}: a value of type {type(value).__name__} cannot be stored in JSON")


# --------------------------------------------------------------------------------------
# Writing


def _manifest_of(graph: Graph, where: str) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    tensors, arrays = [], []
    for i, (key, t) in enumerate(graph.tensors.items()):
        if key != t.name:
            raise ModelFormatError(
                f"cannot save: tensor {t.name!r} is stored under key {key!r}", file=where
            )
        tensors.append(_tensor_entry(t, i, arrays, where))
    ops = []
    for op in graph.ops:
        if op.kind not in OPS:
            raise ModelFormatError(
                f"cannot save: unknown op kind {op.kind!r}", file=where, layer=op.label
            )
        if not isinstance(op.attrs, OPS[op.kind].attrs):
            raise ModelFormatError(
                f"cannot save: attributes are {type(op.attrs).__name__}, "
                f"expected {OPS[op.kind].attrs.__name__}",
                file=where,
                layer=op.label,
            )
        try:
            attrs = attrs_to_json(op.attrs)
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"cannot save: {e}", file=where, layer=op.label) from None
        ops.append(
            {
                "kind": op.kind,
                "name": op.name,
                "inputs": list(op.inputs),
                "outputs": list(op.outputs),
                "attrs": attrs,
                "precision": op.precision,
                "placement": op.placement,
                "source_index": None if op.source_index is None else int(op.source_index),
            }
        )
    try:
        metadata = _jsonable(dict(graph.metadata), "metadata")
    except ValueError as e:
        raise ModelFormatError(f"cannot save: graph {e}", file=where) from None
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mcusim_version": _mcusim_version(),
        "graph": {
            "name": graph.name,
            "inputs": list(graph.inputs),
            "outputs": list(graph.outputs),
            "tensors": tensors,
            "ops": ops,
            "metadata": metadata,
        },
    }
    return manifest, arrays


def _format_manifest(manifest: dict[str, Any]) -> str:
    """Readable but compact JSON: one line per tensor and per op."""

    def enc(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, allow_nan=False)

    def obj(d: dict[str, Any], indent: str, render: Any) -> str:
        inner = indent + "  "
        items = [f"{inner}{enc(k)}: {render(k, v, inner)}" for k, v in d.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"

    def render_graph(k: str, v: Any, indent: str) -> str:
        if k in ("tensors", "ops") and v:
            rows = ",\n".join(indent + "  " + enc(x) for x in v)
            return "[\n" + rows + "\n" + indent + "]"
        return enc(v)

    def render_top(k: str, v: Any, indent: str) -> str:
        return obj(v, indent, render_graph) if k == "graph" else enc(v)

    return obj(manifest, "", render_top) + "\n"


def _tensor_entry(t: Tensor, index: int, arrays: list, where: str) -> dict[str, Any]:
    def fail(msg: str) -> ModelFormatError:
        return ModelFormatError(f"cannot save: tensor {t.name!r}: {msg}", file=where)

    shape = [int(d) for d in t.shape]
    quant = None
    if t.quant is not None:
        scale = np.asarray(t.quant.scale, dtype=np.float32)
        if not np.all(np.isfinite(scale)):
            raise fail("quantization scale is not finite")
        # float(float32) is exact as a double and JSON writes doubles with repr, which parses
        # back to the same double, hence to the same float32.
        quant = {
            "scale": [float(s) for s in scale],
            "zero_point": [int(z) for z in t.quant.zero_point],
            "axis": None if t.quant.axis is None else int(t.quant.axis),
        }
        try:
            _check_quant(t.quant, tuple(shape))
        except ValueError as e:
            raise fail(str(e)) from None
    constant = None
    if t.data is not None:
        data = np.asarray(t.data)
        if tuple(data.shape) != tuple(shape):
            raise fail(f"data shape {tuple(data.shape)} differs from tensor shape {tuple(shape)}")
        if data.dtype != t.dtype.np_dtype:
            raise fail(f"data dtype {data.dtype} differs from {t.dtype.np_dtype} of {t.dtype}")
        member = f"{TENSOR_DIR}{index}.npy"
        if _is_packed(t.dtype):
            try:
                arr = pack_bits(data, t.dtype)
            except ValueError as e:
                raise fail(str(e)) from None
            constant = {
                "member": member,
                "storage": "packed",
                "bits": t.dtype.bits,
                "packing": PACKING,
            }
        else:
            arr = np.ascontiguousarray(data, dtype=t.dtype.np_dtype.newbyteorder("<"))
            constant = {"member": member, "storage": "npy"}
        arrays.append((member, arr))
    return {
        "name": t.name,
        "shape": shape,
        "dtype": t.dtype.name,
        "quantization": quant,
        "constant": constant,
    }


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


# --------------------------------------------------------------------------------------
# Reading


def _mcusim_version() -> str:
    # Looked up at call time: mcusim/__init__ defines __version__ after its own imports.
    from . import __version__

    return __version__


def _not_a_zip(where: str, e: BaseException) -> ModelFormatError:
    return ModelFormatError(f"not a .qnn file (not a readable zip archive: {e})", file=where)


@functools.cache
def manifest_schema() -> dict[str, Any]:
    """The JSON schema of manifest.json (format_version 1)."""
    text = resources.files("mcusim").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = manifest_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_UNSAFE_NAME = re.compile(r"(^|/)\.\.(/|$)|^/|\\|^[A-Za-z]:|\x00")


def _check_members(zf: zipfile.ZipFile, where: str, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    """Refuse unsafe, duplicate, encrypted or oversized members before reading any of them."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ModelFormatError(
            f"zip has {len(infos)} members, limit is {limits.max_members}", file=where
        )
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if _UNSAFE_NAME.search(name) or not name:
            raise ModelFormatError(
                f"unsafe member name {name!r} (absolute path or '..' component): refused",
                file=where,
            )
        if name in members:
            raise ModelFormatError(f"duplicate member name {name!r} in zip", file=where)
        if info.flag_bits & 0x1:
            raise ModelFormatError(f"member {name!r} is encrypted", file=where)
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise ModelFormatError(
                f"member {name!r} uses compression method {info.compress_type}; "
                "only stored (0) and deflate (8) are allowed",
                file=where,
            )
        limit = limits.max_manifest_bytes if name == MANIFEST else limits.max_member_bytes
        if info.file_size > limit:
            raise ModelFormatError(
                f"member {name!r} declares {info.file_size} bytes uncompressed, "
                f"over the limit of {limit} bytes",
                file=where,
            )
        total += info.file_size
        members[name] = info
    if total > limits.max_total_bytes:
        raise ModelFormatError(
            f"members declare {total} bytes uncompressed in total, over the limit of "
            f"{limits.max_total_bytes} bytes",
            file=where,
        )
    return members


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    """Read at most the declared size (+1 to detect a lying header); CRC is checked."""
    try:
        with zf.open(info, "r") as f:
            data = f.read(info.file_size + 1)
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as e:
        raise ModelFormatError(f"member {info.filename!r} is corrupt: {e}", file=where) from None
    if len(data) != info.file_size:
        raise ModelFormatError(
            f"member {info.filename!r} holds {len(data)} bytes, header declares {info.file_size}",
            file=where,
        )
    return data


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token} is out of the range of a double")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{MANIFEST} is not UTF-8 text: {e}", file=where) from None
    try:
        manifest = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicate_keys,
        )
    except json.JSONDecodeError as e:
        raise ModelFormatError(
            f"{MANIFEST} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", file=where
        ) from None
    except (ValueError, RecursionError) as e:
        raise ModelFormatError(f"{MANIFEST} is not valid JSON: {e}", file=where) from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(
            f"{MANIFEST} must hold a JSON object, not {_jtype(manifest)}", file=where
        )
    if manifest.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{MANIFEST}: 'format' is {manifest.get('format')!r}, expected {FORMAT_NAME!r}",
            file=where,
        )
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{MANIFEST}: format_version {version} is newer than this mcusim ({_mcusim_version()}) "
            f"reads (up to {FORMAT_VERSION}); upgrade mcusim",
            file=where,
        )
    _validate_schema(manifest, where)
    return manifest


def _validate_schema(manifest: dict[str, Any], where: str, saving: bool = False) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
    if error is None:
        return
    path = list(error.absolute_path)
    context = ""
    graph = manifest.get("graph")
    if len(path) >= 3 and path[0] == "graph" and path[1] in ("tensors", "ops"):
        try:
            item = graph[path[1]][path[2]]
            label = item.get("name") if isinstance(item, dict) else None
            if isinstance(label, str):
                kind = item.get("kind") if path[1] == "ops" else None
                context = (
                    f" (tensor {label!r})"
                    if path[1] == "tensors"
                    else (f" (op {label!r}" + (f" {kind}" if isinstance(kind, str) else "") + ")")
                )
        except (IndexError, KeyError, TypeError):
            pass
    message = " ".join(error.message.split())
    if error.validator == "not" and error.validator_value == {} and path:
        # A key forbidden in this context; the schema says why in its description.
        why = error.schema.get("description", "not allowed here")
        message = f"key {path[-1]!r} is not allowed: {why}"
    if len(message) > 200:
        message = message[:197] + "..."
    prefix = "cannot save: " if saving else ""
    raise ModelFormatError(
        f"{prefix}{MANIFEST}: schema violation at {error.json_path}{context}: {message}",
        file=where,
    )


def _check_quant(quant: Quant, shape: tuple[int, ...]) -> None:
    n = quant.scale.size
    if quant.zero_point.size not in (1, n):
        raise ValueError(f"quantization has {n} scales but {quant.zero_point.size} zero points")
    if quant.axis is not None and shape and quant.axis >= len(shape):
        raise ValueError(f"quantization axis {quant.axis} is out of range for shape {shape}")
    if n > 1:
        if quant.axis is None or not shape:
            raise ValueError(f"{n} scales (per-channel) but no quantization axis")
        if shape[quant.axis] != n:
            raise ValueError(
                f"{n} per-channel scales but shape {shape} has {shape[quant.axis]} "
                f"channels on axis {quant.axis}"
            )


def _quant_from_json(q: dict[str, Any], shape: tuple[int, ...], where: str, tname: str) -> Quant:
    scale = np.array(q["scale"], dtype=np.float64)
    as32 = scale.astype(np.float32)
    inexact = np.nonzero(as32.astype(np.float64) != scale)[0]
    if inexact.size:
        i = int(inexact[0])
        raise ModelFormatError(
            f"tensor {tname!r}: quantization scale[{i}] = {q['scale'][i]!r} is not exactly a "
            f"float32 value (write repr(float(numpy.float32(x))))",
            file=where,
        )
    zp = q["zero_point"]
    if any(not -(1 << 63) <= z < (1 << 63) for z in zp):
        raise ModelFormatError(f"tensor {tname!r}: zero_point outside int64", file=where)
    try:
        quant = Quant(as32, np.array(zp, dtype=np.int64), q["axis"])
        _check_quant(quant, shape)
    except ValueError as e:
        raise ModelFormatError(f"tensor {tname!r}: {e}", file=where) from None
    return quant


def _npy_header(
    raw: bytes, member: str, where: str, tname: str
) -> tuple[tuple, bool, np.dtype, int]:
    """Parse the .npy header (no pickle, no eval) -> (shape, fortran, dtype, header length)."""
    f = io.BytesIO(raw)
    try:
        major, _minor = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {major}")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as e:
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} is not a valid .npy file: "
            f"{' '.join(str(e).split())[:200]}",
            file=where,
        ) from None
    if dtype.hasobject:
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} holds Python objects (a pickle); refused",
            file=where,
        )
    return tuple(shape), fortran, dtype, f.tell()


def _constant_from_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    t: dict[str, Any],
    dtype: ElemType,
    shape: tuple[int, ...],
    where: str,
) -> np.ndarray:
    tname, c = t["name"], t["constant"]
    member = c["member"]
    count = math.prod(shape)
    packed = _is_packed(dtype)
    if packed != (c["storage"] == "packed"):
        want = "packed" if packed else "npy"
        raise ModelFormatError(
            f"tensor {tname!r}: storage {c['storage']!r} is wrong for {dtype}, expected {want!r}",
            file=where,
        )
    if packed:
        if c["bits"] != dtype.bits:
            raise ModelFormatError(
                f"tensor {tname!r}: packed bits {c['bits']} differ from {dtype.bits} of {dtype}",
                file=where,
            )
        want_shape, want_dtype = (packed_size(dtype, count),), np.dtype(np.uint8)
    else:
        want_shape, want_dtype = shape, dtype.np_dtype.newbyteorder("<")
    raw = _read_member(zf, info, where)
    npy_shape, _fortran, npy_dtype, header_len = _npy_header(raw, member, where, tname)
    if npy_dtype != want_dtype:
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} has dtype {npy_dtype.str}, manifest needs "
            f"{want_dtype.str} for {dtype}" + (" (packed bytes)" if packed else ""),
            file=where,
        )
    if npy_shape != tuple(want_shape):
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} has shape {npy_shape}, manifest needs "
            f"{tuple(want_shape)}" + (" (packed bytes)" if packed else ""),
            file=where,
        )
    expected_len = header_len + want_dtype.itemsize * math.prod(want_shape)
    if len(raw) != expected_len:
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} is {len(raw)} bytes, its header implies "
            f"{expected_len}",
            file=where,
        )
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        raise ModelFormatError(
            f"tensor {tname!r}: member {member!r} cannot be loaded: {e}", file=where
        ) from None
    if packed:
        tail_bits = packed_size(dtype, count) * 8 - count * dtype.bits
        if tail_bits and arr.size and int(arr[-1]) >> (8 - tail_bits):
            raise ModelFormatError(
                f"tensor {tname!r}: unused padding bits of the last packed byte are not 0",
                file=where,
            )
        return unpack_bits(arr, dtype, count).reshape(shape)
    return np.ascontiguousarray(arr, dtype=dtype.np_dtype)


def _read(zf: zipfile.ZipFile, where: str, *, validate: bool, limits: Limits) -> Graph:
    members = _check_members(zf, where, limits)
    if MANIFEST not in members:
        raise ModelFormatError(f"no {MANIFEST} in the archive (not a .qnn file?)", file=where)
    manifest = _parse_manifest(_read_member(zf, members[MANIFEST], where), where)
    g = manifest["graph"]

    # Cross-references the schema cannot express: unique names, members <-> constants.
    referenced: dict[str, str] = {}
    seen: set[str] = set()
    for t in g["tensors"]:
        if t["name"] in seen:
            raise ModelFormatError(f"tensor name {t['name']!r} appears twice", file=where)
        seen.add(t["name"])
        if t["constant"] is not None:
            m = t["constant"]["member"]
            if m in referenced:
                raise ModelFormatError(
                    f"tensors {referenced[m]!r} and {t['name']!r} both use member {m!r}", file=where
                )
            if m not in members:
                raise ModelFormatError(
                    f"tensor {t['name']!r}: member {m!r} is missing from the archive", file=where
                )
            referenced[m] = t["name"]
    extra = sorted(set(members) - set(referenced) - {MANIFEST})
    if extra:
        raise ModelFormatError(
            f"unexpected member {extra[0]!r} (not referenced by {MANIFEST})"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""),
            file=where,
        )

    tensors: dict[str, Tensor] = {}
    for t in g["tensors"]:
        dtype = elem_type(t["dtype"])
        shape = tuple(int(d) for d in t["shape"])
        quant = (
            None
            if t["quantization"] is None
            else _quant_from_json(t["quantization"], shape, where, t["name"])
        )
        data = None
        if t["constant"] is not None:
            info = members[t["constant"]["member"]]
            data = _constant_from_member(zf, info, t, dtype, shape, where)
        tensors[t["name"]] = Tensor(t["name"], shape, dtype, quant, data)

    ops = [_op_from_json(o, i, where) for i, o in enumerate(g["ops"])]
    graph = Graph(
        tensors, ops, list(g["inputs"]), list(g["outputs"]), g["name"], dict(g["metadata"])
    )
    if validate:
        try:
            graph.validate()
        except GraphError as e:
            if e.file:
                raise
            raise GraphError(e.detail, file=where, layer=e.layer) from None
    return graph


def _op_from_json(o: dict[str, Any], index: int, where: str) -> Op:
    kind = o["kind"]
    label = f"{o['name']} ({kind})"
    if kind not in OPS:
        raise UnsupportedOpError(
            f"op kind {kind!r} is not known to this mcusim ({_mcusim_version()})",
            file=where,
            layer=label,
        )
    try:
        attrs = attrs_from_json(kind, o["attrs"])
    except ValueError as e:
        raise ModelFormatError(f"bad attributes: {e}", file=where, layer=label) from None
    return Op(
        kind,
        o["name"],
        list(o["inputs"]),
        list(o["outputs"]),
        attrs,
        o["precision"],
        o["placement"],
        o["source_index"],
    )
