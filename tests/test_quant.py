"""Int8 weight-only quantization (`quant="int8"`, heartmula/mula/quant.py): the rounding
itself over many seeds and extreme rows, the torch products and gemv.py's int8 kernel
(Triton's interpreter) against float64 references, the loader on the real tiny checkpoint,
and generation against the unquantized model within stated tolerances."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from heartmula import Engine, GenerateOptions, load_engine
from heartmula.checkpoint import CheckpointError
from heartmula.mula import fidelity, quant
from heartmula.mula.load import load_heartmula

from test_kernels import run_interpreted

# Bounds, and why. Rounding to the nearest of 255 levels errs by at most half a step,
# step = max|row| / 127. For a Gaussian row of K values max|row| ~ 3-4 sigma, so the error's
# RMS is ~ 3.5 sigma / 127 / sqrt(12) ~ 0.8 % of sigma: a product's relative error is ~1 %.
PRODUCT_REL_ERR = 0.02  # Gaussian weights, int8 vs the float weights
KERNEL_VS_TORCH_F32 = 1e-5  # the same int8 arithmetic in two orders of summation
KERNEL_VS_TORCH_BF16 = 1e-2  # a bf16 output rounds to ~3 digits


def _rows(kind: str, n: int, k: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """[n, k] rows of one extreme kind."""
    w = torch.randn(n, k, generator=g, dtype=torch.float64)
    if kind == "zero":
        w.zero_()
    elif kind == "equal":
        w = torch.full((n, k), -2.5, dtype=torch.float64)
    elif kind == "outlier":  # one huge entry, the rest tiny: they all round to 0
        w[:, 0] = 1e4
    elif kind == "huge":
        w *= torch.finfo(dtype).max / 8
    elif kind == "tiny":
        w *= torch.finfo(dtype).tiny * 4  # float32 and bf16 rows: subnormal scales
    elif kind == "mixed":  # each row its own magnitude, a few rows zero
        fi = torch.finfo(dtype)
        w *= torch.logspace(math.log10(fi.tiny) + 2, math.log10(fi.max) - 2, n, dtype=torch.float64)[:, None]
        w[::3] = 0.0
    return w.to(dtype)


KINDS = ("gauss", "zero", "equal", "outlier", "huge", "tiny", "mixed")


@pytest.mark.parametrize("seed", range(12))
def test_quantize_rows_stays_within_half_a_step_on_extreme_rows(seed):
    g = torch.Generator().manual_seed(seed)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for kind in KINDS:
            n = int(torch.randint(0, 40, (1,), generator=g))
            k = [1, 3, 64, 77, 513, 1030][int(torch.randint(0, 6, (1,), generator=g))]
            w = _rows(kind, n, k, dtype, g)
            q, s = quant.quantize_rows(w)
            assert q.dtype == torch.int8 and q.shape == w.shape, (dtype, kind)
            assert s.dtype == torch.float32 and s.shape == (n,), (dtype, kind)
            assert bool((q.abs() <= quant.QMAX).all()) and bool((s >= 0).all()) and bool(s.isfinite().all())
            wd, back = w.double(), quant.dequantize_rows(q, s, torch.float64)
            # half a step, plus float32's rounding of w / scale (up to 127 * 2^-24 of a step)
            assert bool(((wd - back).abs() <= s.double()[:, None] * (0.5 + 1e-5)).all()), (dtype, kind, n, k)
            zero = (wd == 0).all(dim=1)
            assert bool((s[zero] == 0).all()) and bool((q[zero] == 0).all())
            nonzero = ~zero & (s > 0)
            if nonzero.any():  # every nonzero row uses the full range
                assert bool((q[nonzero].abs().amax(dim=1) == quant.QMAX).all()), (dtype, kind)
            if kind == "equal" and n:
                assert bool((q == -quant.QMAX).all())
                assert torch.allclose(back, wd, rtol=1e-6, atol=0)


def test_quantize_rows_of_stacked_weights_is_per_slice_and_refuses_non_floats():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(7, 37, 32, generator=g)  # [K-1, vocab, ddim], as the audio heads are stored
    q, s = quant.quantize_rows(w)
    assert q.shape == w.shape and s.shape == (7, 37)
    for i in range(7):
        qi, si = quant.quantize_rows(w[i])
        assert torch.equal(q[i], qi) and torch.equal(s[i], si)
    with pytest.raises(ValueError, match="floating-point"):
        quant.quantize_rows(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[\.\.\., N, K\]"):
        quant.quantize_rows(torch.ones(5))


def _quantize_rows_before(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows as it was defined before it was made cheap at load (commit 83c2421): the
    reference the current one must equal bit for bit."""
    flat = w.reshape(-1, w.shape[-1])
    q = torch.empty(flat.shape, dtype=torch.int8, device=w.device)
    scale = torch.empty(flat.shape[0], dtype=torch.float32, device=w.device)
    for r0 in range(0, flat.shape[0], 4096):
        rows = flat[r0:r0 + 4096].float()
        s = rows.abs().amax(dim=-1) / quant.QMAX if rows.shape[-1] else rows.new_zeros(rows.shape[0])
        safe = torch.where(s > 0, s, torch.ones_like(s))[:, None]
        q[r0:r0 + rows.shape[0]] = (rows / safe).round_().clamp_(-quant.QMAX, quant.QMAX).to(torch.int8)
        scale[r0:r0 + rows.shape[0]] = s
    return q.reshape(w.shape), scale.reshape(w.shape[:-1])


