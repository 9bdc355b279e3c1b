"""Reading safetensors files onto an accelerator at the speed of the copy engine.

safetensors' own loader copies one tensor at a time from the memory map through pageable
memory: one CPU thread does a memcpy into a driver bounce buffer, then the GPU copies it,
and nothing overlaps. For a 12 GB float32 3B checkpoint that is ~2.6-3 s on an H100 host.

Here the files' data regions are cut into fixed-size chunks; a pool of threads reads them
with `os.preadv` (no GIL held) into a ring of pinned host buffers, and the main thread
queues, on one side stream, each chunk's single host-to-device copy and then the casts
that scatter its pieces into the destination tensors. A buffer is read into again only
after the event recorded behind its copy has completed, so the reads, the copies and the
casts of different chunks all overlap.

The file format (https://github.com/huggingface/safetensors#format): an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} and the
data, little-endian, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

CHUNK_BYTES = 16 << 20  # one host-to-device copy; big enough to run at full PCIe speed
# Concurrent preads: one thread's memcpy out of the page cache tops out near 6 GB/s. From a cold
# page cache the disk sets the pace at any count: `bench --what cold`, 15.75 GB on H200 hosts, two
# runs: 8 threads 9.44 and 9.03 s, 16 9.14 and 10.64 s, 32 8.58 and 9.48 s (runai-model-streamer
# 9.33 and 9.04 s), so the warm best stands.
WORKERS = 8
PROBES = 16  # page-cache probes spread over a checkpoint's bytes
SLOTS_PER_WORKER = 2  # a worker can read its next chunk while its last one is being copied

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class Piece:
    """Elements [first, first + count) of one tensor, found at `offset` bytes into a chunk."""
    name: str
    first: int
    count: int
    offset: int


@dataclass(frozen=True)
class Chunk:
    file: int  # index into the list of files
    start: int  # absolute byte offset in that file
    nbytes: int
    pieces: tuple[Piece, ...]


def read_header(path: str | Path) -> list[TensorEntry]:
    """The tensors of one safetensors file, in file order; ValueError names what is wrong."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ValueError(f"{path} declares a {n}-byte header but holds {size} bytes (truncated download?)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} has an unreadable safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object")
    base = 8 + n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: tensor {name!r} has a bad header entry {info!r} ({e!r})") from e
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0 or base + end > size:
            raise ValueError(f"{path}: tensor {name!r} claims bytes {begin}..{end} for shape {shape} "
                             f"{info['dtype']}; the file has {size - base} data bytes (truncated download?)")
        entries.append(TensorEntry(name, dtype, shape, base + begin, end - begin))
    entries.sort(key=lambda e: e.start)
    return entries


