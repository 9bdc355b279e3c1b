"""The frame step's graph-friendly logic: attention buckets, graph replay, compiled sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heartmula import Engine, GenerateOptions
from heartmula.mula.generate import attention_length, decode_frame, generate_frames
from heartmula.mula.sampling import pick_codes


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu").load(codec=False)


def test_attention_length_buckets():
    assert attention_length(0, 2048, 512) == 512
    assert attention_length(511, 2048, 512) == 512
    assert attention_length(512, 2048, 512) == 1024
    assert attention_length(2000, 2048, 512) == 2048
    assert attention_length(700, 800, 512) == 800  # the last bucket ends at the cache


def test_reading_part_of_the_cache_changes_nothing(engine):
    """Small buckets (several per song) give the frames of attending to the whole cache."""
    opts = GenerateOptions(max_audio_length_ms=120 * 80, seed=11, ignore_eos=True)
    prompt = engine.build_prompt("la la la", "pop")
    buf, _ = engine._prepare(prompt, opts)
    model = engine.mula
    whole = generate_frames(model, prompt, engine.gen, opts, buffers=buf,
                            step=lambda m, b, pos: decode_frame(m, b, m.backbone.cache_len))
    lengths = []

    def bucketed(m, b, pos):
        lengths.append(attention_length(pos, m.backbone.cache_len, 16))
        return decode_frame(m, b, lengths[-1])

    parts = generate_frames(model, prompt, engine.gen, opts, buffers=buf, step=bucketed)
    assert len(set(lengths)) > 5
    np.testing.assert_array_equal(whole.frames[0], parts.frames[0])


def test_sampling_knobs_change_values_not_code():
    """A temperature or top-k change reuses the compiled sampler (no recompile)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    pick = torch.compile(pick_codes, dynamic=False, fullgraph=True)
    logits = torch.randn(4, 37)
    keys = torch.arange(37)
    seeds = torch.tensor([1, 2])
    outs = []
    for temperature, topk in [(1.0, 20), (0.7, 20), (0.7, 3), (1.3, 1)]:
        outs.append(pick(logits, torch.tensor(1.5), torch.tensor(temperature), torch.tensor(topk), seeds,
                         torch.tensor(5), keys, True))
    assert counters["stats"]["unique_graphs"] == 1
    eager = pick_codes(logits, torch.tensor(1.5), torch.tensor(1.3), torch.tensor(1), seeds, torch.tensor(5), keys, True)
    assert torch.equal(outs[-1], eager)


@pytest.mark.requires_cuda
def test_graph_replay_makes_the_eager_frames_on_cuda(tiny_ckpt):
    from heartmula.mula.graphed_step import GraphedStep

    eng = Engine(model_path=str(tiny_ckpt), version="tiny", device="cuda", dtype="float32").load(codec=False)
    opts = GenerateOptions(max_audio_length_ms=150 * 80, seed=3, takes=2, ignore_eos=True)
    prompt = eng.build_prompt("la la la", "pop")
    buf, _ = eng._prepare(prompt, opts)
    eager = generate_frames(eng.mula, prompt, eng.gen, opts, buffers=buf)
    graphed = generate_frames(eng.mula, prompt, eng.gen, opts, buffers=buf, step=GraphedStep(eng.mula, buf, bucket=64))
    for a, b in zip(eager.frames, graphed.frames):
        np.testing.assert_array_equal(a, b)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_engine_on_cuda_reproduces_the_golden_frames_through_graphs(tiny_ckpt, mula_golden, cfg):
    meta, gold = mula_golden
    eng = Engine(model_path=str(tiny_ckpt), version="tiny", device="cuda", dtype="float32")
    assert eng.graphs_enabled and eng.load(codec=False).mula.gemv  # the heads run through gemv.py
    fr = eng.generate_frames(meta["lyrics"], meta["tags"], GenerateOptions(
        max_audio_length_ms=24 * 80, cfg_scale=cfg, topk=1, ignore_eos=True, seed=0))
    np.testing.assert_array_equal(fr.frames[0], gold[f"frames_cfg{cfg}"])


