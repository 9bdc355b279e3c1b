"""HeartMuLa from its official checkpoint folder: built on the meta device, the
checkpoint's tensors adopted as its parameters, names and shapes checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, check_keys, load_state_dict, read_json
from . import quant as quantization
from .model import HeartMuLa, HeartMuLaArgs


@dataclass(frozen=True)
class _Quantized:
    """A checkpoint tensor already quantized (q, scale), with the shape it had in the
    checkpoint, so that `check_keys` checks it like any other tensor."""

    q: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size


class QuantizeOnArrival:
    """`load_state_dict`'s `convert` for quant="int8": each QUANTIZED tensor is quantized
    where it landed (the device) as it arrives, queued without a host sync, so reading the
    next group overlaps this one's quantization; the rest pass through.

    int8 cannot hold inf or NaN. A row holding one gets a non-finite scale (quantize_rows),
    so each tensor leaves a flag on the device, and `check_finite` reads them all once, after
    the last group: one sync per load instead of one per tensor."""

    def __init__(self) -> None:
        self._flags: list[tuple[str, torch.Tensor]] = []  # (name, 0-d bool: some scale is not finite)

    def __call__(self, name: str, tensor: torch.Tensor):
        if not quantization.QUANTIZED.match(name):
            return tensor
        # audio_head is [K-1, ddim, vocab]: quantized per vocab entry, as the [K-1, vocab, ddim]
        # rows the heads are read as (quantize_rows reads the transposed view in place).
        rows = tensor.transpose(1, 2) if name == "audio_head" else tensor
        q, scale = quantization.quantize_rows(rows)
        self._flags.append((name, ~torch.isfinite(scale).all()))
        return _Quantized(q, scale, tensor.shape)

    def check_finite(self) -> None:
        """CheckpointError naming every tensor that held inf or NaN, if one did."""
        if not self._flags:
            return
        bad = torch.stack([flag for _, flag in self._flags]).cpu().tolist()
        names = [name for (name, _), b in zip(self._flags, bad) if b]
        if names:
            raise CheckpointError(f"checkpoint tensor {', '.join(names)} holds inf or NaN values, which int8 cannot "
                                  "represent; download the checkpoint again, or load it with quant='none'")


def load_heartmula(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   fuse: bool = True, quant: str = "none"):
    """Build HeartMuLa on the meta device (no memory, no init), then adopt the
    checkpoint's tensors as its parameters, already on `device` in `dtype`. With `fuse`,
    q/k/v and w1/w3 are stacked for speed (the state dict then has other names).

    quant="int8" (quant.py) stores the blocks' products, the projection and the heads as
    int8 with per-row scales, quantized one checkpoint file at a time as it is read."""
    quantization.check_quant(quant)
    if quant != "none" and not fuse:
        raise ValueError(f"quant={quant!r} needs fuse=True (the quantized model is stored fused)")
    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        args = HeartMuLaArgs.from_config(read_json(config_path), where=str(config_path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    with torch.device("meta"):
        model = HeartMuLa(args)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if quant == "none":
        state = load_state_dict(folder, device, dtype)
        check_keys(state, expected, str(folder))
        model.load_state_dict(state, assign=True, strict=True)
        del state
        model.eval().requires_grad_(False)
        return model.fuse_projections() if fuse else model
    quantize = QuantizeOnArrival()
    state = load_state_dict(folder, device, dtype, convert=quantize)
    quantize.check_finite()
    check_keys(state, expected, str(folder))
    # The quantized, fused structure is built on the meta device too, then adopts the
    # int8 tensors: nothing is ever allocated twice.
    quantization.quantize_model(model.fuse_projections())
    # Handed over one entry at a time: state drops each tensor as the fused dict takes it.
    pairs = {}
    for k in list(state):
        v = state.pop(k)
        pairs[k] = (v.q, v.scale) if isinstance(v, _Quantized) else v
    del state, v
    fused = quantization.fused_int8_state(pairs)
    model.load_state_dict(fused, assign=True, strict=True)
    del fused
    return model.eval().requires_grad_(False)
