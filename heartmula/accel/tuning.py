"""The int8 tile sweep of `python -m heartmula.bench --what products --quant int8`: which
(BLOCK_N, BLOCK_K, warps, stages) it tries for gemv.py's kernel, compiling them all in
parallel before any is timed, and the `INT8_TUNED` table it prints for gemv.py.

Timing a config is cheap (one CUDA graph over ~400 MB of weights, a few milliseconds);
compiling it is not (Triton and ptxas, about a second of one CPU core). The sweep compiles
~800 kernels, so they are compiled by worker processes on every core first: each launches
its share once, which writes the binaries into Triton's on-disk cache, and the timing
process then loads them from there instead of compiling one at a time.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

BLOCK_N = (1, 2, 4, 8, 16)
BLOCK_K = (256, 512, 1024, 2048, 4096)
WARPS = (2, 4, 8)
STAGES = (1, 2, 3, 4, 5)
# The kernel keeps BLOCK_M x BLOCK_N x BLOCK_K float32 partial sums spread over the threads.
# Above 128 a thread they spill to local memory (the bf16 table's tiles hold 64-128); below 16
# a program moves too few bytes per iteration to keep the stream busy.
ACC_PER_THREAD = (16, 128)
# Loads in flight live in shared memory, `stages` tiles deep (int8 weights, bf16 activations);
# an H100/H200 has 227 KiB a block, and configs near it leave no room for a second block.
SHARED_BYTES = 128 * 1024

Config = tuple[int, int, int, int]  # (BLOCK_N, BLOCK_K, warps, stages)


def int8_sweep_configs(block_m: int, k: int) -> list[Config]:
    """The configs worth timing for BLOCK_M rows of an int8 weight K wide."""
    out = []
    for block_n in BLOCK_N:
        for block_k in BLOCK_K:
            if block_k > k:  # a tile wider than the row only adds masked lanes
                continue
            for warps in WARPS:
                per_thread = block_m * block_n * block_k // (32 * warps)
                if not ACC_PER_THREAD[0] <= per_thread <= ACC_PER_THREAD[1]:
                    continue
                for stages in STAGES:
                    if stages > 1 and stages > -(-k // block_k):  # deeper than the loop is long: the same as fewer
                        continue
                    if (block_n * block_k + 2 * block_m * block_k) * stages > SHARED_BYTES:
                        continue
                    out.append((block_n, block_k, warps, stages))
    return out


# One compile job: (rows, N, K, activation dtype, output dtype, config). The dtypes are names
# (torch dtypes pickle, but names read better in a failure message).
Job = tuple[int, int, int, str, str, Config]


def _compile_jobs(jobs: list[Job]) -> list[str]:
    """Worker: launch each job's kernel once on zeros of its exact shapes and dtypes, so that
    the kernel key (dtypes, divisibility of sizes and strides, constexprs) is the one the
    timing process will ask for. Returns the failures (a config over the card's shared memory
    is one; the sweep skips it)."""
    from . import gemv

    if not jobs:
        return []
    dev = torch.device("cuda")
    failed, shape, tensors = [], None, None
    for rows, n, k, x_dtype, out_dtype, config in sorted(jobs):
        if shape != (rows, n, k, x_dtype):  # jobs are sorted: one shape's tensors at a time
            shape = (rows, n, k, x_dtype)
            tensors = (torch.zeros(rows, k, dtype=getattr(torch, x_dtype), device=dev),
                       torch.zeros(n, k, dtype=torch.int8, device=dev), torch.ones(n, device=dev))
        x, q, s = tensors
        try:
            gemv.matvec(x, q, getattr(torch, out_dtype), config=config, scale=s)
        except Exception as e:  # noqa: BLE001 - reported, and the timing process skips the config
            failed.append(f"rows {rows} [{n}x{k}] {config}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    torch.cuda.synchronize()
    return failed


def compile_in_parallel(jobs: list[Job], workers: int | None = None) -> list[str]:
    """Compile every job's kernel into Triton's cache with `workers` processes (default: all
    cores but one). Returns the failures. Where Triton's interpreter runs there is nothing to
    compile; where the pool itself fails, the timing process compiles as it goes (slower, same
    figures), so this never stops a sweep."""
    if os.environ.get("TRITON_INTERPRET") == "1" or not jobs:
        return []
    workers = workers or max(1, min(len(jobs), (os.cpu_count() or 2) - 1))
    # Interleaved shares: each worker gets cheap and expensive configs alike.
    shares = [jobs[i::workers] for i in range(workers)]
    t = time.perf_counter()
    try:
        # spawn: the parent has initialised CUDA, which a forked child cannot use.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            failed = [f for share in pool.map(_compile_jobs, shares) for f in share]
    except Exception as e:  # noqa: BLE001 - the sweep still runs, compiling as it goes
        print(f"int8 sweep: parallel compile failed ({type(e).__name__}: {e}); compiling while timing",
              file=sys.stderr, flush=True)
        return []
    print(f"int8 sweep: compiled {len(jobs)} kernels in {time.perf_counter() - t:.0f} s on {workers} processes "
          f"({len(failed)} refused)", file=sys.stderr, flush=True)
    return failed


def format_int8_tuned(entries: dict[tuple[int, int, int], tuple[Config, str]]) -> str:
    """`INT8_TUNED = {...}` for gemv.py, one line per (rows bucket, N, K) with its comment."""
    lines = ["INT8_TUNED = {"]
    for key in sorted(entries):
        config, comment = entries[key]
        lines.append(f"    {key}: {tuple(config)},  # {comment}")
    return "\n".join(lines + ["}"])
