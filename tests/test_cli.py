"""The command line: exit codes, one-line errors for user mistakes, and the outputs it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcusim.cli import main

from conftest import model_path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mcusim: error: ")
    assert "Traceback" not in err[0]
    return err[0]


def test_devices_lists_bundled(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("stm32l4r5", "nrf52840", "max78000"):
        assert name in out


def test_run_json_csv_and_outputs(tmp_path, capsys):
    p = model_path("kws_ref_model")
    js, csv, outdir = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "out"
    rc = main(
        [
            "run",
            str(p),
            "--device",
            "nrf52840",
            "--json",
            str(js),
            "--csv",
            str(csv),
            "--save-outputs",
            str(outdir),
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "total" in out and "peak RAM" in out
    d = json.loads(js.read_text())
    assert d["device"] == "nrf52840"
    keys = {
        "index",
        "name",
        "op",
        "engine",
        "precision",
        "macs",
        "cycles",
        "latency_s",
        "energy_j",
        "traffic",
    }
    for layer in d["layers"]:
        assert keys <= set(layer)
        assert layer["cycles"] > 0 and layer["energy_j"] > 0
        if layer["macs"]:
            assert layer["traffic"]["flash"]["read"] > 0  # weights come from flash
    assert d["totals"]["cycles"] == sum(layer["cycles"] for layer in d["layers"])
    assert csv.read_text().splitlines()[0].startswith("index,name,op")
    y = np.load(outdir / "output_0.npy")
    assert y.shape == (1, 12) and y.dtype == np.int8


def test_input_file_wrong_shape(tmp_path, capsys):
    p = model_path("kws_ref_model")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 10, 49, 1), np.int8))
    assert main(["run", str(p), "--input", str(x)]) == 2
    line = _one_error_line(capsys)
    assert "shape (1, 10, 49, 1)" in line and "(1, 49, 10, 1)" in line


def test_input_file_wrong_dtype(tmp_path, capsys):
    p = model_path("kws_ref_model")
    x = tmp_path / "x.npy"
    np.save(x, np.full((1, 49, 10, 1), 0.5, np.float64))
    assert main(["run", str(p), "--input", str(x)]) == 2
    assert "dtype float64" in _one_error_line(capsys)


def test_input_int64_values_in_range_accepted(tmp_path):
    p = model_path("kws_ref_model")
    x = tmp_path / "x.npy"
    np.save(x, np.arange(490, dtype=np.int64).reshape(1, 49, 10, 1) % 256 - 128)
    assert main(["run", str(p), "--input", str(x)]) == 0


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty or truncated"),
        (b"hello world, not a model", "not a TFLite flatbuffer"),
        (b"PK\x03\x04garbage-zip", "g.bin"),
    ],
)
def test_garbage_model(tmp_path, capsys, content, fragment):
    f = tmp_path / "g.bin"
    f.write_bytes(content)
    assert main(["run", str(f)]) == 2
    line = _one_error_line(capsys)
    assert fragment in line and "g.bin" in line


def test_truncated_tflite(tmp_path, capsys):
    data = model_path("kws_ref_model").read_bytes()
    f = tmp_path / "cut.tflite"
    f.write_bytes(data[: len(data) // 3])
    assert main(["run", str(f)]) == 2
    assert "cut.tflite" in _one_error_line(capsys)


def test_missing_model(capsys):
    assert main(["run", "no/such/model.tflite"]) == 2
    assert "not found" in _one_error_line(capsys)


def test_malformed_device_toml(tmp_path, capsys):
    p = model_path("hello_world_int8")
    d = tmp_path / "bad.toml"
    d.write_text('[device]\nname = "x"\n[core]\nname = "cortex-m4"\n')
    assert main(["run", str(p), "--device", str(d)]) == 2
    line = _one_error_line(capsys)
    assert "bad.toml" in line and "key" in line


def test_model_too_large_for_device(tmp_path, capsys):
    import mcusim

    src = mcusim.load_device("stm32l4r5").source
    from importlib import resources

    text = (resources.files("mcusim.devices") / src).read_text()
    small = text.replace("size = 655_360", "size = 4_096")
    d = tmp_path / "tiny.toml"
    d.write_text(small)
    p = model_path("vww_96_int8")
    assert main(["run", str(p), "--device", str(d)]) == 2
    line = _one_error_line(capsys)
    assert "does not fit" in line and "4096" in line and "bytes of sram" in line


def test_info(capsys):
    p = model_path("kws_ref_model")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "2,656,768" in out  # total MACs from shared/models/README.md


def test_debug_shows_traceback(tmp_path):
    f = tmp_path / "g.bin"
    f.write_bytes(b"junk junk junk")
    from mcusim.errors import ModelFormatError

    with pytest.raises(ModelFormatError):
        main(["--debug", "run", str(f)])


def test_unknown_op_one_line(tmp_path, capsys):
    from tflite_builder import TFLiteBuilder

    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("GELU", [x], [y])
    f = tmp_path / "gelu.tflite"
    f.write_bytes(b.build([x], [y]))
    assert main(["run", str(f)]) == 2
    line = _one_error_line(capsys)
    assert "gelu.tflite" in line and "GELU" in line and "operator #0" in line


def test_convert_then_run_qnn(tmp_path, capsys):
    p = model_path("micro_speech_quantized")
    q = tmp_path / "ms.qnn"
    assert main(["convert", str(p), "-o", str(q)]) == 0
    assert main(["run", str(q), "--device", "max78000", "--json", str(tmp_path / "a.json")]) == 0
    assert main(["run", str(p), "--device", "max78000", "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["layers"] == b["layers"]
    out = capsys.readouterr().out
    assert "npu:max78000-cnn" in out and "cpu:cortex-m4" in out  # heterogeneous placement


def test_memory_placement_override(tmp_path, capsys):
    """Constants copied from (5-wait-state) flash to SRAM: no flash traffic, fewer stalls."""
    p = model_path("kws_ref_model")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["run", str(p), "--json", str(a)]) == 0
    assert main(["run", str(p), "--memory", "constants=sram", "--json", str(b)]) == 0
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    # no data from flash any more (the flash still delivers instruction lines: "fill")
    assert ja["totals"]["traffic"]["flash"]["read"] > 0
    assert jb["totals"]["traffic"].get("flash", {}).get("read", 0) == 0
    assert jb["totals"]["cycles"] < ja["totals"]["cycles"]
    assert main(["run", str(p), "--memory", "arena=flash"]) == 2
    assert "activations need writable memory" in _one_error_line(capsys)
    assert main(["run", str(p), "--memory", "arena"]) == 2
    assert "expected ROLE=MEMORY" in _one_error_line(capsys)
    assert main(["run", str(p), "--memory", "arena=dtcm"]) == 2
    assert "no memory named 'dtcm'" in _one_error_line(capsys)