def _assert_same_as_before(w: torch.Tensor, what) -> None:
    q, s = quant.quantize_rows(w)
    q0, s0 = _quantize_rows_before(w)
    assert q.shape == q0.shape and s.shape == s0.shape, what
    # bit for bit: the same float32 scales (a -0 row's scale is +0, as before) and the same codes
    assert torch.equal(s.view(torch.int32), s0.view(torch.int32)), what
    assert torch.equal(q, q0), what


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pass_elements", [1 << 24, 37])  # one pass per slice; many, cutting rows mid-slice
def test_quantize_rows_equals_its_previous_definition_bit_for_bit(seed, pass_elements, monkeypatch):
    monkeypatch.setattr(quant, "_PASS_ELEMENTS", pass_elements)
    g = torch.Generator().manual_seed(300 + seed)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for kind in KINDS + ("negzero", "one huge"):
            n, k = int(torch.randint(1, 40, (1,), generator=g)), [1, 3, 64, 77, 513][seed % 5]
            w = _rows("gauss" if kind in ("negzero", "one huge") else kind, n, k, dtype, g)
            if kind == "negzero":
                w[::2] = -0.0
            elif kind == "one huge":  # one entry near the dtype's max, the rest of its row ordinary
                w[:, k // 2] = torch.finfo(dtype).max / 2
            _assert_same_as_before(w, (dtype, kind, n, k))
            _assert_same_as_before(w[:, ::2], (dtype, kind, "strided"))
        # the audio heads: [K-1, ddim, vocab] read as [K-1, vocab, ddim] rows (a transposed view)
        heads = _rows("mixed", 3 * 19, 40, dtype, g).reshape(3, 19, 40)
        _assert_same_as_before(heads.transpose(1, 2), (dtype, "audio_head"))
    w64 = torch.randn(9, 33, generator=g, dtype=torch.float64) * 1e-3
    _assert_same_as_before(w64, "float64")
    _assert_same_as_before(torch.zeros(0, 5), "no rows")
    q, s = quant.quantize_rows(torch.zeros(4, 0))  # the previous definition could not reshape this one
    assert q.shape == (4, 0) and torch.equal(s, torch.zeros(4))


def test_quantize_rows_gives_rows_int8_cannot_hold_a_non_finite_scale():
    w = torch.randn(5, 64)
    w[1, 3], w[2, 0], w[3, 63] = float("inf"), float("-inf"), float("nan")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q, s = quant.quantize_rows(w.to(dtype))
        assert s[1] == float("inf") and s[2] == float("inf") and s[3].isnan(), (dtype, s)
        q0, s0 = _quantize_rows_before(w.to(dtype)[[0, 4]])  # the finite rows are untouched by the others
        assert torch.equal(q[[0, 4]], q0) and torch.equal(s[[0, 4]], s0)


def test_building_the_quantized_structure_on_meta_computes_nothing():
    """The loader builds the 3B quantized model on the meta device before adopting the int8
    tensors; tracing quantize_rows' arithmetic there cost ~0.4 s of each int8 load."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from heartmula.mula.model import FLAVORS, HeartMuLa, HeartMuLaArgs

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.device("meta"):
        model = HeartMuLa(HeartMuLaArgs(backbone=FLAVORS["llama-3B"], decoder=FLAVORS["llama-300M"]))
    model.fuse_projections()
    with Ops() as ops:
        quant.quantize_model(model)
    assert not ops.seen & {"div", "round", "clamp", "amax", "amin", "abs", "where", "copy_"}, ops.seen
    layer = model.backbone.layers[0].mlp.w13
    assert layer.weight_q.shape == (16384, 3072) and layer.weight_q.dtype == torch.int8
    assert layer.scale.shape == (16384,) and layer.scale.dtype == torch.float32 and layer.scale.is_meta
    assert len(model.audio_heads) == 7 and model.audio_heads[0].weight_q.shape == (8197, 3072)


def test_loading_int8_reads_no_value_back_to_the_host_per_tensor(tiny_ckpt, monkeypatch):
    """Quantizing at load is queued on the device like the read itself: no tensor's value is
    read back to the host (each such read stalls until the device has caught up, so reading
    the next group could not overlap quantizing this one). The inf/NaN check reads one
    stacked flag per load, after the last group (on the CPU not even that dispatches)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == "_local_scalar_dense":  # .item(), bool(t), int(t)
                Reads.count += 1
            return func(*args, **(kwargs or {}))

    from heartmula import checkpoint

    # streamed, as off the CPU (safetensors' CPU reader reads bytes through the dispatcher itself)
    monkeypatch.setattr("heartmula.mula.load.load_state_dict",
                        lambda *a, **k: checkpoint.load_state_dict(*a, streamed=True, **k))
    with Reads():
        model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", quant="int8")
    assert model.quant == "int8" and Reads.count == 0


@pytest.mark.requires_cuda
def test_quantize_rows_on_cuda_equals_its_previous_definition_at_the_3b_shapes():
    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for n, k in ((5120, 3072), (16384, 3072), (3072, 8192)):
            w = torch.randn(n, k, device="cuda", generator=g).mul_(0.02).to(dtype)
            w[0], w[1, 7] = 0.0, 30.0  # a zero row, a row with one huge value
            _assert_same_as_before(w, (dtype, n, k))
        heads = torch.randn(7, 3072, 8197, device="cuda", generator=g).mul_(0.02).to(dtype)
        _assert_same_as_before(heads.transpose(1, 2), (dtype, "audio_head"))


@pytest.mark.parametrize("seed", range(8))
def test_int8_products_match_the_dequantized_weights_and_stay_near_the_float_ones(seed):
    g = torch.Generator().manual_seed(100 + seed)
    for m, n, k in ((1, 1, 1), (2, 37, 77), (3, 8197 // 64, 200), (5, 64, 1030), (1, 0, 8)):
        w = torch.randn(n, k, generator=g) / k**0.5
        w[: n // 4] *= 50.0  # rows of very different magnitude
        x = torch.randn(m, k, generator=g)
        q, s = quant.quantize_rows(w)
        exact = x.double() @ quant.dequantize_rows(q, s, torch.float64).T
        for dtype, bound in ((torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 1e-2)):
            y = quant.int8_linear(x.to(dtype), q, s)
            assert y.dtype == dtype and y.shape == (m, n)
            if n:
                err = ((y.double() - exact).norm() / exact.norm()).item()
                assert err < bound, (dtype, m, n, k, err)
        y32 = quant.int8_linear(x.bfloat16(), q, s, torch.float32)
        assert y32.dtype == torch.float32
        if n and k >= 64:  # quantization error against the float weights (short rows are exact-ish anyway)
            ref = x.double() @ w.double().T
            assert ((exact - ref).norm() / ref.norm()).item() < PRODUCT_REL_ERR


INT8_KERNEL_CHECK = r"""
import json, torch
from heartmula.accel import gemv
from heartmula.mula import fidelity, quant
torch.manual_seed(0)
out = []
for dtype in (torch.float32, torch.bfloat16):
    for m, n, k in ((1, 1, 1), (1, 40, 96), (2, 8197 // 64, 200), (3, 33, 77), (4, 6150, 64), (2, 5, 1030), (2, 41, 3000),
                    (8, 33, 77), (13, 40, 96)):  # one 8-row pass; two passes
        x = torch.randn(m, k).to(dtype)
        w = torch.randn(n, k) / k**0.5
        w[0] = 0.0  # a zero row
        if n > 2:
            w[1] *= 1e30  # a huge row
            w[2] = 0.125  # an all-equal row
        q, s = quant.quantize_rows(w)
        ref = quant.int8_linear(x.double(), q, s)
        for out_dtype in (None, torch.float32):
            y = gemv.matvec(x[None], q, out_dtype, scale=s)[0]
            assert y.shape == (m, n)
            y_ok = torch.cat([y[:, :1], y[:, 3:]], 1) if n > 3 else y  # the 1e30 row overflows bf16 outputs
            r_ok = torch.cat([ref[:, :1], ref[:, 3:]], 1) if n > 3 else ref
            err = ((y_ok.double() - r_ok).norm() / r_ok.norm().clamp_min(1e-300)).item()
            rows = dict(zero=bool((y[:, 0] == 0).all()))
            if n > 2:
                rows["huge"] = ((y[:, 1].double() - ref[:, 1]).abs() / ref[:, 1].abs()).max().item() if y.dtype == torch.float32 else 0.0
                rows["equal"] = ((y[:, 2].double() - ref[:, 2]).abs() / ref[:, 2].abs().clamp_min(1e-30)).max().item()
            out.append(dict(dtype=str(dtype), shape=[m, n, k], out=str(y.dtype), err=err, finite=bool(y_ok.isfinite().all()), **rows))
        # the compiled-code entry point: x's dtype out
        assert gemv.linear_int8(x, q, s).dtype == dtype
refusals = []
for args in ((torch.randn(2, 8), torch.ones(4, 8, dtype=torch.int8)),
             (torch.randn(gemv.INT8_DECODE_ROWS + 1, 8), torch.ones(4, 8, dtype=torch.int8), None, None, torch.ones(4)),
             (torch.randn(2, 8), torch.randn(4, 8), None, None, torch.ones(4)),
             (torch.randn(2, 8), torch.ones(4, 8, dtype=torch.int8), None, None, torch.ones(3))):
    try:
        gemv.matvec(*args)
        refusals.append("accepted")
    except ValueError as e:
        refusals.append(str(e))
out.append(refusals)
print(json.dumps(out))
"""


def test_int8_kernel_matches_torch_on_odd_shapes_and_extreme_rows():
    *checks, refusals = run_interpreted(INT8_KERNEL_CHECK)
    assert len(checks) == 36
    for c in checks:
        assert c["finite"] and c["zero"], c
        bound = KERNEL_VS_TORCH_BF16 if c["out"] == "torch.bfloat16" else KERNEL_VS_TORCH_F32
        assert c["err"] < bound, c
        if "huge" in c:
            assert c["huge"] < 1e-5 and c["equal"] < bound, c
    assert "needs its per-row scales" in refusals[0]
    assert "at most 4 rows (32 of an int8 one)" in refusals[1]
    assert "needs its per-row scales" in refusals[2]
    assert "one per weight row" in refusals[3]


INT8_TILES_CHECK = r"""
import json, torch
from heartmula.accel import gemv
from heartmula.mula import quant
launches = []
kernel = gemv._matvec_kernel


class Recorded:
    # gemv.matvec's launches, passed on to the real kernel: which tiles each pass ran with
    def __getitem__(self, grid):
        def launch(*args, **kw):
            launches.append(dict(grid=list(grid), BLOCK_M=kw["BLOCK_M"], config=[kw["BLOCK_N"], kw["BLOCK_K"],
                                 kw["num_warps"], kw["STAGES"]]))
            return kernel[grid](*args, **kw)
        return launch


gemv._matvec_kernel = Recorded()
torch.manual_seed(0)
n, k = 24, 512
gemv.INT8_TUNED[(8, n, k)] = (16, 256, 2, 2)  # a tuned entry for the 8-row bucket of this shape
q, s = quant.quantize_rows(torch.randn(n, k))
out = []
for m, config in ((13, None), (2, None), (13, (1, 512, 4, 1)), (3, (2, 128, 8, 5))):
    x = torch.randn(m, k)
    launches.clear()
    y = gemv.matvec(x, q, torch.float32, config=config, scale=s)
    ref = quant.int8_linear(x.double(), q, s)
    out.append(dict(m=m, config=config, launches=list(launches),
                    err=((y.double() - ref).norm() / ref.norm()).item()))
out.append(dict(rule=list(gemv._int8_rule(2, n, k)[1:])))
print(json.dumps(out))
"""


def test_int8_passes_take_the_tuned_tiles_of_their_rows_bucket_or_the_given_config():
    """gemv.INT8_TUNED serves each pass by its rows bucket (BLOCK_M) and shape; shapes it lacks
    take `_int8_rule`; `config=` (the sweep's) overrides both. Launches are recorded on their
    way to the real kernel (Triton's interpreter), and every result is checked."""
    *runs, rule = run_interpreted(INT8_TILES_CHECK)
    for r in runs:
        assert r["err"] < KERNEL_VS_TORCH_F32, r
    tuned, untuned, forced, forced_small = runs
    # 13 rows: an 8-row pass and a 5-row one, both in the 8 bucket, both at the tuned tiles
    assert [(la["BLOCK_M"], la["config"], la["grid"]) for la in tuned["launches"]] == [(8, [16, 256, 2, 2], [2])] * 2
    # 2 rows: no entry for (2, 24, 512), so the rule
    assert [(la["BLOCK_M"], la["config"]) for la in untuned["launches"]] == [(2, rule["rule"])]
    assert [(la["BLOCK_M"], la["config"], la["grid"]) for la in forced["launches"]] == [(8, [1, 512, 4, 1], [24])] * 2
    assert [(la["BLOCK_M"], la["config"]) for la in forced_small["launches"]] == [(4, [2, 128, 8, 5])]


INT8_DOT_CHECK = r"""
import json, torch
from heartmula.accel import gemv
from heartmula.mula import quant
launches = []
kernels = dict(dot=gemv._matvec_dot_kernel, fma=gemv._matvec_kernel)


class Recorded:
    def __init__(self, name):
        self.name = name

    def __getitem__(self, grid):
        def launch(*args, **kw):
            launches.append(dict(kernel=self.name, rows=args[4], BLOCK_M=kw["BLOCK_M"]))
            return kernels[self.name][grid](*args, **kw)
        return launch


gemv._matvec_dot_kernel, gemv._matvec_kernel = Recorded("dot"), Recorded("fma")
torch.manual_seed(0)
out = []
for n, k in ((40, 96), (70, 300)):
    w = torch.randn(n, k) / k**0.5
    w[0] = 0.0
    w[1] *= 1e4
    q, s = quant.quantize_rows(w)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for m in (2, 4, 5, 8, 13, 16, 18, 32):
            x = torch.randn(m, k).to(dtype)
            launches.clear()
            y = gemv.matvec(x, q, torch.float32, scale=s)
            ref = quant.int8_linear(x.double(), q, s)
            out.append(dict(n=n, dtype=str(dtype), m=m, launches=[(la["kernel"], la["rows"]) for la in launches],
                            err=((y.double() - ref).norm() / ref.norm()).item(), zero=bool((y[:, 0] == 0).all())))
print(json.dumps(out))
"""


def test_int8_passes_of_several_takes_run_on_the_tensor_cores_and_match_torch():
    """Passes of INT8_DOT_MIN_ROWS or more rows of 16-bit activations (several takes) go to
    `_matvec_dot_kernel`, up to DOT_ROWS a pass, a short remainder to the FMA kernel; float32
    activations always to the FMA kernel (tl.dot would round them). Every result matches the
    float64 product of the same int8 weights (Triton's interpreter)."""
    checks = run_interpreted(INT8_DOT_CHECK)
    for c in checks:
        assert c["err"] < KERNEL_VS_TORCH_F32 and c["zero"], c
        m = c["m"]
        if c["dtype"] == "torch.float32" or m < 5:
            assert all(kind == "fma" for kind, _ in c["launches"]), c
        else:
            want = {5: [("dot", 5)], 8: [("dot", 8)], 13: [("dot", 13)], 16: [("dot", 16)],
                    18: [("dot", 16), ("fma", 2)], 32: [("dot", 16), ("dot", 16)]}[m]
            assert [tuple(la) for la in c["launches"]] == want, c


def test_int8_tiles_reads_the_tuned_table_by_rows_bucket_and_falls_back_to_the_rule(monkeypatch):
    from heartmula.accel import gemv

    monkeypatch.setitem(gemv.INT8_TUNED, (4, 3072, 8192), (2, 2048, 8, 5))
    for rows in (3, 4):  # 3 rows run as a 4-row tile
        assert gemv.int8_tiles(rows, 3072, 8192) == (4, 2, 2048, 8, 5)
    assert gemv.int8_tiles(1, 3072, 8192) == gemv._int8_rule(1, 3072, 8192)  # no 1-row entry
    assert gemv.int8_tiles(5, 3072, 8192) == (8, *gemv.INT8_TUNED[(8, 3072, 8192)])
    assert gemv.int8_tiles(2, 40, 96) == gemv._int8_rule(2, 40, 96)  # a shape not in the table


def _ckpt_tensors(tiny_ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_ckpt / "HeartMuLa-oss-tiny" / "model.safetensors"))


def test_loader_stores_every_streamed_matrix_as_int8_of_the_checkpoint(tiny_ckpt):
    state = _ckpt_tensors(tiny_ckpt)
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", quant="int8")
    assert model.quant == "int8"
    int8 = {n: b for n, b in model.named_buffers() if b.dtype == torch.int8}
    assert int8 and all(m.weight_q.dtype == torch.int8 and m.scale.dtype == torch.float32
                        for m in model.modules() if isinstance(m, quant.Int8Linear))
    # No float copy of a quantized matrix is kept: the only float parameters left are the
    # embeddings, norms and the MuQ layer.
    floats = {n for n, p in model.named_parameters()}
    assert all(n.endswith(("embeddings.weight", "embedding.weight", "scale")) or n.startswith("muq_linear")
               for n in floats), sorted(floats)
    # Per-row scales commute with stacking: the fused q/k/v rows are the checkpoint's rows, each quantized.
    for llama in ("backbone", "decoder"):
        pre = f"{llama}.layers.1."
        qkv = [quant.quantize_rows(state[pre + f"attn.{p}.weight"]) for p in ("q_proj", "k_proj", "v_proj")]
        layer = getattr(model, llama).layers[1]
        assert torch.equal(layer.attn.wqkv.weight_q, torch.cat([q for q, _ in qkv]))
        assert torch.equal(layer.attn.wqkv.scale, torch.cat([s for _, s in qkv]))
        w13 = [quant.quantize_rows(state[pre + f"mlp.{p}.weight"]) for p in ("w1", "w3")]
        # w1 and w3 interleaved row by row (gemv.stack_gate_up), as the SwiGLU epilogue reads them
        assert torch.equal(layer.mlp.w13.weight_q, torch.stack([q for q, _ in w13], 1).flatten(0, 1))
        assert torch.equal(layer.mlp.w13.scale, torch.stack([s for _, s in w13], 1).flatten(0, 1))
    heads_q, heads_s = quant.quantize_rows(state["audio_head"].transpose(1, 2))
    for i, head in enumerate(model.audio_heads):
        assert torch.equal(head.weight_q, heads_q[i]) and torch.equal(head.scale, heads_s[i])
    assert torch.equal(model.codebook0_head.weight_q, quant.quantize_rows(state["codebook0_head.weight"])[0])
    # Exactly one byte per quantized weight plus four per row, and the rest as it was.
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    want = sum(t.numel() + 4 * (t.numel() // t.shape[-1 if name != "audio_head" else 1])
               if quant.QUANTIZED.match(name) else 4 * t.numel() for name, t in state.items())
    assert held == want


def test_loader_quantizes_shard_by_shard_and_refuses_what_int8_cannot_hold(tiny_ckpt, tmp_path):
    src = tiny_ckpt / "HeartMuLa-oss-tiny"
    state = _ckpt_tensors(tiny_ckpt)
    dst = tmp_path / "sharded"
    dst.mkdir()
    shutil.copy(src / "config.json", dst)
    names = sorted(state)
    weight_map = {}
    for i, keys in enumerate((names[::2], names[1::2])):  # q/k/v of one layer land in both shards
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in keys}, str(dst / fname))
        weight_map.update({k: fname for k in keys})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    a = load_heartmula(src, quant="int8")
    b = load_heartmula(dst, dtype=torch.bfloat16, quant="int8")
    assert b.text_embeddings.weight.dtype == torch.bfloat16 and b.compute_dtype == torch.bfloat16
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        if x.dtype == torch.int8:  # bf16 rounding of the checkpoint moves a few codes by one step at most
            assert (x.int() - y.int()).abs().max() <= 1, name
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(src / "config.json", bad)
    broken = dict(state)
    broken["decoder.layers.0.mlp.w2.weight"] = broken["decoder.layers.0.mlp.w2.weight"].clone()
    broken["decoder.layers.0.mlp.w2.weight"][3, 5] = float("nan")
    save_file(broken, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.mlp\.w2\.weight holds inf or NaN.*quant='none'"):
        load_heartmula(bad, quant="int8")
    with pytest.raises(ValueError, match=r"quant='int4' is not a quantization mode; use one of: none, int8"):
        load_heartmula(src, quant="int4")
    with pytest.raises(ValueError, match="needs fuse=True"):
        load_heartmula(src, quant="int8", fuse=False)


@pytest.mark.parametrize("streamed", [False, True])
def test_loader_reads_in_small_groups_to_the_same_model(tiny_ckpt, monkeypatch, streamed):
    """Quantizing at load reads a group of tensors at a time (so a 5 GB shard never sits in
    device memory whole); groups of a few KB give the very same model as one group."""
    from heartmula import checkpoint

    src = tiny_ckpt / "HeartMuLa-oss-tiny"
    one = load_heartmula(src, quant="int8")
    seen = []
    real = checkpoint._read_files
    monkeypatch.setattr(checkpoint, "_read_files", lambda *a, **k: seen.append(k.get("only")) or real(*a, **k))
    monkeypatch.setattr(checkpoint, "CONVERT_GROUP_BYTES", 8192)
    monkeypatch.setattr("heartmula.mula.load.load_state_dict",
                        lambda *a, **k: checkpoint.load_state_dict(*a, streamed=streamed, **k))
    many = load_heartmula(src, quant="int8")
    assert len(seen) > 10 and all(len(g) >= 1 for g in seen)
    assert sorted(n for g in seen for n in g) == sorted(_ckpt_tensors(tiny_ckpt))  # each tensor read once
    a, b = one.state_dict(), many.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_engine_and_load_engine_take_quant_and_name_a_bad_one(tiny_ckpt):
    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu", quant="int8", preload=False)
    assert engine.config.quant == "int8" and engine.load(codec=False).mula.quant == "int8"
    with pytest.raises(ValueError, match="quant='fp4'.*none, int8"):
        Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu", quant="fp4")


def test_int8_codebook0_logits_follow_the_float_model_along_the_golden_song(tiny_ckpt, mula_golden):
    """Teacher-forced along the golden greedy song: the harness reproduces the golden logits
    with the float model, and the int8 model stays within the bounds stated here."""
    meta, gold = mula_golden
    ref = Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu").load(codec=False)
    q8 = Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu", quant="int8").load(codec=False)
    prompt = ref.build_prompt(meta["lyrics"], meta["tags"])
    frames = gold["frames_cfg1.0"]
    a = fidelity.codebook0_logits(ref.mula, prompt, frames[:-1])
    golden = torch.from_numpy(gold["c0_logits_cfg1.0"][:, 0])
    assert a.shape == golden.shape and ((a - golden).norm() / golden.norm()).item() < 1e-5
    b = fidelity.codebook0_logits(q8.mula, prompt, frames[:-1])
    fid = fidelity.compare_logits(a, b, topk=10)  # the tiny vocabulary has 37 codes
    # 64-wide rows have a coarser maximum than 3072-wide ones, so the tiny model errs more
    # than the 3B's (bench --what quality); these bounds hold with room at this size.
    assert 0 < fid.rel_err < 0.05, fid
    assert fid.topk_overlap >= 0.9 and fid.greedy_agreement >= 0.9 and fid.kl_topk < 0.01, fid


@pytest.mark.parametrize("seed", range(6))
def test_fidelity_figures_mean_what_they_say(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(17, 300, generator=g) * 3
    same = fidelity.compare_logits(a, a.clone())
    assert (same.rel_err, same.topk_overlap, same.greedy_agreement, same.kl_topk) == (0.0, 1.0, 1.0, 0.0)
    shifted = fidelity.compare_logits(a, a + 5.0)  # softmax and ranks ignore a constant
    assert shifted.rel_err > 0.5 and shifted.topk_overlap == 1.0 and shifted.greedy_agreement == 1.0
    assert shifted.kl_topk < 1e-12
    flipped = fidelity.compare_logits(a, -a)  # the best become the worst
    assert flipped.rel_err == pytest.approx(2.0) and flipped.topk_overlap == 0.0 and flipped.greedy_agreement == 0.0
    assert flipped.kl_topk > 1.0
    noisy = fidelity.compare_logits(a, a + 0.01 * torch.randn(a.shape, generator=g))
    assert 0.001 < noisy.rel_err < 0.01 and noisy.topk_overlap > 0.9 and noisy.kl_topk < 1e-3
    with pytest.raises(ValueError, match=r"one shape; got \(17, 300\) and \(17, 299\)"):
        fidelity.compare_logits(a, a[:, 1:])


FRAMES_INT8_CHECK = r"""
import json, sys
from heartmula import Engine, GenerateOptions
golden = sys.argv[1]
meta = json.load(open(f"{golden}/heartmula_tiny_golden.json"))
out = {}
for kernels in (True, False):
    engine = Engine(model_path=f"{golden}/ckpt_tiny", version="tiny", device="cpu", quant="int8").load(codec=False)
    if kernels:
        engine.mula.use_gemv(blocks=True)
    else:
        engine.mula.gemv = False
        for layer in engine.mula.backbone.layers + engine.mula.decoder.layers:
            layer.attn.matvec = layer.mlp.matvec = False
    opts = GenerateOptions(max_audio_length_ms=6 * 80, cfg_scale=1.5, topk=1, ignore_eos=True, seed=0)
    out[str(kernels)] = engine.generate_frames(meta["lyrics"], meta["tags"], opts).frames[0].tolist()
    out["gemv_" + str(kernels)] = engine.mula.gemv
print(json.dumps(out))
"""


def test_int8_frame_loop_through_the_kernel_makes_the_torch_paths_frames(golden_dir):
    r = run_interpreted(FRAMES_INT8_CHECK, str(golden_dir))
    assert r["gemv_True"] is True and r["gemv_False"] is False
    assert r["True"] == r["False"] and len(r["True"]) == 6


def test_cli_generates_with_int8_weights_and_refuses_an_unknown_mode(tiny_ckpt, tmp_path):
    from test_cli import run_cli

    out = tmp_path / "song.wav"
    r = run_cli("generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--lyrics", "la la la", "--tags",
                "pop", "--max-audio-length-ms", str(8 * 80), "--ignore-eos", "--seed", "0", "--codec-steps", "2",
                "--device", "cpu", "--quant", "int8", "--save-path", str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"]["quant"] == "int8" and meta["frames"] == 8
    for command in (["generate", "--lyrics", "x", "--tags", "y"], ["queue", "--songs", "s.json", "--save-dir", "d"]):
        bad = run_cli(*command, "--model-path", str(tiny_ckpt), "--quant", "int4")
        assert bad.returncode == 2 and "invalid choice: 'int4' (choose from 'none', 'int8')" in bad.stderr, bad.stderr


@pytest.mark.requires_cuda
def test_int8_kernel_on_cuda_at_the_3b_shapes_matches_the_torch_path():
    from heartmula.accel import gemv

    torch.manual_seed(0)
    for n, k in ((8197, 3072), (5120, 3072), (6144, 3072), (16384, 3072), (3072, 8192), (3072, 3072), (100, 72)):
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        w[0] = 0
        q, s = quant.quantize_rows(w)
        for m in (1, 2, 3, 4, 8, 13, gemv.INT8_DECODE_ROWS):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = gemv.matvec(x, q, torch.float32, scale=s)
            ref = quant.int8_linear(x.double(), q, s)
            assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-5, (n, k, m)
            assert bool((y[:, 0] == 0).all())


@pytest.mark.requires_cuda
@pytest.mark.parametrize("compile", [False, True])
def test_int8_engine_on_cuda_graphs_and_compile_make_the_eager_frames(tiny_ckpt, compile):
    """Graph replay (and compiled blocks) of the int8 model, through gemv.py's int8 kernel,
    make the frames its eager steps make."""
    from heartmula.mula.generate import generate_frames
    from heartmula.mula.graphed_step import GraphedStep

    eng = Engine(model_path=str(tiny_ckpt), version="tiny", device="cuda", quant="int8", compile=compile)
    assert eng.graphs_enabled and eng.load(codec=False).mula.gemv and eng.mula.quant == "int8"
    assert eng.mula.backbone.layers[0].attn.matvec  # the blocks' products through the int8 kernel
    opts = GenerateOptions(max_audio_length_ms=100 * 80, seed=3, takes=2, ignore_eos=True)
    prompt = eng.build_prompt("la la la", "pop")
    buf, _ = eng._prepare(prompt, opts)
    eager = generate_frames(eng.mula, prompt, eng.gen, opts, buffers=buf)
    graphed = generate_frames(eng.mula, prompt, eng.gen, opts, buffers=buf, step=GraphedStep(eng.mula, buf, bucket=64))
    for a, b in zip(eager.frames, graphed.frames):
        np.testing.assert_array_equal(a, b)
    fr = eng.generate_frames("la la la", "pop", opts)  # the engine's own graphed path
    np.testing.assert_array_equal(fr.frames[0], eager.frames[0])


def test_casting_a_quantized_model_keeps_int8_bytes_and_float32_scales(tiny_ckpt):
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", quant="int8")
    before = {n: b.clone() for n, b in model.named_buffers()}
    model.to(torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, quant.Int8Linear)]
    assert layers and all(m.weight_q.dtype == torch.int8 and m.scale.dtype == torch.float32 for m in layers)
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())  # not rounded through bf16
    assert model.compute_dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"int8 \[N, K\] weight and \[N\] scales"):
        quant.Int8Linear(torch.ones(3, 4), torch.ones(3))


def test_a_preset_can_ask_for_int8_and_the_cli_loads_with_it(tiny_ckpt, tmp_path):
    from heartmula.library.presets import load_preset, preset_from_dict, save_preset

    from test_cli import run_cli

    path = tmp_path / "small-card.yaml"
    path.write_text("description: fits small cards\nquant: int8\ncodec_steps: 2\nmax_audio_length_ms: 640\n"
                    "ignore_eos: true\n", encoding="utf-8")
    preset = load_preset(str(path))
    assert preset.quant == "int8" and preset.to_dict()["quant"] == "int8"
    assert "quant" not in load_preset("balanced").to_dict() and load_preset("balanced").quant is None
    with pytest.raises(ValueError, match=r"x\.yaml: quant='int4' is not allowed; allowed: none, int8"):
        preset_from_dict("x", {"quant": "int4"}, "x.yaml")
    saved = save_preset(preset_from_dict("mine", {"quant": "int8", "topk": 20}, "new"), tmp_path / "user")
    assert load_preset(str(saved)).quant == "int8"
    common = ("generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--lyrics", "la la", "--tags", "pop",
              "--seed", "0", "--device", "cpu", "--preset", str(path))
    for extra, want in (((), "int8"), (("--quant", "none"), "none")):  # the flag wins over the preset
        out = tmp_path / f"song-{want}.wav"
        r = run_cli(*common, *extra, "--save-path", str(out))
        assert r.returncode == 0, r.stderr
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["model"]["quant"] == want and meta["frames"] == 8
