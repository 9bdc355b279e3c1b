"""`python -m heartmula doctor`: every missing piece of the chosen version named, and the torch
build checked against the hardware, each problem with the command that fixes it.

Checkpoints are copies of the tiny golden one with pieces deleted. Only the hardware probes
(_nvidia_gpu, _intel_gpu) are replaced, except in the tests of the probes themselves, which run
them against a fake nvidia-smi on PATH and a fake PCI tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys

import pytest
import torch

from heartmula import doctor

from conftest import TINY_CKPT


@pytest.fixture
def ckpt(tmp_path):
    root = tmp_path / "ckpt"
    shutil.copytree(TINY_CKPT, root)
    for dirpath, _, _ in os.walk(root):  # the golden copy is read-only; tests delete pieces
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR)
    return root


@pytest.fixture
def hardware(monkeypatch):
    """The probes, set to agree with the installed torch build unless a test says otherwise."""
    state = {"nvidia": "GPU 0: NVIDIA H100 80GB HBM3" if torch.version.cuda else None,
             "intel": "Intel GPU at PCI 0000:03:00.0" if getattr(torch.version, "xpu", None) else None}
    monkeypatch.setattr(doctor, "_nvidia_gpu", lambda: state["nvidia"])
    monkeypatch.setattr(doctor, "_intel_gpu", lambda: state["intel"])
    return state


def test_a_complete_checkpoint_of_the_chosen_version_has_no_problem(ckpt, hardware):
    report = doctor.run(ckpt, matmul=False, version="tiny")
    assert report.problems == [], report.text()
    assert "Verdict: OK" in report.text()


@pytest.mark.parametrize("delete, named", [
    ("HeartMuLa-oss-tiny", "HeartMuLa-oss-tiny/"),
    ("HeartMuLa-oss-tiny/config.json", "HeartMuLa-oss-tiny/config.json"),
    ("HeartMuLa-oss-tiny/model.safetensors", "HeartMuLa-oss-tiny/model*.safetensors"),
    ("HeartCodec-oss", "HeartCodec-oss/"),
    ("HeartCodec-oss/config.json", "HeartCodec-oss/config.json"),
    ("HeartCodec-oss/model.safetensors", "HeartCodec-oss/model*.safetensors"),
    ("tokenizer.json", "tokenizer.json"),
    ("gen_config.json", "gen_config.json"),
])
def test_each_missing_piece_is_named(ckpt, hardware, delete, named):
    path = ckpt / delete
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    report = doctor.run(ckpt, matmul=False, version="tiny")
    assert len(report.problems) == 1, report.text()
    problem = report.problems[0]
    assert f"missing: {named}" in problem
    assert f"python -m heartmula download --model-path {ckpt}" in problem


def test_every_missing_piece_is_named_at_once(ckpt, hardware):
    for name in ("tokenizer.json", "gen_config.json", "HeartCodec-oss/config.json"):
        (ckpt / name).unlink()
    problem, = doctor.run(ckpt, matmul=False, version="tiny").problems
    assert "missing: HeartCodec-oss/config.json, tokenizer.json, gen_config.json;" in problem


def test_the_default_version_3b_is_named_when_only_another_is_present(ckpt, hardware):
    problem, = doctor.run(ckpt, matmul=False).problems
    assert "missing: HeartMuLa-oss-3B/" in problem and "pass --version tiny" in problem


def test_a_missing_model_folder_is_named(tmp_path, hardware):
    problem, = doctor.run(tmp_path / "nowhere", matmul=False).problems
    assert f"missing: {tmp_path / 'nowhere'}/ (the model folder itself)" in problem


def test_cuda_build_without_an_nvidia_gpu(ckpt, hardware, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    hardware["nvidia"] = None
    problem, = doctor.run(ckpt, matmul=False, version="tiny").problems
    assert "is the CUDA build" in problem and "no NVIDIA GPU" in problem
    assert problem.endswith(f"`{sys.executable} -m pip install --force-reinstall torch "
                            "--index-url https://download.pytorch.org/whl/cpu`")
    hardware["intel"] = "Intel GPU at PCI 0000:03:00.0"  # an Intel GPU instead: the fix is the XPU build
    problem, = doctor.run(ckpt, matmul=False, version="tiny").problems
    assert problem.endswith("--index-url https://download.pytorch.org/whl/xpu`")


def test_cpu_build_with_an_nvidia_gpu(ckpt, hardware, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    hardware["nvidia"] = "GPU 0: NVIDIA H200"
    problem, = doctor.run(ckpt, matmul=False, version="tiny").problems
    assert problem.startswith("GPU 0: NVIDIA H200 is here, but torch") and "not the CUDA build" in problem
    assert problem.endswith(f"`{sys.executable} -m pip install --force-reinstall torch`")


def test_intel_gpu_without_the_xpu_build(ckpt, hardware, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "xpu", None, raising=False)
    hardware["nvidia"], hardware["intel"] = None, "Intel GPU (found by xpu-smi)"
    problem, = doctor.run(ckpt, matmul=False, version="tiny").problems
    assert "not the XPU build" in problem
    assert problem.endswith("--index-url https://download.pytorch.org/whl/xpu`")
    # With an NVIDIA GPU beside it and the CUDA build, CUDA is the right choice (as the launcher makes it).
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    hardware["nvidia"] = "GPU 0: NVIDIA H200"
    assert doctor.run(ckpt, matmul=False, version="tiny").problems == []


def test_the_probes_read_nvidia_smi_and_the_pci_tree(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no real nvidia-smi, xpu-smi or sycl-ls
    monkeypatch.setenv("HEARTMULA_SYSFS_ROOT", str(tmp_path / "sys"))
    assert doctor._nvidia_gpu() is None and doctor._intel_gpu() is None
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-abc)'\n")
    smi.chmod(0o755)
    assert doctor._nvidia_gpu() == "GPU 0: NVIDIA H100 80GB HBM3"
    for slot, vendor, cls in (("0000:00:1f.0", "0x8086", "0x060100"), ("0000:01:00.0", "0x10de", "0x030000")):
        dev = tmp_path / "sys" / "bus" / "pci" / "devices" / slot
        dev.mkdir(parents=True)
        (dev / "vendor").write_text(vendor + "\n")
        (dev / "class").write_text(cls + "\n")
    assert doctor._intel_gpu() is None  # an Intel bridge and an NVIDIA display: no Intel GPU
    (tmp_path / "sys" / "bus" / "pci" / "devices" / "0000:00:1f.0" / "class").write_text("0x038000\n")
    assert doctor._intel_gpu() == "Intel GPU at PCI 0000:00:1f.0"


def test_the_command_takes_the_version_and_fails_on_problems(ckpt, hardware, capsys):
    p = argparse.ArgumentParser()
    doctor.add_parser(p.add_subparsers())
    args = p.parse_args(["doctor", "--model-path", str(ckpt), "--version", "tiny", "--no-matmul"])
    assert args.func(args) == 0 and "Verdict: OK" in capsys.readouterr().out
    (ckpt / "gen_config.json").unlink()
    assert args.func(args) == 1 and "missing: gen_config.json" in capsys.readouterr().out
