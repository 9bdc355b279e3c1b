"""The demo bundle: a complete checkpoint folder in the official layout with tiny random
weights, so the studio works end to end before the real models are downloaded.

Written once, deterministically, into the user cache. Its weights make noise, not
music; every place that uses it says so. Its end-of-audio id lies outside the
vocabulary, so a demo song always runs to the length asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

DEMO_VERSION = "demo"
BUNDLE_NAME = "demo-bundle-v1"
DOWNLOAD_COMMAND = "python -m heartmula download --model-path ./ckpt"

_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]
_CODES = 64  # codec codebook size; also the language model's audio vocabulary
_MULA_CONFIG = {
    "architectures": ["HeartMuLa"],
    "model_type": "heartmula",
    "backbone": {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "dim": 64, "intermediate_dim": 128, "max_seq_len": 8192},
    "decoder": {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "dim": 32, "intermediate_dim": 64, "max_seq_len": 16},
    "text_vocab_size": 320,
    "audio_vocab_size": _CODES,
    "audio_num_codebooks": 8,
    "muq_dim": 16,
}
_CODEC_CONFIG = {
    "architectures": ["HeartCodec"], "model_type": "heartcodec", "dim": 32, "codebook_size": _CODES,
    "codebook_dim": 8, "num_quantizers": 8, "attention_head_dim": 16, "num_attention_heads": 2,
    "in_channels": 544, "out_channels": 256, "num_layers": 2, "num_layers_2": 1, "norm_type": "ada_norm_single",
    "sample_rate": 48000, "causal": True, "num_samples": 2, "num_bands": 1,
    "upsample_factors": [5, 4, 4, 4, 3], "upsample_kernel_sizes": [10, 8, 8, 8, 6], "latent_hidden_dim": 128,
    "default_kernel_size": 7, "delay_kernel_size": 5, "init_channel": 4, "res_kernel_size": 7,
}
# bos 0, eos 1, and an end-of-audio id no code can reach.
_GEN_CONFIG = {"text_bos_id": 0, "text_eos_id": 1, "audio_eos_id": _CODES, "empty_id": 0}


def cache_root() -> Path:
    env = os.environ.get("HEARTMULA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "heartmula"


def _tokenizer_json() -> str:
    """A byte-level tokenizer (every UTF-8 byte a token) that prepends bos, like Llama 3's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{_SPECIALS[0]} $A", special_tokens=[(_SPECIALS[0], 0)]
    )
    return tok.to_str()


def _random_state(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic values by name: norms and gains one, PReLU slopes 0.25, else N(0, 0.02)
    (codebooks N(0, 1)); drawn in sorted name order from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith(("scale", "norm.weight", "original0")):
            t = torch.ones(shape)
        elif name.endswith("activation.weight") or ".activation" in name:
            t = torch.full(shape, 0.25)
        elif "_codebook.embed" in name:
            t = torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * 0.02
        state[name] = t.contiguous()
    return state


def write_bundle(folder: Path) -> Path:
    """Write the whole demo checkpoint folder at `folder` (which must not exist)."""
    from safetensors.torch import save_file

    from .codec.decoder import CodecConfig, HeartCodec
    from .mula.model import HeartMuLa, HeartMuLaArgs

    mula_dir, codec_dir = folder / f"HeartMuLa-oss-{DEMO_VERSION}", folder / "HeartCodec-oss"
    mula_dir.mkdir(parents=True)
    codec_dir.mkdir()
    with torch.device("meta"):
        mula = HeartMuLa(HeartMuLaArgs.from_config(_MULA_CONFIG))
        codec = HeartCodec(CodecConfig.from_dict(_CODEC_CONFIG))
    save_file(_random_state({k: v.shape for k, v in mula.state_dict().items()}, seed=1),
              str(mula_dir / "model.safetensors"), metadata={"format": "pt"})
    save_file(_random_state(codec.checkpoint_shapes(), seed=2), str(codec_dir / "model.safetensors"),
              metadata={"format": "pt"})
    (mula_dir / "config.json").write_text(json.dumps(_MULA_CONFIG, indent=1))
    (codec_dir / "config.json").write_text(json.dumps(_CODEC_CONFIG, indent=1))
    (folder / "gen_config.json").write_text(json.dumps(_GEN_CONFIG, indent=1))
    (folder / "tokenizer.json").write_text(_tokenizer_json())
    (folder / "DEMO_WEIGHTS_MAKE_NOISE.txt").write_text(
        "These are tiny random weights for trying the studio. They make noise, not music.\n"
        f"Download the real models with: {DOWNLOAD_COMMAND}\n"
    )
    return folder


def ensure_demo_bundle(root: str | Path | None = None) -> Path:
    """The demo checkpoint folder, written on first use (atomically: built beside, renamed)."""
    target = Path(root or cache_root()) / BUNDLE_NAME
    if (target / "gen_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLE_NAME}.", dir=target.parent))
    try:
        shutil.rmtree(tmp)
        write_bundle(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: its bundle is the same
            if not (target / "gen_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_demo(model_path: str | Path) -> bool:
    return (Path(model_path) / "DEMO_WEIGHTS_MAKE_NOISE.txt").is_file()


DEFAULT_MODEL_PATH = "./ckpt"
DEFAULT_VERSION = "3B"
DEMO_BANNER = ("demo weights: noise, not music. No {missing} was found, so the demo bundle in {bundle} is used. "
               "Download the real models with: " + DOWNLOAD_COMMAND)


@dataclass(frozen=True)
class ModelChoice:
    model_path: str
    version: str
    demo: bool
    note: str = ""  # the banner to show when the demo stands in for a missing model


def choose_model(model_path: str | None = None, version: str | None = None, demo: bool = False) -> ModelChoice:
    """Which checkpoint a command runs on. The demo bundle stands in only where the user named
    no folder and the default one lacks the version (or where they ask for it); a folder they
    named that does not hold the model stays an error, raised later by the loader."""
    if demo:
        return ModelChoice(str(ensure_demo_bundle()), DEMO_VERSION, True)
    if model_path is not None and is_demo(model_path):
        return ModelChoice(str(model_path), version or DEMO_VERSION, True)
    version = version or DEFAULT_VERSION
    if model_path is not None:
        return ModelChoice(str(model_path), version, False)
    from .checkpoint import find_versions

    if version in find_versions(DEFAULT_MODEL_PATH):
        return ModelChoice(DEFAULT_MODEL_PATH, version, False)
    bundle = ensure_demo_bundle()
    missing = f"{DEFAULT_MODEL_PATH}/HeartMuLa-oss-{version}"
    return ModelChoice(str(bundle), DEMO_VERSION, True, DEMO_BANNER.format(missing=missing, bundle=bundle))
