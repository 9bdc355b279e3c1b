"""gemv.py's and kth.py's Triton kernels, run on the CPU through Triton's interpreter: the
same kernel source the GPU compiles, checked against torch, and inside the real frame loop
against the golden frames. Each check runs in a subprocess because TRITON_INTERPRET must be set
before the kernel is defined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

KERNEL_CHECK = r"""
import json, torch, torch.nn.functional as F
from heartmula.accel import gemv
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

GLU_CHECK = r"""
import json, torch, torch.nn.functional as F
from heartmula.accel import gemv
from heartmula.mula import quant
torch.manual_seed(0)
out = []
for dtype in (torch.float32, torch.bfloat16):
    for m, n, k in ((1, 40, 96), (2, 2 * 8197 // 64, 200), (3, 34, 77), (4, 6150, 64), (2, 18, 1030)):
        x = torch.randn(m, k, dtype=dtype) * 2
        w1, w3 = (torch.randn(2, n // 2, k, dtype=dtype) / k**0.5).unbind(0)
        w13 = gemv.stack_gate_up(w1, w3)
        q, s = quant.quantize_rows(w13.float())
        for int8 in (False, True):
            # the unfused path: the product rounded to x's dtype, then SwiGLU in float32
            y = gemv.matvec(x, q, scale=s) if int8 else gemv.matvec(x, w13)
            a, b = gemv.gate_and_up(y)
            ref = (F.silu(a.float()) * b.float()).to(dtype)
            want = (F.silu(F.linear(x.double(), w1.double())) * F.linear(x.double(), w3.double()))
            ours = gemv.matvec(x, q, scale=s, glu=True) if int8 else gemv.matvec(x, w13, glu=True)
            out.append(dict(dtype=str(dtype), shape=[m, n, k], int8=int8, out=list(ours.shape),
                            err=((ours.double() - ref.double()).norm() / ref.double().norm()).item(),
                            exact_err=((ours.double() - want).norm() / want.norm()).item()))
refusals = []
q, s = quant.quantize_rows(torch.randn(4, 8))
for args, kw in (((torch.randn(2, 8), torch.randn(5, 8)), {}), ((torch.randn(6, 8).bfloat16(), q), dict(scale=s))):
    try:
        gemv.matvec(*args, glu=True, **kw)
        refusals.append("accepted")
    except ValueError as e:
        refusals.append(str(e))
out.append(refusals)
print(json.dumps(out))
"""

KTH_CHECK = r"""
import json, torch
from heartmula.accel import kth
g = torch.Generator().manual_seed(0)
out = []
for r, v in ((1, 5), (2, 8197), (3, 300), (4, 1000)):
    s = torch.randn(r, v, generator=g) * 3
    s[:, : v // 3] = s[:, : v // 3].round()  # many ties
    if r > 1:
        s[1] = -s[1].abs() - 1  # all negative
    s = s.float()
    for k in (1, 2, 7, 50, 256, v - 1, v, v + 5):
        ref = s.sort(dim=-1, descending=True).values[:, min(k, v) - 1 : min(k, v)]
        for arity in (2, 3, kth.ARITY):  # a bisection, and the searches the GPU may run
            ours = kth.kth_largest(s, torch.tensor(k), arity=arity)
            out.append(dict(r=r, v=v, k=k, arity=arity, equal=bool(torch.equal(ours, ref))))
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
engine.mula.use_gemv(blocks=True)  # the blocks' products too, as graphs on CUDA run them
n = 5
opts = GenerateOptions(max_audio_length_ms=n * 80, cfg_scale=1.5, topk=1, ignore_eos=True, seed=0)
fr = engine.generate_frames(meta["lyrics"], meta["tags"], opts)
blocks = all(layer.attn.matvec and layer.mlp.matvec for layer in engine.mula.backbone.layers + engine.mula.decoder.layers)
print(json.dumps(dict(gemv=engine.mula.gemv and blocks, draw=next(iter(engine._ready.values()))[0].draw_kernel, ours=fr.frames[0].tolist(), gold=gold["frames_cfg1.5"][:n].tolist())))
"""


