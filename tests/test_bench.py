"""`python -m heartmula.bench` at --size small on the CPU: row names say what ran, and the H100/H200
targets are not judged on a device they were not set for."""

from __future__ import annotations

import pytest

from heartmula import bench


def test_small_cpu_load_row_names_what_ran_and_does_not_judge_the_gpu_target(capsys, tmp_path):
    assert bench.main(["--device", "cpu", "--size", "small", "--what", "load", "--load-folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint load" in out, out
    rows = [line for line in out.splitlines() if line.startswith(("checkpoint load", "  read only"))]
    load = rows[0]
    assert load.startswith("checkpoint load, small float32 safetensors -> cpu float32"), out
    assert "3B" not in load and "NO" not in load.split()
    assert load.split()[-2:] == ["—", "—"]  # target and met: the targets are for CUDA at 3B
    assert "not judged here" in out
    assert len(rows) == len(set(r.strip().split("  ")[0] for r in rows)) == 8  # every row name once (int8 too)


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
