"""One device syntax for every command: auto | cpu | mps | cuda[:N] | xpu[:N]."""

from __future__ import annotations

import argparse

import pytest
import torch

from heartmula.accel.device import DEVICE_SYNTAX, parse_device_arg, resolve_device


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("cpu", "cpu"), ("mps", "mps"), ("cuda", "cuda"), ("cuda:1", "cuda:1"),
    ("xpu", "xpu"), ("xpu:0", "xpu:0"), (" CUDA:2 ", "cuda:2"), ("cpu:0", "cpu:0"),
])
def test_accepted_forms(value, expected):
    assert parse_device_arg(value) == expected


@pytest.mark.parametrize("value", ["cuda:x", "gpu", "cuda:-1", "cuda:", "mps:0", "meta", "cuda:1:2", "", "cuda:²"])
def test_refused_forms_name_the_value_and_the_allowed_ones(value):
    with pytest.raises(ValueError) as e:
        parse_device_arg(value)
    assert repr(value) in str(e.value) and DEVICE_SYNTAX in str(e.value)
    # resolve_device, which every command and load_engine go through, refuses the same way.
    with pytest.raises(ValueError, match="is not a device name"):
        resolve_device(value)


def test_as_an_argparse_type_the_message_reaches_the_user(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--device", type=parse_device_arg, default="auto")
    assert p.parse_args(["--device", "xpu:0"]).device == "xpu:0"
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "gpu"])
    err = capsys.readouterr().err
    assert "device 'gpu' is not a device name" in err and "cuda[:N]" in err


def test_resolve_device_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    if not torch.cuda.is_available():
        # Good syntax, missing hardware: a different error, which says what is available instead.
        with pytest.raises(RuntimeError, match="available here: .*cpu"):
            resolve_device("cuda:1")
