"""Speed of mcusim.run against the TFLite Micro interpreter, in one process.

For each shared model: median wall time of a warm ``mcusim.run`` (outputs + cycles +
traffic + energy) and of a warm TFLM ``invoke`` on the same input, and their ratio
(< 1 means mcusim is faster). Also the cold wall time of ``mcusim run`` on the KWS model
from a fresh process (numba cache warm). Run:  python bench/bench_run.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import mcusim
from mcusim.devices.loader import load_device
from mcusim.runner import device_costs

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
NAMES = [
    "hello_world_int8",
    "micro_speech_quantized",
    "ad01_int8",
    "kws_ref_model",
    "vww_96_int8",
    "pretrainedResnet_quant",
]


def median_time(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    from tflite_micro import runtime as tflm

    if not MODELS.is_dir():
        sys.exit(f"{MODELS} is absent: the shared models are needed for this benchmark")
    print(f"{'model':26s} {'mcusim ms':>10s} {'TFLM ms':>10s} {'ratio':>7s}")
    for name in NAMES:
        path = MODELS / f"{name}.tflite"
        model = mcusim.load(path)
        x = mcusim.inputs.random_inputs(model.graph, seed=0)
        mcusim.run(model, device="stm32l4r5", inputs=x)  # warm: JIT + per-device costs
        t_sim = median_time(lambda m=model, x=x: mcusim.run(m, device="stm32l4r5", inputs=x), n)
        interp = tflm.Interpreter.from_file(str(path), arena_size=16 << 20)
        interp.set_input(x[0], 0)
        interp.invoke()
        t_ref = median_time(interp.invoke, n)
        print(f"{name:26s} {t_sim * 1e3:10.3f} {t_ref * 1e3:10.3f} {t_sim / t_ref:7.2f}")
    print("\nper-device cost evaluation (schedules + ISA timing + memory), first run:")
    for name in NAMES:
        model = mcusim.load(MODELS / f"{name}.tflite")
        model.prepared()
        t0 = time.perf_counter()
        device_costs(model, load_device("stm32l4r5"))
        print(f"{name:26s} {(time.perf_counter() - t0) * 1e3:10.2f} ms")
    kws = MODELS / "kws_ref_model.tflite"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mcusim.cli", "run", str(kws), "--device", "stm32l4r5"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"cold CLI `mcusim run kws_ref_model.tflite`: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
