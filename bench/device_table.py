"""Print the README's results table: MLPerf Tiny models x every bundled device.

python bench/device_table.py > /tmp/table.md
"""

from __future__ import annotations

from pathlib import Path

import mcusim

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
NAMES = ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8"]


def main() -> None:
    cols = "model | device | engines | MHz | cycles | latency ms | energy µJ | peak RAM B | flash B"
    print(f"| {cols} |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    models = {n: mcusim.load(MODELS / f"{n}.tflite") for n in NAMES}
    for dev_name in mcusim.bundled_devices():
        dev = mcusim.load_device(dev_name)
        for n in NAMES:
            try:
                r = mcusim.run(models[n], device=dev)
            except mcusim.UserError as e:
                print(f"| {n} | {dev_name} | {dev.core.name} | | does not run: {e} | | | | |")
                continue
            engines = "+".join(sorted({layer.engine for layer in r.layers}))
            print(
                f"| {n} | {dev_name} | {engines} | {dev.core.clock_hz / 1e6:g} | "
                f"{r.total_cycles:,} | {r.latency_s * 1e3:,.2f} | {r.energy_j * 1e6:,.1f} | "
                f"{r.peak_ram_bytes:,} | {r.flash_bytes:,} |"
            )


if __name__ == "__main__":
    main()