KTH_SAMPLING_CHECK = r"""
import json, sys, torch
from heartmula.accel import draw
from heartmula.mula.sampling import guided_scores
triples = json.loads(sys.argv[1])
V = 8197
out = []
g = torch.Generator().manual_seed(2)
for i, (seed, counter, entry) in enumerate(triples):
    guided = i % 2 == 1
    rows = 4 if guided else 2
    logits = torch.randn(rows, V, generator=g) * 3
    logits[:, : 40] = logits[:, : 40].round()  # ties
    for bump in (-100.0, 100.0):
        logits[:, entry] = bump  # the extreme-hash entry: the worst score, then the best
        seeds = torch.tensor([seed, (seed + 1) % 2**63])
        for k in (1, 2, 50, 250):
            for temp in (0.05, 1.0):
                cfg, t = torch.tensor(1.5), torch.tensor(temp)
                scores = guided_scores(logits, cfg, t, guided)
                # the kernel's counter is pos * n_codebooks + codebook: here exactly `counter`
                codes = draw.draw_codes(logits, cfg, t, torch.tensor(k), seeds, torch.tensor([counter]), 1, 0, guided)
                picked = scores.gather(1, codes[:2, None])
                ok = bool((picked >= scores.topk(k).values[:, -1:]).all())
                if k == 1:
                    ok = ok and bool((picked == scores.max(1, keepdim=True).values).all())
                out.append(dict(seed=seed, counter=counter, entry=entry, k=k, temp=temp, ok=ok))
print(json.dumps(out))
"""

DRAW_CHECK = r"""
import json, torch
from heartmula.accel import draw
from heartmula.mula.sampling import pick_codes, vocab_keys
g = torch.Generator().manual_seed(3)
out = []
knobs = ((1.0, 1.5), (0.05, 3.0), (4.0, 1.0))  # (temperature, cfg_scale)
places = ((0, 0), (811, 7), (2**40 + 3, 2**63 - 2))  # (position, seed)
for V in (8197, 5, 1):
    keys = vocab_keys(V)
    for guided, takes in ((True, 1), (True, 3), (False, 1), (False, 2)):
        rows = takes * (2 if guided else 1)
        for c, case in enumerate(("plain", "ties", "negative", "infinite", "nan", "huge")):
            logits = torch.randn(rows, V, generator=g) * 3
            if case == "ties":
                logits = logits.round()
            elif case == "negative":
                logits = -logits.abs() - 50
            elif case == "infinite":  # masked entries, as a logits processor would leave them
                logits[:, ::3] = float("-inf")
            elif case == "nan":  # a broken row: NaN entries rank below every number, never drawn
                logits[:, 1::4] = float("nan")
            elif case == "huge":
                logits = logits * 1e30
            for i, k in enumerate((1, 2, 40, 300, V, V + 7)):
                (temp, cfg), (pos, seed) = knobs[(i + c) % 3], places[(i + 2 * c) % 3]
                seeds = (torch.arange(takes) + seed) % 2**63
                posT, t, s = torch.tensor([pos]), torch.tensor(temp), torch.tensor(cfg)
                # the torch path takes k <= V (StepBuffers clamps it); the kernel clamps itself
                ref = pick_codes(logits, s, t, torch.tensor(min(k, V)), seeds, posT * 8 + 5, keys, guided)
                ours = draw.draw_codes(logits, s, t, torch.tensor(k), seeds, posT, 8, 5, guided)
                out.append(dict(V=V, guided=guided, takes=takes, case=case, k=k, temp=temp, pos=pos,
                                same=bool(torch.equal(ref, ours)), ref=ref.tolist(), ours=ours.tolist()))
print(json.dumps(out))
"""

