"""mcusim: cycle-accurate simulation of quantized NN inference on microcontrollers."""

__version__ = "0.1.0"
