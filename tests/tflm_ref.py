"""Run a .tflite model on the TFLite Micro interpreter: the bit-exact reference for tests.

``tflm_run(model, inputs)`` returns every operator-output tensor by tensor index. Only
operator outputs are queried because TFLM's ``GetTensor`` can crash on constant tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tflite


def _model_bytes(model: bytes | bytearray | str | Path) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return Path(model).read_bytes()


def operator_outputs(data: bytes) -> list[int]:
    """Tensor indices written by the operators of subgraph 0, in execution order."""
    m = tflite.Model.GetRootAs(data, 0)
    sg = m.Subgraphs(0)
    out: list[int] = []
    for i in range(sg.OperatorsLength()):
        for t in sg.Operators(i).OutputsAsNumpy().tolist():
            if t >= 0 and t not in out:
                out.append(int(t))
    return out


def tflm_interpreter(model: bytes | bytearray | str | Path, arena_size: int | None = None):
    """A TFLM interpreter that keeps every tensor after invoke (skips if TFLM is absent)."""
    try:
        from tflite_micro import runtime as tflm
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.skip("tflite-micro (the TFLM reference interpreter) is not installed")
    data = _model_bytes(model)
    if arena_size is None:
        arena_size = max(16 << 20, 20 * len(data))
    return tflm.Interpreter.from_bytes(
        data,
        arena_size=arena_size,
        intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors,  # (sic) TFLM's spelling
    )


def tflm_run(
    model: bytes | bytearray | str | Path,
    inputs: Sequence[np.ndarray],
    arena_size: int | None = None,
) -> dict[int, np.ndarray]:
    """Invoke TFLM once; return {tensor index: array} for every operator output."""
    data = _model_bytes(model)
    interp = tflm_interpreter(data, arena_size)
    for i, x in enumerate(inputs):
        interp.set_input(np.ascontiguousarray(x), i)
    interp.invoke()
    result: dict[int, np.ndarray] = {}
    for idx in operator_outputs(data):
        t = interp.GetTensor(idx, 0)
        arr = np.asarray(t["tensor_data"]).copy()
        shape = tuple(int(s) for s in t["shape"])
        result[idx] = arr.reshape(shape) if arr.size == int(np.prod(shape)) else arr
    return result


def tensor_names(model: bytes | bytearray | str | Path) -> list[str]:
    """Names of subgraph 0's tensors by index, made unique exactly as the importer does."""
    from mcusim.importers.tflite import unique_tensor_names

    sg = tflite.Model.GetRootAs(_model_bytes(model), 0).Subgraphs(0)
    raw = []
    for i in range(sg.TensorsLength()):
        n = sg.Tensors(i).Name()
        raw.append(n.decode("utf-8", errors="replace") if n else "")
    return unique_tensor_names(raw)


def tflm_run_by_name(
    model: bytes | bytearray | str | Path,
    inputs: Sequence[np.ndarray],
    arena_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Like :func:`tflm_run`, keyed by the tensor names of the imported Graph."""
    data = _model_bytes(model)
    names = tensor_names(data)
    return {names[i]: v for i, v in tflm_run(data, inputs, arena_size).items()}
