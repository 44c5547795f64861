"""mcusim: cycle-accurate simulation of quantized NN inference on microcontrollers.

import mcusim
model = mcusim.load("model.tflite")            # or .qnn
result = mcusim.run(model, device="stm32l4r5")
result.layers, result.total_cycles, result.to_dataframe()
points, layers = mcusim.sweep([...models], [...devices], precisions=[None, "W4A8"])
"""

from mcusim.devices.loader import bundled_devices, load_device
from mcusim.traces.records import LayerRecord, RunResult

from .errors import UserError
from .model import Model, load
from .runner import run
from .sweep import sweep

__version__ = "0.1.0"

__all__ = [
    "LayerRecord",
    "Model",
    "RunResult",
    "UserError",
    "bundled_devices",
    "load",
    "load_device",
    "run",
    "sweep",
]
