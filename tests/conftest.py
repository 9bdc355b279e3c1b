"""Shared fixtures: the golden data beside the checkout (../shared/golden) and markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"
TINY_CKPT = GOLDEN / "ckpt_tiny"


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_cuda: needs an NVIDIA GPU (skipped on CPU-only machines and in CI)")
    config.addinivalue_line("markers", "browser: drives a real Chromium through Playwright")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; run on the GPU machine")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}; the tests expect ../shared/golden beside the checkout")
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_ckpt(golden_dir) -> Path:
    return golden_dir / "ckpt_tiny"


@pytest.fixture(scope="session")
def mula_golden(golden_dir):
    from safetensors.numpy import load_file

    meta = json.loads((golden_dir / "heartmula_tiny_golden.json").read_text())
    return meta, load_file(str(golden_dir / "heartmula_tiny_golden.safetensors"))
