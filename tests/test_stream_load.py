"""The streamed safetensors reader (heartmula/accel/stream_load.py) against safetensors' own."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from heartmula.checkpoint import CheckpointError, load_state_dict, weight_files
from heartmula.mula.load import load_heartmula
from heartmula.accel.stream_load import load_files, plan_chunks, read_header


def _equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


@pytest.mark.parametrize("chunk_bytes", [64, 4096, 1 << 20])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_tiny_checkpoint_matches_safetensors(tiny_ckpt, chunk_bytes, dtype):
    folder = tiny_ckpt / "HeartMuLa-oss-tiny"
    files = weight_files(folder)
    ours = load_files(files, torch.device("cpu"), dtype, chunk_bytes=chunk_bytes, workers=3)
    _equal(ours, load_state_dict(folder, "cpu", dtype, streamed=False))


def test_plan_covers_every_element_once_within_the_chunk_size(tiny_ckpt):
    files = [read_header(f) for f in weight_files(tiny_ckpt / "HeartCodec-oss")]
    entries = {e.name: e for es in files for e in es}
    for chunk_bytes in (8, 100, 4096):
        chunks = plan_chunks(files, chunk_bytes)
        seen = {name: 0 for name in entries}
        for c in chunks:
            assert 0 < c.nbytes <= chunk_bytes
            for p in c.pieces:
                e = entries[p.name]
                assert p.first == seen[p.name]  # in order, no gap, no overlap
                assert e.start + p.first * e.dtype.itemsize == c.start + p.offset
                seen[p.name] += p.count
        assert seen == {n: e.nbytes // e.dtype.itemsize for n, e in entries.items()}


def _write_raw(path, tensors: list[tuple[str, str, list[int], bytes]], pad: int = 0) -> None:
    """A safetensors file by hand, so offsets can be unaligned (save_file never makes those)."""
    header, data = {}, b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data + b"\0" * pad)


def test_unaligned_mixed_dtypes_and_empty_tensors(tmp_path):
    flags = torch.tensor([True, False, True])
    x = torch.randn(5, 7)
    ids = torch.arange(-4, 5, dtype=torch.int64)
    _write_raw(tmp_path / "m.safetensors", [
        ("flags", "BOOL", [3], flags.numpy().tobytes()),  # 3 bytes: everything after is unaligned
        ("x", "F32", [5, 7], x.numpy().tobytes()),
        ("none", "F16", [0, 4], b""),
        ("ids", "I64", [9], ids.numpy().tobytes()),
    ])
    for chunk_bytes in (16, 1 << 16):
        got = load_files([tmp_path / "m.safetensors"], torch.device("cpu"), torch.bfloat16, chunk_bytes=chunk_bytes)
        assert torch.equal(got["flags"], flags) and torch.equal(got["ids"], ids)
        assert got["x"].dtype == torch.bfloat16 and torch.equal(got["x"], x.bfloat16())
        assert got["none"].shape == (0, 4) and got["none"].dtype == torch.bfloat16


def test_truncated_and_garbled_files_name_the_file(tiny_ckpt, tmp_path):
    src = tiny_ckpt / "HeartMuLa-oss-tiny"
    dst = tmp_path / "HeartMuLa-oss-tiny"
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    whole = (src / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated download.*download it again"):
        load_state_dict(dst, "cpu", streamed=True)
    (dst / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors has an unreadable safetensors header"):
        load_state_dict(dst, "cpu", streamed=True)
    (dst / "model.safetensors").write_bytes(b"\x03")
    with pytest.raises(CheckpointError, match=r"too short"):
        load_state_dict(dst, "cpu", streamed=True)


def test_sharded_checkpoint_streams_to_the_same_model(tiny_ckpt, tmp_path):
    src = tiny_ckpt / "HeartMuLa-oss-tiny"
    state = load_file(str(src / "model.safetensors"))
    names = sorted(state)
    for i, part in enumerate((names[::2], names[1::2])):
        save_file({k: state[k] for k in part}, str(tmp_path / f"model-0000{i + 1}-of-00002.safetensors"))
    _equal(load_files(weight_files(tmp_path), torch.device("cpu"), chunk_bytes=256), state)


@pytest.mark.requires_cuda
def test_streamed_to_cuda_matches_safetensors(tiny_ckpt):
    for folder in (tiny_ckpt / "HeartMuLa-oss-tiny", tiny_ckpt / "HeartCodec-oss"):
        for chunk_bytes in (256, 1 << 20):
            ours = load_files(weight_files(folder), torch.device("cuda"), torch.bfloat16, chunk_bytes=chunk_bytes)
            _equal(ours, load_state_dict(folder, "cuda", torch.bfloat16, streamed=False))
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", "cuda", torch.bfloat16, fuse=False)
    _equal(model.state_dict(), load_state_dict(tiny_ckpt / "HeartMuLa-oss-tiny", "cpu", torch.bfloat16))


def _on_tmpfs(path) -> bool:
    """Whether `path` lives on a memory filesystem, whose pages never leave the page cache."""
    best, fstype = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, kind, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, fstype = mount, kind
    return fstype in ("tmpfs", "ramfs")


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="RWF_NOWAIT is Linux-only")
def test_the_page_cache_probe_tells_a_cold_file_from_a_warm_one(tmp_path):
    from heartmula.accel.stream_load import cached, drop_from_page_cache

    paths = []
    for i in range(2):  # a checkpoint in shards: the probes spread over both
        p = tmp_path / f"shard{i}.safetensors"
        save_file({"w": torch.randn(1 << 20)}, p)  # 4 MiB each
        paths.append(p)
    for p in paths:
        p.read_bytes()
    assert cached(paths)
    drop_from_page_cache(paths)
    if _on_tmpfs(tmp_path):  # memory is all such a file has: it is always warm
        assert cached(paths)
    else:
        assert not cached(paths)
    # the read from a cold cache gives the same tensors, and leaves the files warm
    assert torch.equal(load_files(paths[:1], "cpu")["w"], load_file(paths[0])["w"])
    load_files(paths[1:], "cpu")
    assert cached(paths)
