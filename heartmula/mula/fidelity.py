"""How closely a quantized model follows its reference: the numerical-quality figures of
`quant="int8"` (`python -m heartmula.bench --what quality`, tests/test_quant.py).

Both models are fed the same inputs (teacher forcing): the prompt, then the reference's
own frames. At every position, codebook 0's logits of the two are compared:

- `rel_err`: ||test - ref|| / ||ref|| over all positions' logits (Frobenius);
- `topk_overlap`: the mean share of the reference's top-k codes that are also the test's;
- `greedy_agreement`: the share of positions whose argmax is the same code;
- `kl_topk`: the mean KL(ref || test) of the softmax over the reference's top-k codes
  (temperature 1), i.e. how differently a top-k draw would go, in nats.

`frames_identical` adds the free-running view: both models generate greedily from the same
prompt and this is the share of frames (all codebooks) that come out the same; after the
first difference the two songs have different pasts, so it is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .generate import GenerateOptions, StepBuffers, cache_length, generate_frames, prompt_inputs
from .graphed_step import prepare_step
from .model import HeartMuLa
from .prompt import GenConfig, Prompt


@dataclass(frozen=True)
class Fidelity:
    positions: int  # logit vectors compared (frames + 1: the prompt step's too)
    topk: int
    rel_err: float
    topk_overlap: float
    greedy_agreement: float
    kl_topk: float  # mean over positions, nats
    kl_topk_max: float
    frames_identical: float | None = None  # free-running greedy, share of frames; None: not run


@torch.inference_mode()
def codebook0_logits(model: HeartMuLa, prompt: Prompt, frames: np.ndarray) -> torch.Tensor:
    """Codebook 0's float32 logits at the prompt's last position and after each of `frames`
    ([F, K] codes) -> [F + 1, vocab]: row t predicts frame t, given the prompt and frames < t."""
    frames = np.asarray(frames, dtype=np.int64)
    model.setup_caches(1, cache_length(len(prompt), len(frames) + 1, model.args.backbone.max_seq_len))
    buf = StepBuffers(model, takes=1, guided=False)
    kept = torch.from_numpy(frames).to(model.device)[None]
    h = prompt_inputs(model, prompt, buf, kept)
    hidden = model.backbone(h, torch.arange(h.shape[1], device=h.device))[0, len(prompt) - 1:]
    return model.codebook0_logits(hidden)


def compare_logits(ref: torch.Tensor, test: torch.Tensor, topk: int = 50) -> Fidelity:
    """The figures of two [positions, vocab] logit arrays (see the module's docstring)."""
    if ref.shape != test.shape or ref.dim() != 2 or ref.shape[0] == 0:
        raise ValueError(f"compare_logits needs two [positions, vocab] arrays of one shape; got "
                         f"{tuple(ref.shape)} and {tuple(test.shape)}")
    a, b = ref.double(), test.double()
    k = min(topk, a.shape[1])
    top_a, top_b = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    overlap = (top_a[:, :, None] == top_b[:, None, :]).any(dim=2).double().mean(dim=1)
    p = torch.log_softmax(a.gather(1, top_a), dim=1)
    q = torch.log_softmax(b.gather(1, top_a), dim=1)
    kl = (p.exp() * (p - q)).sum(dim=1).clamp_min(0.0)  # rounding can leave -1e-17
    return Fidelity(
        positions=a.shape[0], topk=k,
        rel_err=((a - b).norm() / a.norm()).item(),
        topk_overlap=overlap.mean().item(),
        greedy_agreement=(a.argmax(dim=1) == b.argmax(dim=1)).double().mean().item(),
        kl_topk=kl.mean().item(), kl_topk_max=kl.max().item(),
    )


def greedy_song(model: HeartMuLa, prompt: Prompt, n_frames: int, cfg_scale: float = 1.5, seed: int = 0,
                graphs: bool = False) -> np.ndarray:
    """The model's greedy (top-k 1) song of `n_frames` from `prompt`: [n_frames, K] codes."""
    opts = GenerateOptions(max_audio_length_ms=n_frames * 80, cfg_scale=cfg_scale, topk=1, ignore_eos=True, seed=seed)
    buf, step = prepare_step(model, len(prompt), opts, graphs=graphs)
    return generate_frames(model, prompt, GenConfig(), opts, buffers=buf, step=step).frames[0]


def compare_models(ref: HeartMuLa, test: HeartMuLa, prompt: Prompt, n_frames: int, topk: int = 50,
                   cfg_scale: float = 1.5, seed: int = 0, free_running: bool = True, graphs: bool = False) -> Fidelity:
    """`ref`'s greedy song of `n_frames` (cfg `cfg_scale`), then both models' codebook-0 logits
    teacher-forced along it; with `free_running`, also both models' own greedy songs.
    `graphs`: the songs' frame steps as CUDA graphs (as the studio runs them; faster)."""
    def song(model: HeartMuLa) -> np.ndarray:
        return greedy_song(model, prompt, n_frames, cfg_scale, seed, graphs)

    frames = song(ref)
    # the logits that predicted the frames, then frame n_frames's too: drop the last frame
    fid = compare_logits(codebook0_logits(ref, prompt, frames[:-1]), codebook0_logits(test, prompt, frames[:-1]), topk)
    if free_running:
        other = song(test)
        fid = replace(fid, frames_identical=float((frames == other).all(axis=1).mean()))
    ref.free_caches()
    test.free_caches()
    return fid
