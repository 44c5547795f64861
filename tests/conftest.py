"""Shared test fixtures: where the shared real models are, and skipping when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models"

SHARED_MODELS = [
    "hello_world_int8",
    "micro_speech_quantized",
    "ad01_int8",
    "kws_ref_model",
    "vww_96_int8",
    "pretrainedResnet_quant",
]


def model_path(name: str) -> Path:
    """Path of a shared model; skips the calling test with a message when absent."""
    p = MODELS / f"{name}.tflite"
    if not p.exists():
        pytest.skip(f"shared model {p} not present (../shared/models is absent)")
    return p


@pytest.fixture
def models_dir() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"{MODELS} is absent: shared real models are not available")
    return MODELS