@pytest.mark.requires_cuda
def test_compiled_engine_on_cuda_makes_songs_and_stops(tmp_path):
    from heartmula.demo import DEMO_VERSION, ensure_demo_bundle

    bundle = ensure_demo_bundle(tmp_path)
    eng = Engine(model_path=str(bundle), version=DEMO_VERSION, device="cuda", compile=True)
    assert eng.warmup() > 0
    assert len(eng.codec._graphs) == 2  # the codec's first-window and later-window solves
    opts = GenerateOptions(max_audio_length_ms=6000, seed=5, takes=2)
    a = eng.generate("la la", "pop", opts)
    b = eng.generate("la la", "pop", opts)
    for x, y in zip(a.frames, b.frames):
        np.testing.assert_array_equal(x, y)  # same seed, same song, through graphs and compile
    assert a.audio[0].shape == (2, 75 * 3840)
    stopped = eng.generate_frames("la", "pop", GenerateOptions(max_audio_length_ms=60_000, seed=1),
                                  should_stop=iter([False] * 20 + [True] * 10_000).__next__)
    assert stopped.stopped and len(stopped.frames[0]) <= 21


@pytest.mark.requires_cuda
def test_warmed_shapes_capture_nothing_more_on_cuda(tmp_path):
    """Issue 19's cold requests: after warm_shapes, requests of every warmed shape at any length
    replay graphs captured during the warm-up; none is captured, and the codec's graphs per
    batch are all there already."""
    from heartmula.demo import DEMO_VERSION, ensure_demo_bundle

    bundle = ensure_demo_bundle(tmp_path)
    eng = Engine(model_path=str(bundle), version=DEMO_VERSION, device="cuda", compile=True)
    shapes = [GenerateOptions(max_audio_length_ms=4000, takes=t, cfg_scale=c) for t in (1, 2) for c in (1.0, 1.5)]
    assert eng.warm_shapes(shapes) == shapes and eng.reserved
    steps = {shape: (id(step), len(step.graphs)) for shape, (_, step) in eng._ready.items()}
    assert all(n == len(eng._ready[s][1].lens) for s, (_, n) in steps.items())  # every bucket captured
    codec_graphs = len(eng.codec._graphs)
    for takes, cfg, seconds in ((2, 1.5, 3), (1, 1.0, 20), (1, 1.5, 9), (2, 1.0, 1)):
        r = eng.generate("la la", "pop", GenerateOptions(max_audio_length_ms=seconds * 1000, takes=takes,
                                                         cfg_scale=cfg, seed=1, ignore_eos=True))
        assert len(r.audio) == takes
        assert {shape: (id(step), len(step.graphs)) for shape, (_, step) in eng._ready.items()} == steps
        assert len(eng.codec._graphs) == codec_graphs


@pytest.mark.requires_cuda
def test_matvec_on_cuda_matches_float32_products():
    from heartmula.accel import gemv

    torch.manual_seed(0)
    for n, k in ((8197, 3072), (3072, 3072), (100, 72)):
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        for m in range(1, gemv.MAX_ROWS + 1):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = gemv.matvec(x, w, torch.float32)
            ref = torch.nn.functional.linear(x.double(), w.double())
            assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-5


@pytest.mark.requires_cuda
def test_kth_largest_on_cuda_is_the_sorted_kth():
    from heartmula.accel import kth

    torch.manual_seed(0)
    s = torch.randn(4, 8197, device="cuda") * 4
    s[:, :3000] = s[:, :3000].round()  # ties
    for k in (1, 2, 50, 256, 1000, 8197, 9000):
        ref = s.sort(dim=-1, descending=True).values[:, min(k, 8197) - 1 : min(k, 8197)]
        assert torch.equal(kth.kth_largest(s, torch.tensor(k, device="cuda")), ref)


