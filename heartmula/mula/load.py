"""HeartMuLa from its official checkpoint folder: built on the meta device, the
checkpoint's tensors adopted as its parameters, names and shapes checked."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, check_keys, load_state_dict, read_json
from .model import HeartMuLa, HeartMuLaArgs


def load_heartmula(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   fuse: bool = True):
    """Build HeartMuLa on the meta device (no memory, no init), then adopt the
    checkpoint's tensors as its parameters, already on `device` in `dtype`. With `fuse`,
    q/k/v and w1/w3 are stacked for speed (the state dict then has other names)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        args = HeartMuLaArgs.from_config(read_json(config_path), where=str(config_path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    with torch.device("meta"):
        model = HeartMuLa(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = load_state_dict(folder, device, dtype)
    check_keys(state, expected, str(folder))
    model.load_state_dict(state, assign=True, strict=True)
    del state
    model.eval().requires_grad_(False)
    return model.fuse_projections() if fuse else model
