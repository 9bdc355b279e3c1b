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
    assert len(rows) == len(set(r.strip().split("  ")[0] for r in rows)) == 7  # every row name once


def test_device_flag_takes_the_one_device_syntax(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "gpu"])
    assert "device 'gpu' is not a device name" in capsys.readouterr().err