def plan_chunks(files: list[list[TensorEntry]], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """Cut each file's tensors into chunks of at most `chunk_bytes` contiguous file bytes.

    Small tensors share a chunk; a large one is split at element boundaries, so every
    piece is whole elements of one tensor."""
    chunks: list[Chunk] = []
    for fi, entries in enumerate(files):
        start, end, pieces = None, None, []

        def close():
            if pieces:
                chunks.append(Chunk(fi, start, end - start, tuple(pieces)))

        for e in entries:
            size, done = e.dtype.itemsize, 0  # bytes of e already planned
            while done < e.nbytes:  # an empty tensor needs no bytes and no piece
                here = e.start + done
                if pieces and (here != end or here + size - start > chunk_bytes):
                    close()  # a hole in the file, or not even one more element fits
                    pieces = []
                if not pieces:
                    start = end = here
                take = min(e.nbytes - done, (chunk_bytes - (here - start)) // size * size)
                pieces.append(Piece(e.name, done // size, take // size, here - start))
                end = here + take
                done += take
        close()
    return chunks


def drop_from_page_cache(paths: list[Path]) -> None:
    """Evict the files' pages from the page cache, so that the next read comes from the disk, as
    a first start after a download or a reboot does (the benchmark's cold reads). DONTNEED
    needs no privileges and drops clean pages only, hence the fsync first."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached(paths: list[Path], probes: int = PROBES) -> bool:
    """Whether the files' bytes are in the page cache (the benchmark checks that its cold reads
    are cold): `probes` 4 KiB reads spread evenly over them, each made with RWF_NOWAIT, which
    fails rather than wait for the disk. Most probes served means warm. Where the flag is
    unknown (not Linux, or a filesystem that refuses it), the answer is warm."""
    sizes = [Path(p).stat().st_size for p in paths]
    total = sum(sizes)
    if not hasattr(os, "RWF_NOWAIT") or total == 0:
        return True
    fds, buf, missed = [os.open(p, os.O_RDONLY) for p in paths], bytearray(4096), 0
    try:
        for i in range(probes):
            at = (2 * i + 1) * total // (2 * probes)  # the middle of each of `probes` equal stretches
            f = 0
            while at >= sizes[f]:
                at, f = at - sizes[f], f + 1
            try:
                os.preadv(fds[f], [buf], at, os.RWF_NOWAIT)
            except BlockingIOError:  # EAGAIN: the page is not in memory
                missed += 1
            except OSError:  # EOPNOTSUPP and the like: no way to tell
                return True
    finally:
        for fd in fds:
            os.close(fd)
    return missed <= probes // 2


def load_files(paths: list[Path], device: torch.device, dtype: torch.dtype | None = None,
               *, chunk_bytes: int = CHUNK_BYTES, workers: int = WORKERS,
               only: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of `paths` on `device`; floating-point ones cast to `dtype` if given.
    `only`: just these tensors (the others' bytes are not read)."""
    device = torch.device(device)
    files = [read_header(p) for p in paths]
    if only is not None:
        files = [[e for e in entries if e.name in only] for entries in files]
    state: dict[str, torch.Tensor] = {}
    for entries in files:
        for e in entries:
            to = dtype if dtype is not None and e.dtype.is_floating_point else e.dtype
            state[e.name] = torch.empty(e.shape, dtype=to, device=device)
    src_dtype = {e.name: e.dtype for entries in files for e in entries}
    chunks = plan_chunks(files, chunk_bytes)
    if not chunks:
        return state

    cuda = device.type == "cuda"
    n_slots = min(len(chunks), workers * SLOTS_PER_WORKER)
    chunk_bytes = max(c.nbytes for c in chunks)  # a small checkpoint needs only small buffers
    host = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=cuda) for _ in range(n_slots)]
    views = [memoryview(h.numpy()) for h in host]
    staged = [torch.empty(chunk_bytes, dtype=torch.uint8, device=device) for _ in range(n_slots)] \
        if device.type != "cpu" else host
    done_with: list[torch.cuda.Event | None] = [None] * n_slots  # set before the slot's next read is queued
    stream = torch.cuda.Stream(device) if cuda else None
    fds = [os.open(p, os.O_RDONLY) for p in paths]

    def read(i: int) -> None:
        c, slot = chunks[i], i % n_slots
        if done_with[slot] is not None:
            done_with[slot].synchronize()
        view, got = views[slot][:c.nbytes], 0
        while got < c.nbytes:
            n = os.preadv(fds[c.file], [view[got:]], c.start + got)
            if n <= 0:
                raise ValueError(f"{paths[c.file]} ended at byte {c.start + got}, before its tensors' data did "
                                 "(truncated download?)")
            got += n

    if cuda:  # the destinations may reuse memory that queued work on the caller's stream still reads
        stream.wait_stream(torch.cuda.current_stream(device))
    try:
        with ThreadPoolExecutor(min(workers, n_slots), thread_name_prefix="stream-load") as pool:
            pending = {i: pool.submit(read, i) for i in range(n_slots)}
            with torch.cuda.stream(stream) if cuda else nullcontext(), _cancel_on_error(pool):
                for i, c in enumerate(chunks):
                    pending.pop(i).result()
                    slot = i % n_slots
                    src = staged[slot][:c.nbytes]
                    if device.type != "cpu":
                        # Pinned source: asynchronous; pageable (other accelerators): the copy
                        # has read the buffer when it returns, so the buffer may be reused.
                        src.copy_(host[slot][:c.nbytes], non_blocking=cuda)
                    for p in c.pieces:
                        size = src_dtype[p.name].itemsize
                        raw = src[p.offset:p.offset + p.count * size]
                        if p.offset % size:  # an unaligned tensor: a view needs an aligned start
                            raw = raw.clone()
                        dst = state[p.name].view(-1)[p.first:p.first + p.count]
                        dst.copy_(raw.view(src_dtype[p.name]))
                    if cuda:
                        done_with[slot] = stream.record_event()
                    if i + n_slots < len(chunks):
                        pending[i + n_slots] = pool.submit(read, i + n_slots)
    finally:
        if cuda:
            # The caller's stream, and the allocator that will reuse the staging buffers,
            # must see every copy queued on the side stream, also when a read failed.
            torch.cuda.current_stream(device).wait_stream(stream)
        for fd in fds:
            os.close(fd)
    return state



@contextmanager
def _cancel_on_error(pool: ThreadPoolExecutor):
    """A failed read ends the load: the reads queued behind it need not run."""
    try:
        yield
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