ATTENTION_CHECK = r"""
import json, torch
from heartmula.accel import attention
g = torch.Generator().manual_seed(5)
out = []
# (rows B, positions S, heads H, kv heads Hkv, head dim D, attention length, positions, programs)
cases = [
    (2, 1, 24, 8, 128, 1024, [811], 264),     # the 3B backbone's step, 1 take guided, split as on an H200
    (2, 1, 24, 8, 128, 1024, [0], None),      # the first frame: only key 0
    (2, 1, 24, 8, 128, 1024, [1023], None),   # the bucket's last position
    (8, 1, 6, 2, 128, 256, [200], 64),        # 4 takes guided, several programs a pair
    (2, 2, 8, 4, 384, 16, [0, 1], None),      # the depth decoder's first step: 2 positions, D not a power of 2
    (2, 1, 8, 4, 384, 16, [9], None),
    (1, 2, 4, 4, 64, 300, [130, 131], 100),   # 2 positions split over many programs, G = 1
    (3, 1, 4, 1, 32, 700, [699], 7),          # G = 4
    (2, 1, 6, 2, 48, 200, [5], 400),          # more programs than blocks: empty parts
]
for i, (B, S, H, Hkv, D, L, pos, programs) in enumerate(cases):
    for dtype in (torch.bfloat16, torch.float16):
        store = torch.randn(B + 1, Hkv, L + 5, D, generator=g)
        # never read: positions past the last query's, and the store's other row
        store[:, :, max(pos) + 1:] = float("nan")
        store[B:] = float("nan")
        k_cache = store[:B].to(dtype)
        v_cache = (store[:B] * 2 + 1).to(dtype)
        q = (torch.randn(B, S, H, D, generator=g) * 3).to(dtype)
        input_pos = torch.tensor(pos)
        ys = [attention.decode_attention(q, k_cache, v_cache, input_pos, L, programs) for _ in range(2)]
        # float64 reference
        qd, kd, vd = q.double(), k_cache.double(), v_cache.double()
        ref = torch.empty(B, S, H, D, dtype=torch.float64)
        for s in range(S):
            keys = kd[:, :, : pos[s] + 1].repeat_interleave(H // Hkv, dim=1)  # [B, H, n, D]
            vals = vd[:, :, : pos[s] + 1].repeat_interleave(H // Hkv, dim=1)
            w = torch.softmax(torch.einsum("bhd,bhnd->bhn", qd[:, s], keys) / D**0.5, dim=-1)
            ref[:, s] = torch.einsum("bhn,bhnd->bhd", w, vals)
        ref = ref.reshape(B, S, H * D)
        err = max(float(((y.double() - ref).abs().max() / ref.abs().max())) for y in ys)
        out.append(dict(case=i, dtype=str(dtype), err=err, finite=all(bool(y.isfinite().all()) for y in ys),
                        repeat=bool(torch.equal(ys[0], ys[1])), shape=list(ys[0].shape),
                        counts_zero=all(int(c.abs().sum()) == 0 for c in attention._COUNTS.values())))
try:
    attention.decode_attention(torch.zeros(1, 3, 2, 8, dtype=torch.bfloat16), torch.zeros(1, 1, 8, 8, dtype=torch.bfloat16),
                               torch.zeros(1, 1, 8, 8, dtype=torch.bfloat16), torch.tensor([0, 1, 2]), 8)
    out.append("no error")
except ValueError as e:
    out.append(str(e))
print(json.dumps(out))
"""

MODEL_ATTENTION_CHECK = r"""
import json, sys, torch
from heartmula import Engine
from heartmula.accel import attention
from heartmula.mula import model

calls = []
through_kernel = attention._launch  # decode_step's and decode_attention's launch
attention._launch = lambda *a, **k: calls.append(1) or through_kernel(*a, **k)
golden = sys.argv[1]
mula = Engine(model_path=f"{golden}/ckpt_tiny", version="tiny", device="cpu", dtype="bfloat16").load(codec=False).mula
mula.use_gemv(blocks=True)
calls.clear()  # the Triton probe's call at load
out = []
for name, llama, prompt, steps, attn_len in (("backbone", mula.backbone, 9, 6, 64), ("decoder", mula.decoder, 0, 6, 16)):
    runs = {}
    for kernel in (True, False):
        for layer in llama.layers:
            layer.attn.decode_kernel = kernel
        g = torch.Generator().manual_seed(1)
        llama.setup_cache(2, attn_len, torch.bfloat16, "cpu")
        dim = llama.args.dim
        if prompt:
            llama(torch.randn(2, prompt, dim, generator=g).bfloat16(), torch.arange(prompt), attn_len)
        # the decoder's first step has two positions, then one a step, as generation runs them
        ys, pos = [], prompt
        for s in ([2] if not prompt else []) + [1] * steps:
            ys.append(llama(torch.randn(2, s, dim, generator=g).bfloat16(), torch.arange(pos, pos + s), attn_len).float())
            pos += s
        runs[kernel] = torch.cat([y.flatten() for y in ys])
    ours, ref = runs[True], runs[False]
    # the kernel ran once a layer and decode step (not for the prompt), the torch path never
    out.append(dict(name=name, err=float((ours - ref).abs().max() / ref.abs().max()), kernel_calls=len(calls),
                    expected=len(llama.layers) * (len(ys))))
    calls.clear()
print(json.dumps(out))
"""

