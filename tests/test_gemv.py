"""gemv.py's Triton kernel, run on the CPU through Triton's interpreter: the same kernel
source the GPU compiles, checked against torch, and inside the real frame loop against
the golden frames. Each check runs in a subprocess because TRITON_INTERPRET must be set
before the kernel is defined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KERNEL_CHECK = r"""
import json, torch, torch.nn.functional as F
from heartmula import gemv
torch.manual_seed(0)
out = []
for dtype in (torch.float32, torch.bfloat16):
    for m, n, k in ((1, 40, 96), (2, 8197 // 64, 200), (3, 33, 77), (4, 6150, 64), (2, 5, 1030)):
        x = torch.randn(m, k, dtype=dtype)
        w = (torch.randn(n, k, dtype=dtype) / k**0.5)
        ref = F.linear(x.double(), w.double())
        for out_dtype in (None, torch.float32):
            y = gemv.matvec(x[None], w, out_dtype)[0]  # a leading batch dim is kept
            err = ((y.double() - ref).norm() / ref.norm()).item()
            out.append(dict(dtype=str(dtype), shape=[m, n, k], out=str(y.dtype), err=err, finite=bool(y.isfinite().all())))
try:
    gemv.matvec(torch.randn(gemv.MAX_ROWS + 1, 8), torch.randn(4, 8))
    out.append("too many rows accepted")
except ValueError as e:
    out.append(str(e))
print(json.dumps(out))
"""

FRAMES_CHECK = r"""
import json, sys
import numpy as np
from safetensors.numpy import load_file
from heartmula import Engine, GenerateOptions
golden = sys.argv[1]
meta = json.load(open(f"{golden}/heartmula_tiny_golden.json"))
gold = load_file(f"{golden}/heartmula_tiny_golden.safetensors")
engine = Engine(model_path=f"{golden}/ckpt_tiny", version="tiny", device="cpu").load(codec=False)
n = 5
opts = GenerateOptions(max_audio_length_ms=n * 80, cfg_scale=1.5, topk=1, ignore_eos=True, seed=0)
fr = engine.generate_frames(meta["lyrics"], meta["tags"], opts)
print(json.dumps(dict(gemv=engine.mula.gemv, ours=fr.frames[0].tolist(), gold=gold["frames_cfg1.5"][:n].tolist())))
"""


def run_interpreted(code: str, *args: str) -> object:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), HEARTMULA_GEMV="1")
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_matvec_matches_torch_on_odd_shapes_and_dtypes():
    *checks, refusal = run_interpreted(KERNEL_CHECK)
    assert len(checks) == 20
    for c in checks:
        assert c["finite"], c
        # float32 products agree to rounding; bf16 inputs with a bf16 output lose ~3 digits
        bound = 1e-5 if c["dtype"] == "torch.float32" else (1e-2 if c["out"] == "torch.bfloat16" else 1e-5)
        assert c["err"] < bound, c
    assert "at most 4 rows" in refusal


def test_frame_loop_through_the_kernel_makes_the_golden_frames(golden_dir):
    r = run_interpreted(FRAMES_CHECK, str(golden_dir))
    assert r["gemv"] is True  # the heads and projection really went through the kernel
    assert r["ours"] == r["gold"]