@pytest.mark.requires_cuda
def test_draw_kernel_on_cuda_draws_what_the_torch_path_draws():
    from heartmula.accel import draw
    from heartmula.mula.sampling import pick_codes, vocab_keys

    g = torch.Generator(device="cuda").manual_seed(1)
    keys, pos = vocab_keys(8197, "cuda"), torch.tensor([811], device="cuda")
    for trial in range(60):
        guided, takes = trial % 2 == 0, 1 + trial % 3
        logits = torch.randn(takes * (2 if guided else 1), 8197, device="cuda", generator=g) * 3
        logits[:, :2000] = logits[:, :2000].round()  # ties
        knobs = [torch.tensor(v, device="cuda") for v in ((1.5, 1.0), (3.0, 0.05), (1.0, 4.0))[trial % 3]]
        k = torch.tensor((1, 2, 50, 300, 8197)[trial % 5], device="cuda")
        seeds = torch.arange(takes, device="cuda") + trial * 2**40
        ref = pick_codes(logits, *knobs, k, seeds, pos * 8 + trial % 8, keys, guided)
        assert torch.equal(draw.draw_codes(logits, *knobs, k, seeds, pos, 8, trial % 8, guided), ref), trial


@pytest.mark.requires_cuda
def test_decode_attention_on_cuda_matches_float64_and_replays_in_a_graph():
    """attention.py's kernel on the card, at the 3B backbone's and decoder's shapes, against
    float64 softmax attention; then replayed from a CUDA graph as positions advance (the parts'
    completion counts must be back at zero after every replay)."""
    from heartmula.accel import attention

    g = torch.Generator(device="cuda").manual_seed(2)

    def reference(q, k, v, pos):
        rep = q.shape[2] // k.shape[1]
        out = []
        for s, p in enumerate(pos):
            kk, vv = (t.double()[:, :, : p + 1].repeat_interleave(rep, 1) for t in (k, v))
            w = torch.softmax(torch.einsum("bhd,bhnd->bhn", q.double()[:, s], kk) / q.shape[-1] ** 0.5, -1)
            out.append(torch.einsum("bhn,bhnd->bhd", w, vv).flatten(1))
        return torch.stack(out, 1)

    for b, s, h, hkv, d, length, pos in ((2, 1, 24, 8, 128, 1024, [0]), (2, 1, 24, 8, 128, 1024, [811]),
                                         (8, 1, 24, 8, 128, 8192, [8191]), (2, 2, 8, 4, 384, 16, [0, 1]),
                                         (2, 1, 8, 4, 384, 16, [12])):
        k, v = (torch.randn(b, hkv, length, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
        q = torch.randn(b, s, h, d, device="cuda", generator=g, dtype=torch.bfloat16)
        pos_t = torch.tensor(pos, device="cuda")
        ref = reference(q, k, v, pos)
        y = attention.decode_attention(q, k, v, pos_t, length)
        assert float((y.double() - ref).abs().max() / ref.abs().max()) < 2e-2, (b, s, length, pos)

    b, hkv, length = 2, 8, 1024
    k, v = (torch.randn(b, hkv, length, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    q = torch.randn(b, 1, 24, 128, device="cuda", generator=g, dtype=torch.bfloat16)
    pos_t = torch.tensor([5], device="cuda")
    attention.decode_attention(q, k, v, pos_t, length)  # compiles before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = attention.decode_attention(q, k, v, pos_t, length)
    for p in (5, 63, 64, 500, 1023):
        pos_t.fill_(p)
        graph.replay()
        torch.cuda.synchronize()
        assert float((y.double() - reference(q, k, v, [p])).abs().max()) < 2e-2 * float(v.abs().max()), p
        assert all(int(c.abs().sum()) == 0 for c in attention._COUNTS.values())


@pytest.mark.requires_cuda
def test_decode_step_on_cuda_writes_the_caches_and_attends_as_the_torch_path():
    """attention.decode_step on the card at the 3B backbone's shape: RoPE, the cache writes and
    attention against the model's apply_rope, index_copy_ and float64 attention, from a CUDA
    graph replayed as the position advances."""
    from heartmula.accel import attention
    from heartmula.mula.model import FLAVORS, apply_rope, rope_table

    g = torch.Generator(device="cuda").manual_seed(3)
    b, h, hkv, d, length = 2, 24, 8, 128, 1024
    table = rope_table(FLAVORS["llama-3B"], length, "cuda")
    k_cache, v_cache = (torch.randn(b, hkv, length, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    qkv = torch.randn(b, 1, (h + 2 * hkv) * d, device="cuda", generator=g, dtype=torch.bfloat16)
    pos_t = torch.tensor([5], device="cuda")
    rope = table[pos_t]
    attention.decode_step(qkv, rope, pos_t, k_cache, v_cache, length, h)  # compiles before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = attention.decode_step(qkv, rope, pos_t, k_cache, v_cache, length, h)
    for p in (6, 64, 511, 1023):
        pos_t.fill_(p)
        rope.copy_(table[p : p + 1])
        qkv.normal_(generator=g)
        ref_k, ref_v = k_cache.clone(), v_cache.clone()
        graph.replay()
        torch.cuda.synchronize()
        q, k, v = qkv.split([h * d, hkv * d, hkv * d], -1)
        q = apply_rope(q.view(b, 1, h, d), rope)
        ref_k.index_copy_(2, pos_t, apply_rope(k.view(b, 1, hkv, d), rope).transpose(1, 2))
        ref_v.index_copy_(2, pos_t, v.view(b, 1, hkv, d).transpose(1, 2))
        assert (k_cache.float() - ref_k.float()).abs().max() <= 2**-6 and torch.equal(v_cache, ref_v), p
        kk, vv = (t.double()[:, :, : p + 1].repeat_interleave(h // hkv, 1) for t in (ref_k, ref_v))
        w = torch.softmax(torch.einsum("bhd,bhnd->bhn", q.double()[:, 0], kk) / d**0.5, -1)
        ref = torch.einsum("bhn,bhnd->bhd", w, vv).flatten(1)
        assert float((y[:, 0].double() - ref).abs().max() / ref.abs().max()) < 2e-2, p


def test_codec_warm_up_decodes_on_cpu_without_graphs(tiny_ckpt):
    eng = Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu")
    eng.warm_codec(GenerateOptions(takes=2))
    assert eng.codec is not None and eng.codec._graphs is None and not eng.codec_graphs_enabled


def test_codec_graphs_refuse_a_cpu_codec(tiny_ckpt):
    from heartmula.codec.decoder import load_codec

    with pytest.raises(ValueError, match="codec graphs need a CUDA device; the codec is on cpu"):
        load_codec(tiny_ckpt / "HeartCodec-oss").use_graphs()


@pytest.mark.requires_cuda
def test_codec_graphs_decode_the_audio_of_the_eager_solve(tiny_ckpt):
    """Graph replays of the Euler solve give the eager audio: first and later windows, one
    take and a batch whose takes end in different windows (the batch shrinks)."""
    from heartmula.codec.decoder import WINDOW_FRAMES, load_codec

    codec = load_codec(tiny_ckpt / "HeartCodec-oss", "cuda")
    rng = np.random.default_rng(0)
    long = rng.integers(0, codec.config.codebook_size, (8, 2 * WINDOW_FRAMES + 40))
    short = rng.integers(0, codec.config.codebook_size, (8, WINDOW_FRAMES // 2))

    def decode_all():
        one = codec.decode(long, generator=torch.Generator().manual_seed(3))
        again = codec.decode(long, generator=torch.Generator().manual_seed(4))  # replays, new inputs
        batch = codec.decode_batch([long, short], generators=[torch.Generator().manual_seed(5),
                                                              torch.Generator().manual_seed(6)])
        return [one, again, *batch]

    eager = decode_all()
    codec.use_graphs()
    graphed = decode_all()
    # one take: first and later windows; the batch's first window (its later ones: one take)
    assert len(codec._graphs) == 3
    assert not np.array_equal(eager[0], eager[1])
    for a, b in zip(eager, graphed):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
