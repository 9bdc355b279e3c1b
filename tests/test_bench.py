"""`python -m heartmula.bench` at --size small on the CPU: row names say what ran, and the H100/H200
targets are not judged on a device they were not set for."""

from __future__ import annotations

import pytest

from heartmula import bench
from test_stream_load import _on_tmpfs


def test_small_cpu_load_row_names_what_ran_and_does_not_judge_the_gpu_target(capsys, tmp_path):
    assert bench.main(["--device", "cpu", "--size", "small", "--what", "load", "--load-folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint load" in out, out
    rows = [line for line in out.splitlines() if line.startswith(("checkpoint load", "  read only", "codec load",
                                                                   "both models"))]
    load = rows[0]
    assert load.startswith("checkpoint load, small float32 safetensors -> cpu float32"), out
    assert "3B" not in load and "NO" not in load.split()
    assert load.split()[-2:] == ["—", "—"]  # target and met: the targets are for CUDA at 3B
    assert "not judged here" in out
    assert len(rows) == len(set(r.strip().split("  ")[0] for r in rows)) == 13  # every row name once (int8 too)
    # issue 21: the codec from a float32 checkpoint of its own, streamed and through the host,
    # and both models resident (its target is judged on CUDA at 3B only)
    assert any(r.startswith("codec load, small float32 safetensors -> cpu, streamed") for r in rows), out
    assert any(r.startswith("codec load, small float32 safetensors -> cpu, through the host") for r in rows), out
    both = next(r for r in rows if r.startswith("both models resident"))
    assert both.split()[-2:] == ["—", "—"], both
    # int8's added load time, split into reading in groups and quantizing
    assert any(r.startswith("  read only, in 1 GiB groups as int8 loads read (+") for r in rows), out
    assert any(r.startswith("  read only, in groups, quantizing on the device (+") for r in rows), out
    assert any(r.startswith("checkpoint load, small float32 safetensors -> cpu int8, quantized at load (+") for r in rows)


def test_small_cpu_cold_read_compares_the_libraries_or_says_why_not(capsys, tmp_path):
    """issue 21: `--what cold` reads the checkpoint from a cold page cache with the loader's own
    choice of threads and the comparisons; a library that is not installed gets a row saying so
    (runai-model-streamer and fastsafetensors are benchmark comparisons, not dependencies)."""
    assert bench.main(["--device", "cpu", "--size", "small", "--what", "cold", "--load-folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("cold read", "checkpoint load from a cold"))]
    ours = [r for r in rows if "stream_load.py" in r]
    assert len(ours) == 3 and "as loads read (8 threads)" in ours[0], out
    # the benchmark's cold reads were cold, or it says they could not be (a memory filesystem)
    assert ("the page cache kept the files" in out) == _on_tmpfs(tmp_path), out
    for lib in ("runai-model-streamer", "fastsafetensors (no GDS)"):
        row = next(r for r in rows if lib in r)
        assert "not run (ModuleNotFoundError" in row or "GB/s" in row, row
    assert any(r.startswith("checkpoint load from a cold page cache, small float32") for r in rows), out


def test_device_flag_takes_the_one_device_syntax(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "gpu"])
    assert "device 'gpu' is not a device name" in capsys.readouterr().err


def test_small_cpu_quality_rows_compare_int8_with_the_float_model(capsys):
    """The quality figures of `--what quality` at toy sizes: the rows exist, name int8 against
    the float model, and hold figures of the right kind (the 3B figures come from the GPU)."""
    bench.SIZE = "small"
    try:
        results = {}
        rows = bench.bench_quality(bench.devices.resolve_device("cpu"), bench.torch.float32, results, frames=12)
    finally:
        bench.SIZE = "3B"
    control, rows = rows[:2], rows[2:]
    assert [r.unit for r in rows] == ["%", "%", "%", "nats", "%"]
    assert all("int8 vs float32, small random weights, 12 frames" in r.what for r in rows)
    # the control at float32: the reference is float32 itself (no change), and int8 against it
    assert "float32 vs float32" in control[0].what and "rel. error 0.00 %" in control[0].what
    assert control[0].value == 0.0 and "int8 vs float32" in control[1].what
    rel, overlap, agree, kl, same = (r.value for r in rows)
    assert 0 < rel < 2 and 95 <= overlap <= 100 and 90 <= agree <= 100 and 0 <= kl < 1e-3 and 0 <= same <= 100
    assert results["quality_positions"] == 12 and results["quality_topk"] == 50


def test_fp8_rows_compare_the_rounding_of_both_8_bit_formats(capsys):
    """`--what fp8`: e4m3 with one scale a row against the engine's int8 (quant.quantize_rows)
    on random weights of a 3B shape. fp8 has 3 mantissa bits: on Gaussian weights it rounds
    ~3x coarser than int8's 127 steps; on heavy tails (Student's t, 4 degrees of freedom) int8's
    steps widen with the row's largest weight and the two come out about equal."""
    rows = bench.bench_fp8(bench.devices.resolve_device("cpu"), results := {})
    assert [r.unit for r in rows] == ["%"] * 4
    assert ["int8" in rows[0].what, "fp8" in rows[1].what, "int8" in rows[2].what, "fp8" in rows[3].what] == [True] * 4
    assert all("3072 x 3072" in r.what for r in rows)
    g8, gf, t8, tf = (r.value for r in rows)
    assert 0.5 < g8 < 1.5 and gf > 2.5 * g8
    assert t8 < tf < 1.3 * t8
    assert results["fp8_gaussian_rel_err"] == gf / 100


def test_int8_sweep_covers_every_decode_shape_within_its_register_and_time_bounds():
    """The int8 tile sweep (`--what products --quant int8`) times every product at the rows
    gemv.INT8_TUNED is keyed by, tries only configs whose partial sums fit the registers, and
    stays small enough to time on an H200 in a few minutes."""
    from heartmula.accel import gemv, tuning

    shapes = bench.int8_sweep_shapes()
    keys = {(rows, n, k) for rows, _, n, k in shapes}
    assert len(keys) == len(shapes)  # no shape timed twice
    assert {(rows, n, k) for rows in (2, 8) for n, k in bench.PRODUCTS.values()} <= keys
    # the depth decoder's 2-position step of one guided take: 4 rows, a bucket of its own
    assert {(4, *bench.PRODUCTS[name]) for name in bench.DEPTH_STEP_PRODUCTS} <= keys
    assert set(gemv.INT8_TUNED) <= keys  # every tuned entry is one the sweep measures
    total = 0
    for rows, _, n, k in shapes:
        block_m = gemv.int8_tiles(rows, n, k)[0]
        configs = tuning.int8_sweep_configs(block_m, k)
        assert configs and len(set(configs)) == len(configs), (rows, n, k)
        for block_n, block_k, warps, stages in configs:
            assert block_k <= k and block_n in tuning.BLOCK_N and stages in tuning.STAGES, (block_n, block_k)
            assert 16 <= block_m * block_n * block_k // (32 * warps) <= 128, (rows, block_n, block_k, warps)
        # the bounds keep every corner the brief named: 1 and 16 rows a program, 2 and 8 warps
        assert {c[0] for c in configs} == set(tuning.BLOCK_N) and {c[2] for c in configs} == set(tuning.WARPS)
        total += len(configs)
    # ~10-20 ms a timing (one graph over ~400 MB; the kernels compiled beforehand): ~1 minute
    assert 1000 <= total <= 2500, total


def test_int8_sweep_prints_a_table_gemv_takes_and_is_not_run_on_the_cpu(capsys):
    import ast

    from heartmula.accel import tuning

    text = tuning.format_int8_tuned({(8, 3072, 8192): ((4, 512, 4, 2), "w2, 3.9 TB/s"),
                                     (2, 5120, 3072): ((8, 1024, 4, 3), "backbone q/k/v")})
    name, _, value = text.partition(" = ")
    table = ast.literal_eval(value)  # pastes as it prints (comments and all)
    assert name == "INT8_TUNED" and table == {(2, 5120, 3072): (8, 1024, 4, 3), (8, 3072, 8192): (4, 512, 4, 2)}
    assert text.splitlines()[1].startswith("    (2, 5120, 3072)")  # sorted by rows, then shape
    assert bench.main(["--device", "cpu", "--size", "small", "--what", "products", "--quant", "int8"]) == 0
    out = capsys.readouterr().out
    assert "int8 products sweep" in out and "not run: needs CUDA and Triton" in out
    assert "INT8_TUNED" not in out  # nothing measured, no table


INT8_SWEEP_CHECK = r"""
import json, torch
from heartmula import bench
from heartmula.accel import tuning
from heartmula.mula import quant
# The sweep's own code at toy sizes (Triton's interpreter, eager timing): two shapes, a few
# configs, one of which Triton refuses (BLOCK_N must be a power of two).
bench.int8_sweep_shapes = lambda: [(2, "w2", 24, 512), (8, "codebook head", 37, 256)]
bench._rotating_weights = lambda n, k, dev, dtype: [torch.randn(n, k, dtype=dtype) for _ in range(2)]
bench._rotating_int8_weights = lambda n, k, dev, g: [quant.quantize_rows(torch.randn(n, k, generator=g)) for _ in range(2)]
tuning.int8_sweep_configs = lambda block_m, k: [(1, 256, 2, 1), (4, 128, 4, 2), (3, 256, 2, 1), (16, 256, 8, 1)]
results = {}
rows = bench.bench_products_int8(torch.device("cpu"), torch.float32, results)
# bf16 activations: the 8-row pass is the engine's tensor-core kernel, and the rows say so
bench.int8_sweep_shapes = lambda: [(8, "codebook head", 37, 256)]
bf16 = bench.bench_products_int8(torch.device("cpu"), torch.bfloat16, {})
print(json.dumps(dict(rows=[r.what for r in rows], table=results["int8_tuned_table"],
                      refused=results["products_int8_2rows_w2"]["refused"], bf16=[r.what for r in bf16])))
"""


def test_int8_sweep_runs_end_to_end_under_the_interpreter_and_prints_its_table():
    import ast

    from test_kernels import run_interpreted

    out = run_interpreted(INT8_SWEEP_CHECK)
    rows = out["rows"]
    assert rows[0].startswith("w2 [24x512] int8, 2 rows: cuBLAS float32") and rows[1].startswith("  engine: int8_tiles() (")
    assert rows[2].startswith("  best (BLOCK_N, BLOCK_K, warps, stages) = (") and "3 configs ran" in rows[2]
    assert rows[3].startswith("codebook head [37x256] int8, 8 rows")
    assert len(out["refused"]) == 1 and out["refused"][0].startswith("(3, 256, 2, 1) "), out  # named, left out
    table = ast.literal_eval(out["table"].partition(" = ")[2])
    assert set(table) == {(2, 24, 512), (8, 37, 256)}
    assert all(cfg in [(1, 256, 2, 1), (4, 128, 4, 2), (16, 256, 8, 1)] for cfg in table.values())
    assert rows[4].startswith("  engine: int8_tiles() (")  # float32 activations: the FMA kernel at 8 rows too
    assert out["bf16"][1].startswith("  engine: tensor cores, dot_tiles() (32, 256, 4, 4) ("), out["bf16"]
