"""The install maps isa/, kernels/, devices/, traces/ under mcusim.* and ships their data."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib.util, importlib.resources as r
assert importlib.util.find_spec("isa") is None, "top-level 'isa' must not be importable"
assert importlib.util.find_spec("kernels") is None, "top-level 'kernels' must not be importable"
for pkg in ("mcusim.isa", "mcusim.kernels", "mcusim.kernels.schedules", "mcusim.devices",
            "mcusim.traces", "mcusim.importers", "mcusim.devices.npu"):
    assert importlib.util.find_spec(pkg) is not None, pkg
assert (r.files("mcusim.devices") / "stm32l4r5.toml").is_file()
assert (r.files("mcusim.isa") / "cortex_m4.toml").is_file()
assert (r.files("mcusim") / "schema" / "qnn-manifest.schema.json").is_file()
print("ok")
"""


def test_installed_layout(tmp_path):
    # run outside the repository so the source tree is not on sys.path
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
