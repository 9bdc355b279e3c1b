"""Generation on the tiny golden checkpoint: golden frames, seeds, takes, stop, cfg switching."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from heartmula import Engine, GenerateOptions
from heartmula.mula.load import load_heartmula
from heartmula.mula.generate import SYNC_EVERY
from heartmula.mula.prompt import GenConfig, build_prompt, load_tokenizer
from heartmula.mula.sampling import pick_codes, vocab_keys

CFG_UNUSED = torch.tensor(1.5)  # pick_codes without guidance ignores the cfg scale


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu").load(codec=False)


def golden_opts(cfg: float) -> GenerateOptions:
    return GenerateOptions(max_audio_length_ms=24 * 80, cfg_scale=cfg, topk=1, ignore_eos=True, seed=0)


def test_prompt_tokens_match_reference(tiny_ckpt, mula_golden):
    meta, gold = mula_golden
    tok = load_tokenizer(tiny_ckpt / "tokenizer.json")
    gen = GenConfig.from_file(tiny_ckpt / "gen_config.json")
    p = build_prompt(tok, meta["lyrics"], meta["tags"], gen)
    assert p.muq_idx == meta["muq_idx"]
    np.testing.assert_array_equal(p.tokens, gold["prompt_tokens"])
    np.testing.assert_array_equal(p.mask, gold["prompt_tokens_mask"].astype(bool))


@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_golden_frames_and_codebook0_logits(engine, mula_golden, cfg):
    meta, gold = mula_golden
    logits = []
    hook = engine._ensure_mula().codebook0_head.register_forward_hook(lambda m, i, o: logits.append(o.clone()))
    try:
        fr = engine.generate_frames(meta["lyrics"], meta["tags"], golden_opts(cfg))
    finally:
        hook.remove()
    np.testing.assert_array_equal(fr.frames[0], gold[f"frames_cfg{cfg}"])
    ours, ref = torch.stack(logits), torch.from_numpy(gold[f"c0_logits_cfg{cfg}"])
    assert ours.shape == ref.shape
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-4


def test_same_seed_same_frames_other_seed_other_frames(engine):
    opts = GenerateOptions(max_audio_length_ms=40 * 80, seed=1234, ignore_eos=True)
    a = engine.generate_frames("la la la", "pop", opts).frames[0]
    b = engine.generate_frames("la la la", "pop", opts).frames[0]
    c = engine.generate_frames("la la la", "pop", replace(opts, seed=1235)).frames[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_takes_differ_and_each_equals_its_single_seed_run(engine, cfg):
    opts = GenerateOptions(max_audio_length_ms=30 * 80, seed=77, takes=3, cfg_scale=cfg, ignore_eos=True)
    many = engine.generate_frames("hello world", "rock", opts)
    assert many.seeds == [77, 78, 79]
    assert len({f.tobytes() for f in many.frames}) == 3
    for i, seed in enumerate(many.seeds):
        single = engine.generate_frames("hello world", "rock", replace(opts, takes=1, seed=seed))
        np.testing.assert_array_equal(many.frames[i], single.frames[0])


def test_each_take_stops_at_its_own_end_of_song(engine):
    # The tiny model emits end codes (>= audio_eos_id) often; each take ends on its own.
    fr = engine.generate_frames("la", "pop", GenerateOptions(max_audio_length_ms=200 * 80, seed=5, takes=4))
    eos = engine.gen.audio_eos_id
    for frames, ended in zip(fr.frames, fr.ended):
        assert (frames[1:] < eos).all()  # the end frame itself is dropped
        assert ended or len(frames) == 200
    assert any(fr.ended) and len({len(f) for f in fr.frames}) > 1


def test_ignore_eos_runs_the_full_length(engine):
    fr = engine.generate_frames("la", "pop", GenerateOptions(max_audio_length_ms=100 * 80, seed=5, ignore_eos=True))
    assert fr.frames[0].shape == (100, 8)


def test_stop_ends_within_a_few_frames_and_frees_caches(engine):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= 10

    fr = engine.generate_frames(
        "la", "pop", GenerateOptions(max_audio_length_ms=200 * 80, ignore_eos=True, seed=1), should_stop=should_stop
    )
    assert fr.stopped
    assert len(fr.frames[0]) == 10  # asked once after the prompt step, then after each step
    assert engine.mula.backbone.layers[0].attn.kv_cache is None
    at_once = engine.generate_frames("la", "pop", GenerateOptions(max_audio_length_ms=200 * 80, seed=1),
                                     should_stop=lambda: True)
    assert at_once.stopped and len(at_once.frames[0]) == 1  # a stop during the prompt: frame 0 only
    assert engine.mula.backbone.layers[0].attn.kv_cache is None
    again = engine.generate_frames("la", "pop", golden_opts(1.5))  # the next job works
    assert again.frames[0].shape == (24, 8)


def test_cfg_and_takes_switch_within_one_process(engine, mula_golden):
    meta, gold = mula_golden
    for cfg, takes in [(1.5, 1), (1.0, 1), (1.5, 2), (1.0, 3), (1.5, 1)]:
        fr = engine.generate_frames(meta["lyrics"], meta["tags"], replace(golden_opts(cfg), takes=takes))
        for f in fr.frames:  # greedy: every take is the golden song
            np.testing.assert_array_equal(f, gold[f"frames_cfg{cfg}"])


def test_progress_reports_are_bounded_and_ordered(engine):
    seen = []
    engine.generate_frames("la", "pop", GenerateOptions(max_audio_length_ms=120 * 80, ignore_eos=True, seed=2),
                           on_progress=seen.append)
    frames = [p for p in seen if p.phase == "frames"]
    assert seen[0].phase == "prompt"
    assert frames and frames[-1].done == frames[-1].total == 120
    assert [p.done for p in frames] == sorted(p.done for p in frames)
    assert len(frames) <= 120 // SYNC_EVERY + 1
    assert all(p.per_s > 0 and p.eta_s is not None for p in frames)


@pytest.mark.parametrize("field,value,match", [
    ("cfg_scale", 0.5, "cfg_scale=0.5 is out of range; allowed: 1.0 to 10.0"),
    ("topk", 0, "topk=0 is out of range"),
    ("takes", 9, "takes=9 is out of range; allowed: 1 to 8"),
    ("temperature", 0.0, "temperature"),
    ("max_audio_length_ms", 10, "max_audio_length_ms=10"),
    ("seed", -1, "seed=-1"),
    ("topk", 2.5, "topk must be a whole number"),
    ("cfg_scale", float("nan"), "cfg_scale must be a finite number"),
    ("ignore_eos", 1, "ignore_eos must be true or false"),
])
def test_option_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        GenerateOptions(**{field: value})


def test_bad_prompts_are_refused_clearly(engine):
    with pytest.raises(ValueError, match="lyrics are empty"):
        engine.generate_frames("   \n", "pop")
    with pytest.raises(ValueError, match="tags are empty"):
        engine.generate_frames("la", "\x00\x01")
    with pytest.raises(ValueError, match="leaves room for .* s of audio"):
        engine.generate_frames("la " * 100, "pop", GenerateOptions(max_audio_length_ms=200 * 80))


def test_sampling_follows_softmax_within_topk():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 5.0]]).repeat(4000, 1)
    keys = vocab_keys(5)
    seeds = torch.arange(4000)
    codes = pick_codes(logits, CFG_UNUSED, torch.tensor(1.0), torch.tensor(3), seeds, torch.tensor(7), keys, False)
    counts = torch.bincount(codes, minlength=5).float() / 4000
    want = torch.softmax(torch.tensor([2.0, 1.0, 0.0, -1e9, 5.0]), -1)  # top 3: ids 4, 0, 1
    assert counts[2] == 0 and counts[3] == 0
    assert torch.allclose(counts, want, atol=0.03)
    low_t = pick_codes(logits, CFG_UNUSED, torch.tensor(0.05), torch.tensor(5), seeds, torch.tensor(7), keys, False)
    assert (low_t == 4).float().mean() > 0.99


def test_partial_topk_draws_what_the_full_sort_draws():
    torch.manual_seed(1)
    logits = torch.randn(64, 1000) * 3
    keys = vocab_keys(1000)
    seeds = torch.arange(64)
    for k in (1, 7, 50, 256):
        args = (logits, CFG_UNUSED, torch.tensor(0.9), torch.tensor(k), seeds, torch.tensor(3), keys, False)
        assert torch.equal(pick_codes(*args, topk_cap=256), pick_codes(*args))


def test_topk_above_the_cap_rebuilds_the_buffers(engine):
    from heartmula.mula.graphed_step import request_shape

    opts = [GenerateOptions(max_audio_length_ms=20 * 80, seed=4, topk=k, ignore_eos=True) for k in (20, 5000)]
    small = engine.generate_frames("la", "pop", opts[0])
    large = engine.generate_frames("la", "pop", opts[1])
    assert [engine._ready[request_shape(o)][0].topk_cap for o in opts] == [256, None]
    assert small.frames[0].shape == large.frames[0].shape == (20, 8)