STEP_CHECK = r"""
import json, torch
from heartmula.accel import attention
from heartmula.mula.model import FLAVORS, apply_rope, rope_table
g = torch.Generator().manual_seed(6)
out = []
# (rows B, positions S, heads H, kv heads Hkv, head dim D, attention length, positions, programs)
cases = [
    (2, 1, 24, 8, 128, 1024, [811], 128),    # the 3B backbone's step, 1 take guided, split as on an H200
    (2, 1, 24, 8, 128, 1024, [0], 128),      # the first frame: only its own key, from registers
    (2, 2, 8, 4, 384, 64, [0, 1], 16),       # two positions: the second query sees the first's new key
    (2, 2, 4, 2, 16, 40, [37, 38], 8),       # the new keys in different programs' parts
    (3, 1, 4, 1, 32, 700, [699], 7),         # G = 4, the bucket's last position
]
args = FLAVORS["llama-3B"]
for i, (B, S, H, Hkv, D, L, pos, programs) in enumerate(cases):
    store = torch.randn(B, Hkv, L, D, generator=g).bfloat16()
    store[:, :, max(pos) + 1:] = float("nan")  # never read, never written
    store[:, :, pos] = float("nan")  # what the step replaces: never read
    k_cache, v_cache = store.clone(), (store * 2 + 1)
    qkv = torch.randn(B, S, (H + 2 * Hkv) * D, generator=g).bfloat16()
    table = rope_table(type(args)(1, H, Hkv, H * D, 4 * H * D, L), L)
    rope = table[torch.tensor(pos)]
    # the torch path: RoPE, the cache writes, then attention in float64
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], -1)
    q = apply_rope(q.view(B, S, H, D), rope)
    k = apply_rope(k.view(B, S, Hkv, D), rope).transpose(1, 2)
    v = v.view(B, S, Hkv, D).transpose(1, 2)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    ref_k.index_copy_(2, torch.tensor(pos), k)
    ref_v.index_copy_(2, torch.tensor(pos), v)
    y = attention.decode_step(qkv, rope, torch.tensor(pos), k_cache, v_cache, L, H, programs)
    ref = torch.empty(B, S, H, D, dtype=torch.float64)
    for s in range(S):
        keys = ref_k.double()[:, :, : pos[s] + 1].repeat_interleave(H // Hkv, dim=1)
        vals = ref_v.double()[:, :, : pos[s] + 1].repeat_interleave(H // Hkv, dim=1)
        w = torch.softmax(torch.einsum("bhd,bhnd->bhn", q.double()[:, s], keys) / D**0.5, dim=-1)
        ref[:, s] = torch.einsum("bhn,bhnd->bhd", w, vals)
    ref = ref.reshape(B, S, H * D)
    filled = slice(0, max(pos) + 1)
    out.append(dict(case=i, err=float((y.double() - ref).abs().max() / ref.abs().max()),
                    finite=bool(y.isfinite().all()),
                    k_written=float((k_cache[:, :, filled].float() - ref_k[:, :, filled].float()).abs().max()),
                    v_written=bool(torch.equal(v_cache[:, :, filled], ref_v[:, :, filled])),
                    rest_untouched=bool(k_cache[:, :, max(pos) + 1:].isnan().all() and v_cache[:, :, max(pos) + 1:].isnan().all()),
                    counts_zero=all(int(c.abs().sum()) == 0 for c in attention._COUNTS.values())))
print(json.dumps(out))
"""

def run_interpreted(code: str, *args: str) -> object:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), HEARTMULA_TRITON="1")
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


