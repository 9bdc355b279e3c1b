"""The official checkpoint folder: finding its pieces and loading their weights.

Layout (what users download from the hub):
    ckpt/
      HeartMuLa-oss-{version}/   config.json + model*.safetensors (+ model.safetensors.index.json)
      HeartCodec-oss/            config.json + model*.safetensors
      HeartTranscriptor-oss/     a Hugging Face Whisper folder (optional)
      tokenizer.json
      gen_config.json

Weights are only ever read from safetensors; pickled files are refused, never unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

DOWNLOAD_HINT = ("Download the models with: python -m heartmula download --model-path {root} "
                 "(or try the demo weights, which make noise: add --demo)")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(RuntimeError):
    """A checkpoint piece is missing or unusable; the message names the path and the fix."""


def permission_denied(path: str | Path) -> CheckpointError:
    """The error for a checkpoint piece that exists but this user may not read. Kept apart from
    "missing", because downloading again does not help (safetensors reports EACCES as "No such file")."""
    return CheckpointError(
        f"permission denied: {path} (the user running HeartMuLa, uid {os.getuid()}, cannot read it; "
        "make it readable, e.g. chmod -R a+rX on the model folder, or run as its owner)")


def _check_readable(file: Path) -> None:
    try:
        with open(file, "rb"):
            pass
    except PermissionError as e:
        raise permission_denied(file) from e


@dataclass(frozen=True)
class CheckpointPaths:
    root: Path
    mula: Path  # HeartMuLa-oss-{version}/
    codec: Path  # HeartCodec-oss/
    tokenizer: Path  # tokenizer.json
    gen_config: Path  # gen_config.json
    transcriptor: Path  # HeartTranscriptor-oss/ (may not exist)
    version: str


def find_versions(root: str | Path) -> list[str]:
    """The HeartMuLa versions present in a checkpoint folder ('3B', 'tiny', ...)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name[len("HeartMuLa-oss-"):] for p in root.glob("HeartMuLa-oss-*") if p.is_dir())


def resolve_paths(root: str | Path, version: str = "3B", *, need_codec: bool = True) -> CheckpointPaths:
    """Check that the official layout is present under `root` and return its paths."""
    root = Path(root).expanduser()
    paths = CheckpointPaths(
        root=root,
        mula=root / f"HeartMuLa-oss-{version}",
        codec=root / "HeartCodec-oss",
        tokenizer=root / "tokenizer.json",
        gen_config=root / "gen_config.json",
        transcriptor=root / "HeartTranscriptor-oss",
        version=version,
    )
    hint = DOWNLOAD_HINT.format(root=root)
    if not root.is_dir():
        raise CheckpointError(f"model folder {root} does not exist. {hint}")
    if not paths.mula.is_dir():
        found = find_versions(root)
        also = f" (found versions: {', '.join(found)}; pass --version)" if found else ""
        raise CheckpointError(f"expected the HeartMuLa model at {paths.mula}, but it is missing{also}. {hint}")
    wanted = [paths.mula / "config.json", paths.tokenizer, paths.gen_config]
    if need_codec:
        wanted += [paths.codec, paths.codec / "config.json"]
    for p in wanted:
        if not p.exists():
            raise CheckpointError(f"expected {p}, but it is missing. {hint}")
    return paths


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise CheckpointError(f"expected {path}, but it is missing") from e
    except PermissionError as e:
        raise permission_denied(path) from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download it again") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a model folder: one file, or the shards an index names."""
    folder = Path(folder)
    try:
        os.listdir(folder)  # an unreadable folder would otherwise look empty ("no weights")
    except PermissionError as e:
        raise permission_denied(folder) from e
    except OSError:
        pass  # missing: the messages below say so
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map", {})
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are missing: {', '.join(map(str, missing))}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickled:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}). Pickles can run code when loaded, "
            "so they are refused; download the official safetensors checkpoint instead."
        )
    raise CheckpointError(f"no model*.safetensors in {folder}; download the official checkpoint")


def load_state_dict(
    folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
    *, streamed: bool | None = None, convert: Callable[[str, torch.Tensor], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Read every tensor of a model folder's safetensors onto `device`.

    Floating-point tensors are cast to `dtype` when one is given; others keep theirs.
    `streamed` (the default off the CPU) reads through pinned buffers on several threads
    (stream_load.py); otherwise safetensors maps each file and copies tensor by tensor.
    `convert(name, tensor)`, when given, replaces each tensor as soon as it is read, and
    tensors are read in groups of at most `CONVERT_GROUP_BYTES` of file: only one group
    exists in `dtype` at once (quantization at load: the bf16 model never sits in device
    memory, nor does a whole 5 GB shard of it).
    """
    files = weight_files(folder)
    if convert is None:
        return _read_files(files, folder, torch.device(device), dtype, streamed)
    state: dict = {}
    for file, names in _groups(files):
        part = _read_files([file], folder, torch.device(device), dtype, streamed, only=names)
        for name in list(part):
            state[name] = convert(name, part.pop(name))
        del part
    return state


CONVERT_GROUP_BYTES = 1 << 30  # file bytes read per group when converting at load (see load_state_dict)


def _groups(files: list[Path]) -> list[tuple[Path, set[str] | None]]:
    """Each file's tensors in file order, cut into groups of at most CONVERT_GROUP_BYTES (a
    larger tensor is a group of its own). A file whose header cannot be read is one group:
    the read that follows reports what is wrong with it."""
    from .accel.stream_load import read_header

    out: list[tuple[Path, set[str] | None]] = []
    for file in files:
        try:
            entries = read_header(file)
        except (OSError, ValueError):
            out.append((file, None))
            continue
        group: set[str] = set()
        size = 0
        for e in entries:
            if group and size + e.nbytes > CONVERT_GROUP_BYTES:
                out.append((file, group))
                group, size = set(), 0
            group.add(e.name)
            size += e.nbytes
        if group or not entries:
            out.append((file, group))
    return out


def _read_files(files: list[Path], folder: str | Path, device: torch.device, dtype: torch.dtype | None,
                streamed: bool | None, only: set[str] | None = None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if streamed if streamed is not None else device.type != "cpu":
        from .accel.stream_load import load_files

        try:
            return load_files(files, device, dtype, only=only)
        except PermissionError as e:
            raise permission_denied(e.filename or folder) from e
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: {e}; download it again") from e
    state: dict[str, torch.Tensor] = {}
    for file in files:
        _check_readable(file)
        try:
            # safetensors names the CPU "cpu" only; torch also accepts "cpu:0" (a second device by name)
            where = "cpu" if torch.device(device).type == "cpu" else str(device)
            with safe_open(str(file), framework="pt", device=where) as f:
                for name in f.keys():
                    if only is not None and name not in only:
                        continue
                    t = f.get_tensor(name)
                    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
                        t = t.to(dtype)
                    state[name] = t
        except Exception as e:
            raise CheckpointError(f"{file} could not be read as safetensors ({e}); download it again") from e
    return state


def check_keys(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], where: str,
               ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Every expected key present with its shape, and nothing unknown (but the ignored)."""
    unknown = sorted(k for k in state if k not in expected and not k.startswith(ignore_prefixes))
    missing = sorted(k for k in expected if k not in state)
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
    if wrong:
        problems.append(f"shape mismatches: {'; '.join(wrong[:10])}")
    if problems:
        raise CheckpointError(f"{where} does not match the model config: " + " | ".join(problems))
