"""Loading a model file (.tflite or .qnn) into a Model: the graph plus its prepared kernels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelFormatError
from .graph import Graph

_MAX_MODEL_BYTES = 1 << 30


@dataclass
class PreparedOp:
    compute: Any
    params: Any
    inputs: tuple[str, ...]  # non-constant inputs, in op order
    outputs: tuple[str, ...]


@dataclass(eq=False)
class Model:
    """A validated graph; kernel preparation and per-device costs are computed once, lazily."""

    graph: Graph
    path: str | None = None
    _prepared: list[PreparedOp] | None = field(default=None, repr=False)
    _costs: dict[Any, Any] = field(default_factory=dict, repr=False)
    # per (device, placement): kernels where an NPU tile computes with its own arithmetic
    _prepared_for: dict[Any, list[PreparedOp]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.graph.name

    def prepared(self) -> list[PreparedOp]:
        """Per-op kernel params (multipliers, clamp ranges, reordered weights)."""
        if self._prepared is None:
            import mcusim.kernels  # noqa: F401  (registers every kernel)
            from mcusim.kernels.max78000 import ai8x_kernel
            from mcusim.kernels.registry import kernel_for

            g = self.graph
            prepared = []
            for op in g.ops:
                # MAX78000 arithmetic (ai8x-imported layers) is the layer's meaning on any
                # engine: a CPU running such a layer computes the accelerator's integers.
                kdef = ai8x_kernel(g, op) or kernel_for(op.kind, layer=op.label)
                prepared.append(
                    PreparedOp(
                        compute=kdef.compute,
                        params=kdef.prepare(g, op),
                        inputs=tuple(n for n in op.inputs if n and not g.tensors[n].is_const),
                        outputs=tuple(op.outputs),
                    )
                )
            self._prepared = prepared
        return self._prepared

    def prepared_for(self, key: Any, kernels: dict[int, Any]) -> list[PreparedOp]:
        """The prepared ops with op ``i`` computed by ``kernels[i]`` (a KernelDef a tile
        returned from ``compute_kernel``: its arithmetic differs from TFLite's) and every
        other op by the reference kernels. Cached under ``key`` (device, placement)."""
        if not kernels:
            return self.prepared()
        cached = self._prepared_for.get(key)
        if cached is None:
            import mcusim.kernels  # noqa: F401  (registers every kernel)
            from mcusim.kernels.registry import kernel_for

            g = self.graph
            base = self._prepared  # reference preparations already made are reused
            cached = []
            for i, op in enumerate(g.ops):
                kdef = kernels.get(i)
                if kdef is None and base is not None:
                    cached.append(base[i])
                    continue
                kdef = kdef or kernel_for(op.kind, layer=op.label)
                cached.append(
                    PreparedOp(
                        compute=kdef.compute,
                        params=kdef.prepare(g, op),
                        inputs=tuple(n for n in op.inputs if n and not g.tensors[n].is_const),
                        outputs=tuple(op.outputs),
                    )
                )
            self._prepared_for[key] = cached
        return cached


def load(path: str | Path, checkpoint: str | Path | None = None) -> Model:
    """Load a .tflite, .qnn or QONNX .onnx file (recognised by content, not by extension),
    or an ai8x network YAML together with its quantized ``checkpoint`` (.pth.tar)."""
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError("file not found", file=str(p))
    size = p.stat().st_size
    if size > _MAX_MODEL_BYTES:
        raise ModelFormatError(f"file is {size} bytes, over the 1 GiB limit", file=str(p))
    with p.open("rb") as f:
        head = f.read(8)
    if checkpoint is not None or p.suffix.lower() in (".yaml", ".yml"):
        if checkpoint is None:
            raise ModelFormatError("an ai8x network YAML needs --checkpoint", file=str(p))
        from .importers.ai8x import load_ai8x

        return Model(graph=load_ai8x(p, checkpoint), path=str(p))
    if head[:4] == b"PK\x03\x04":
        from . import qnn

        graph = qnn.load(p)
    elif head[4:8] == b"TFL3":
        from .importers.tflite import load_tflite

        graph = load_tflite(p)
    elif len(head) < 8:
        raise ModelFormatError("file is empty or truncated (fewer than 8 bytes)", file=str(p))
    elif head[0] == 0x08 and head[1] < 0x80:  # ONNX ModelProto: ir_version (field 1) first
        from .importers.qonnx import load_qonnx

        graph = load_qonnx(p)
    else:
        raise ModelFormatError(
            "not a TFLite flatbuffer (no 'TFL3' identifier) nor a .qnn zip archive", file=str(p)
        )
    return Model(graph=graph, path=str(p))