def test_swiglu_in_the_products_epilogue_matches_the_unfused_path():
    # w13 @ x then silu(gate) * value in float32, against the kernel doing the second step in
    # its epilogue: bf16 and float32, plain and int8 weights, odd and one-row shapes
    *checks, refusals = run_interpreted(GLU_CHECK)
    assert len(checks) == 20
    for c in checks:
        assert c["out"] == [c["shape"][0], c["shape"][1] // 2], c
        # the same roundings in another order: float32 to rounding, bf16 to its last bit or so
        assert c["err"] < (1e-5 if c["dtype"] == "torch.float32" else 1e-2), c
        # and the product itself (int8 weights: ~1 % rounding of the weights)
        assert c["exact_err"] < (1e-5 if c["dtype"] == "torch.float32" and not c["int8"] else 3e-2), c
    # an odd weight, and rows that go to the tensor cores, are refused with the reason
    assert "an even number of weight rows; got 5" in refusals[0] and "do not take one" in refusals[1]


def test_frame_loop_through_the_kernel_makes_the_golden_frames(golden_dir):
    r = run_interpreted(FRAMES_CHECK, str(golden_dir))
    assert r["gemv"] is True and r["draw"] is True  # heads, projection, block products and sampling went through the kernels
    assert r["ours"] == r["gold"]


def test_decode_attention_matches_float64_softmax_over_the_causal_keys():
    """attention.py's decode kernel against softmax attention in float64: the 3B backbone's
    and depth decoder's shapes, the first and the last position of a bucket, two query
    positions, one to four query heads a kv head, empty parts, and cache entries past the
    last query's position set to NaN (never read). Two calls give the same bits (the parts
    merge in a fixed order) and leave the completion counts at zero."""
    *checks, refusal = run_interpreted(ATTENTION_CHECK)
    assert len(checks) == 18
    for c in checks:
        assert c["finite"] and c["repeat"] and c["counts_zero"], c
        assert c["err"] < 2e-2, c  # probabilities rounded to 16 bits before the weighted sum
    assert "S<=2" in refusal


def test_model_decode_steps_through_the_attention_kernel_match_the_torch_path(golden_dir):
    """The tiny golden model in bfloat16: a prompt, then decode steps of the backbone and the
    depth decoder (its first step has two positions; the short path that keeps its 16
    positions off the kernel is lowered here) with attention through attention.py,
    against the same steps through the torch path (which rounds scores to bfloat16)."""
    checks = run_interpreted(MODEL_ATTENTION_CHECK, str(golden_dir))
    assert [c["name"] for c in checks] == ["backbone", "decoder"]
    for c in checks:
        assert c["kernel_calls"] == c["expected"] and c["err"] < 3e-2, c


def test_decode_step_applies_rope_writes_the_caches_and_attends():
    """attention.decode_step against the model's torch path (apply_rope, the caches'
    index_copy_, then attention in float64): the output, the keys and values it writes (keys
    within a bfloat16 rounding of apply_rope's complex product, values exactly), nothing
    written past the step's positions, a step of two positions whose second query sees the
    first's new key, and new keys in another program's part of the cache."""
    checks = run_interpreted(STEP_CHECK)
    assert len(checks) == 5
    for c in checks:
        assert c["finite"] and c["v_written"] and c["rest_untouched"] and c["counts_zero"], c
        assert c["err"] < 2e-2 and c["k_written"] <= 2 ** -6, c


def test_kth_largest_is_the_sorted_kth():
    checks = run_interpreted(KTH_CHECK)
    assert len(checks) == 96
    assert all(c.get("equal", c.get("same_codes")) for c in checks), [c for c in checks if not c.get("equal", c.get("same_codes"))]


def test_the_draw_kernel_draws_what_the_torch_path_draws():
    """draw.py's one kernel a codebook (guidance, temperature, top-k, counter-based noise,
    argmax, both rows of a take) against sampling.pick_codes: the same codes for every take,
    vocabulary size, kind of logits, k (1, the vocabulary, beyond it), temperature, position
    and seed up to the int64 limits."""
    checks = run_interpreted(DRAW_CHECK)
    assert len(checks) == 3 * 4 * 6 * 6
    assert all(c["same"] for c in checks), [c for c in checks if not c["same"]][:3]


def test_kernel_threshold_draws_inside_the_topk_at_extreme_hashes():
    """The Triton path (draw.py's kernel) at the exact (seed, counter, entry)
    triples whose hash is extreme, as test_sampling.py checks the torch path."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sampling import extreme_triples, natural_old_failures

    triples = extreme_triples()[::3] + natural_old_failures(0, range(0, 4096))
    checks = run_interpreted(KTH_SAMPLING_CHECK, json.dumps(triples))
    assert len(checks) == len(triples) * 16
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]][:5]


def test_a_machine_where_triton_fails_falls_back_to_torch(monkeypatch, caplog):
    from heartmula.accel import device, gemv

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets the CPU count as a Triton device
    monkeypatch.setattr(gemv, "matvec", broken)
    monkeypatch.setattr(device, "_TRITON_OK", {})
    assert device.triton_kernels_available(torch.device("cpu")) is False
    assert "Triton kernels are off on cpu (RuntimeError: Failed to find C compiler)" in caplog.text
    monkeypatch.setenv("HEARTMULA_TRITON", "0")  # and the switch skips the probe altogether
    monkeypatch.setattr(device, "_TRITON_OK", {})
    assert device.triton_kernels_available(torch.device("cpu")) is False and device._TRITON_OK == {}
