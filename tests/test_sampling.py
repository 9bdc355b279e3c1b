"""The sampler, checked as numerical code: exhaustively over the hash -> uniform mapping,
at the exact (seed, counter, entry) triples whose hash is extreme, over many seeds and
counters for the top-k and greedy properties, and statistically against softmax over
the top k. The Triton threshold kernel runs the same checks in tests/test_kernels.py."""

from __future__ import annotations

import math

import pytest
import torch

from heartmula.mula.sampling import (NOISE_MAX, NOISE_MIN, UNIFORM_BITS, draw, fmix32, guided_scores, gumbel_noise,
                                     pick_codes, row_hashes, topk_cap_for, topk_threshold, uniform_from_hash, vocab_keys)

V = 8197  # HeartMuLa's audio vocabulary
M32 = 2**32 - 1
F32_SLACK = 1e-5  # the bounds are exact; float32 noise rounds around them


# -- the hash's inverse, to construct inputs with a chosen hash instead of hoping for them ------

def _inv_xorshift(h: int, s: int) -> int:
    x = h
    for _ in range(32 // s + 1):
        x = h ^ (x >> s)
    return x & M32


def fmix32_inverse(h: int) -> int:
    h = _inv_xorshift(h, 16)
    h = (h * pow(0xC2B2AE35, -1, 2**32)) & M32
    h = _inv_xorshift(h, 13)
    h = (h * pow(0x85EBCA6B, -1, 2**32)) & M32
    return _inv_xorshift(h, 16)


def test_fmix32_inverse_is_exact():
    xs = torch.randint(0, 2**32, (2000,), dtype=torch.int64)
    hs = fmix32(xs).tolist()
    assert [fmix32_inverse(h) for h in hs] == xs.tolist()


def seed_for(counter: int, entry: int, target_hash: int, seed_hi: int = 0) -> int:
    """A seed whose draw at (counter, entry) hashes to target_hash: every other input is real."""
    key = int(vocab_keys(V)[entry])
    row = fmix32_inverse(target_hash) ^ key  # the row hash that gives target_hash at this entry
    inner = int(fmix32(torch.tensor([seed_hi ^ int(fmix32(torch.tensor([counter + 0x9E3779B9]))[0])]))[0])
    seed_lo = fmix32_inverse(row) ^ inner
    return (seed_hi << 32) | seed_lo


def entry_hashes(seed: int, counter: int, entries: torch.Tensor) -> torch.Tensor:
    keys = vocab_keys(V)[entries]
    return fmix32(row_hashes(torch.tensor([seed]), torch.tensor(counter))[:, None] ^ keys[None, :])[0]


# Hashes at and next to both ends of the range, and the ones whose top 24 bits are all ones
# (the old mapping's u == 1.0 in float32, which drew masked codes: issue 14).
EXTREME_HASHES = [0, 1, 0x1FF, 0x200, 0xFF, 0x100, M32 - 0x1FF, M32 - 0x200, 0xFFFFFF00, 0xFFFFFF7F,
                  0xFFFFFF80, M32 - 1, M32]


def extreme_triples() -> list[tuple[int, int, int]]:
    """(seed, counter, entry) where the draw's hash at `entry` is one of EXTREME_HASHES:
    counters like a song's (frame * 8 + codebook), entries across the vocabulary."""
    out = []
    for i, h in enumerate(EXTREME_HASHES):
        for counter, entry in ((12 * 8 + 5, 4864), (2 + 811 * i, (i * 977) % V), (8 * 2047 + 7, V - 1), (0, 0)):
            out.append((seed_for(counter, entry, h, seed_hi=i % 2), counter, entry))
    return out


def test_the_extreme_triples_really_hash_to_the_extremes():
    for (seed, counter, entry), want in zip(extreme_triples(), [h for h in EXTREME_HASHES for _ in range(4)]):
        assert int(entry_hashes(seed, counter, torch.tensor([entry]))[0]) == want


def natural_old_failures(seed: int, counters: range) -> list[tuple[int, int, int]]:
    """Found, not made: (seed, counter, entry) in an ordinary seed's draws where the hash's
    top 24 bits are all ones."""
    keys = vocab_keys(V)
    found = []
    for c0 in range(counters.start, counters.stop, 512):
        cs = torch.arange(c0, min(c0 + 512, counters.stop))
        rows = torch.cat([row_hashes(torch.tensor([seed]), c.reshape(())) for c in cs])
        h = fmix32(rows[:, None] ^ keys[None, :])
        for r, e in (h >> 8 == 2**24 - 1).nonzero().tolist():
            found.append((seed, int(cs[r]), e))
    return found


# -- 1. the noise is finite by construction ---------------------------------------------------

def test_uniform_is_strictly_inside_0_1_for_every_hash():
    """Exhaustive: the mapping reads the top UNIFORM_BITS bits of the hash, so all 2**UNIFORM_BITS
    values of them (each with the low bits all zeros and all ones) cover every 32-bit hash."""
    low = (1 << (32 - UNIFORM_BITS)) - 1
    top = 2**UNIFORM_BITS
    prev_max = 0.0
    for start in range(0, top, 2**21):
        m = torch.arange(start, min(start + 2**21, top), dtype=torch.int64)
        for h in (m << (32 - UNIFORM_BITS), (m << (32 - UNIFORM_BITS)) | low):
            u = uniform_from_hash(h)
            assert u.dtype == torch.float32
            assert bool((u > 0).all()) and bool((u < 1).all())
            # strictly increasing in the hash: no two values of m collapse onto one float
            assert bool((u[1:] > u[:-1]).all()) and float(u[0]) > prev_max
            g = gumbel_noise_of_uniform(u)
            assert bool(g.isfinite().all())
            assert float(g.min()) >= NOISE_MIN - F32_SLACK and float(g.max()) <= NOISE_MAX + F32_SLACK
        prev_max = float(u[-1])


def gumbel_noise_of_uniform(u: torch.Tensor) -> torch.Tensor:
    from heartmula.mula.sampling import gumbel_from_uniform

    return gumbel_from_uniform(u)


def test_noise_bounds_are_the_noise_of_the_extreme_uniforms():
    u = uniform_from_hash(torch.tensor([0, M32]))
    g = gumbel_noise_of_uniform(u)
    assert math.isclose(float(g[0]), NOISE_MIN, rel_tol=1e-6) and math.isclose(float(g[1]), NOISE_MAX, rel_tol=1e-6)


def test_noise_is_finite_at_the_extreme_triples():
    keys = vocab_keys(V)
    for seed, counter, entry in extreme_triples():
        g = gumbel_noise(torch.tensor([seed]), torch.tensor(counter), keys)
        assert bool(g.isfinite().all()), (seed, counter, entry)


def test_the_noise_still_follows_the_gumbel_distribution():
    """Mean 0.5772 (Euler's constant) and variance pi**2 / 6, to sampling error."""
    g = gumbel_noise(torch.arange(64), torch.tensor(3), vocab_keys(V)).double().flatten()  # 524,608 values
    n = g.numel()
    assert abs(float(g.mean()) - 0.5772157) < 5 * math.sqrt(math.pi**2 / 6 / n)
    assert abs(float(g.var()) - math.pi**2 / 6) < 0.02


# -- 2. masked entries can never be drawn ---------------------------------------------------------

def test_masked_entries_lose_even_against_infinite_or_nan_noise(monkeypatch):
    """draw itself keeps the mask: a future noise that returns +inf or NaN still cannot pick
    an entry below the threshold."""
    import heartmula.mula.sampling as sampling

    scores = torch.tensor([[5.0, 0.3, -1.0, 4.0, 2.0]]).repeat(3, 1)
    kth = torch.tensor([[4.0]]).repeat(3, 1)  # entries 0 and 3 are kept
    for bad in (float("inf"), float("nan")):
        def noisy(seeds, counter, keys, bad=bad):
            g = torch.zeros(len(seeds), keys.numel())
            g[:, 1] = bad  # a masked entry gets the bad value
            g[1, :] = bad  # and a whole row does
            return g

        monkeypatch.setattr(sampling, "gumbel_noise", noisy)
        codes = draw(scores, kth, torch.arange(3), torch.tensor(0), vocab_keys(5))
        assert set(codes.tolist()) <= {0, 3}, (bad, codes)


def test_a_threshold_of_minus_infinity_never_draws_minus_infinity():
    """k above the number of finite scores: the -inf entries tie the threshold but are never drawn."""
    scores = torch.full((200, V), float("-inf"))
    scores[:, 17] = -3.0
    scores[:, 4000] = -2.5
    kth = topk_threshold(scores, torch.tensor(50))
    assert bool((kth == float("-inf")).all())
    codes = draw(scores, kth, torch.arange(200), torch.tensor(9), vocab_keys(V))
    assert set(codes.tolist()) == {17, 4000}


@pytest.mark.parametrize("guided", [False, True])
def test_nan_logits_are_never_drawn_and_take_no_topk_place(guided):
    """A broken row with NaN logits (or -inf in both rows of a guided take, whose difference is
    NaN) ranks those entries below every number: the draw stays among the top k of the rest,
    on the torch path as on the kernel path (tests/test_kernels.py)."""
    g = torch.Generator().manual_seed(5)
    takes = 64
    logits = torch.randn(takes * (2 if guided else 1), V, generator=g)
    logits[:, ::2] = float("nan")
    if guided:
        logits[:, 1::4] = float("-inf")  # -inf - -inf: NaN scores too
    args = (torch.tensor(1.5), torch.tensor(1.0), torch.tensor(3), torch.arange(takes), torch.tensor(7), vocab_keys(V), guided)
    codes = pick_codes(logits, *args)[:takes]
    scores = guided_scores(logits, torch.tensor(1.5), torch.tensor(1.0), guided)
    finite = torch.where(scores.isnan(), float("-inf"), scores)
    top3 = finite.topk(3).indices
    assert bool((codes[:, None] == top3).any(dim=1).all()), codes
    assert len(set(codes.tolist())) > 1  # draws, not a fallback to one code


@pytest.mark.parametrize("seed,counter,entry", extreme_triples())
def test_extreme_hashes_draw_inside_the_topk(seed, counter, entry):
    """At an extreme hash, the entry is masked (worst score) and then the best score: it is
    drawn only when it is among the k best, and under k = 1 only when it is the argmax."""
    keys = vocab_keys(V)
    g = torch.Generator().manual_seed(counter ^ entry)
    logits = torch.randn(1, V, generator=g) * 3
    for bump in (-100.0, 100.0):
        row = logits.clone()
        row[0, entry] = bump
        for k in (1, 2, 50, 250):
            code = int(pick_codes(row, torch.tensor(1.5), torch.tensor(1.0), torch.tensor(k), torch.tensor([seed]),
                                  torch.tensor(counter), keys, False)[0])
            in_topk = row[0, code] >= row[0].topk(k).values[-1]
            assert in_topk, (seed, counter, entry, bump, k, code)
            if k == 1:
                assert code == int(row[0].argmax())


def test_natural_triples_of_the_old_bug_draw_the_argmax():
    """Seed 0's own draws, as the issue saw them: every (counter, entry) in the first 12,288
    counters (1,536 frames) whose hash's top 24 bits are all ones, under greedy sampling."""
    found = natural_old_failures(0, range(0, 12_288))
    assert len(found) >= 3  # ~6 expected: 12,288 * 8,197 / 2**24
    keys = vocab_keys(V)
    g = torch.Generator().manual_seed(1)
    for seed, counter, entry in found:
        logits = torch.randn(1, V, generator=g) * 3
        logits[0, entry] = -50.0  # masked under any small k
        code = pick_codes(logits, torch.tensor(1.5), torch.tensor(1.0), torch.tensor(1), torch.tensor([seed]),
                          torch.tensor(counter), keys, False)
        assert int(code[0]) == int(logits[0].argmax()), (seed, counter, entry)


# -- 3. properties over many seeds and counters ---------------------------------------------------

@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_drawn_code_is_always_among_the_k_best(guided, dtype):
    keys = vocab_keys(V)
    g = torch.Generator().manual_seed(7)
    takes = 64
    rows = takes * (2 if guided else 1)
    for counter in (0, 1, 97, 2**20 + 3, 2**40 + 5, 2**62):
        logits = (torch.randn(rows, V, generator=g) * 4).to(dtype)
        logits[:, :100] = logits[:, :100].round()  # ties
        for k in (1, 2, 50, 250, 8196, V):
            for temp in (0.05, 1.0, 5.0):
                seeds = torch.randint(0, 2**63 - 1, (takes,), generator=g)
                seeds[0], seeds[1] = 0, 2**63 - 1  # the seed range's ends
                cfg, t = torch.tensor(2.5), torch.tensor(temp)
                codes = pick_codes(logits, cfg, t, torch.tensor(k), seeds, torch.tensor(counter), keys, guided)
                scores = guided_scores(logits, cfg, t, guided)
                picked = scores.gather(1, codes[:takes, None])
                assert bool((picked >= scores.topk(min(k, V)).values[:, -1:]).all()), (counter, k, temp)
                if k == 1:
                    assert bool((picked == scores.max(1, keepdim=True).values).all())
                if guided:
                    assert torch.equal(codes[:takes], codes[takes:])


def test_a_temperature_near_zero_returns_the_argmax():
    """The noise is bounded (NOISE_MIN..NOISE_MAX), so once the best score leads the second
    by more than that span times the temperature, every draw is the argmax, whatever k."""
    keys = vocab_keys(V)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(256, V, generator=g)
    top2 = logits.topk(2).values
    gap = float((top2[:, 0] - top2[:, 1]).min())
    temp = gap / (NOISE_MAX - NOISE_MIN) * 0.99
    for counter in range(0, 400, 37):
        for k in (2, 50, V):
            codes = pick_codes(logits, torch.tensor(1.0), torch.tensor(temp), torch.tensor(k), torch.arange(256),
                               torch.tensor(counter), keys, False)
            assert torch.equal(codes, logits.argmax(1))


# -- 4. the distribution -----------------------------------------------------------------------

ALPHA = 1e-3  # each test's significance level; the draws are keyed, so a pass is reproducible


def chi_square_p(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square p-value; bins expected below 5 are pooled (with each other)."""
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)]) if small.any() else observed
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)]) if small.any() else expected
    keep = exp > 0
    if bool((obs[~keep] > 0).any()):  # a draw where the distribution has no mass
        return 0.0
    obs, exp = obs[keep].double(), exp[keep].double()
    if obs.numel() == 1:  # one outcome possible (k = 1), and every draw was it
        return 1.0
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = obs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))


N_SEEDS, COUNTERS = 500, range(100, 120)
N_DRAWS = N_SEEDS * len(COUNTERS)


def draw_many(logits: torch.Tensor, k: int, temp: float, sampler, n_seeds=N_SEEDS, counters=COUNTERS):
    """Histogram of draws from one logits row over n_seeds x len(counters) keyed draws."""
    keys = vocab_keys(V)
    counts = torch.zeros(V, dtype=torch.int64)
    scores = logits.expand(n_seeds, V)
    for c in counters:
        codes = sampler(scores, torch.tensor(temp), torch.tensor(k), torch.arange(n_seeds) * 7919 + 13,
                        torch.tensor(c), keys)
        counts += torch.bincount(codes, minlength=V)
    return counts


def real_sampler(scores, temp, k, seeds, counter, keys):
    return pick_codes(scores, torch.tensor(1.0), temp, k, seeds, counter, keys, False, topk_cap_for(int(k)))


def no_mask_sampler(scores, temp, k, seeds, counter, keys):
    s = guided_scores(scores, torch.tensor(1.0), temp, False)
    return draw(s, torch.full((len(s), 1), float("-inf")), seeds, counter, keys)


def no_temperature_sampler(scores, temp, k, seeds, counter, keys):
    return real_sampler(scores, torch.tensor(1.0), k, seeds, counter, keys)


def expected_counts(logits: torch.Tensor, k: int, temp: float, n: int) -> torch.Tensor:
    s = logits[0].double() / temp
    kth = s.topk(k).values[-1]
    p = torch.softmax(s.masked_fill(s < kth, float("-inf")), 0)
    return p * n


LOGITS = torch.randn(1, V, generator=torch.Generator().manual_seed(11)) * 2.0


@pytest.mark.parametrize("k", [1, 50, 250])
@pytest.mark.parametrize("temp", [0.7, 1.0, 1.3])
def test_draws_follow_softmax_over_the_topk(k, temp):
    n = N_DRAWS
    counts = draw_many(LOGITS, k, temp, real_sampler)
    exp = expected_counts(LOGITS, k, temp, n)
    p = chi_square_p(counts, exp)
    assert p > ALPHA, (k, temp, p)


@pytest.mark.parametrize("broken,k,temp", [(no_mask_sampler, 1, 0.7), (no_mask_sampler, 50, 0.7),
                                           (no_mask_sampler, 250, 1.3), (no_temperature_sampler, 50, 0.7),
                                           (no_temperature_sampler, 250, 1.3)])
def test_the_distribution_test_catches_a_dropped_mask_or_temperature(broken, k, temp):
    """The same test, fed a sampler without the mask or without the temperature, rejects it:
    it has the power to catch either mistake (at k = 1 the temperature cannot change a draw)."""
    counts = draw_many(LOGITS, k, temp, broken)
    assert chi_square_p(counts, expected_counts(LOGITS, k, temp, N_DRAWS)) < ALPHA


def test_draws_of_one_seed_over_counters_follow_softmax():
    """The other axis: one seed, 20,000 counters (a song's draws), top 50 at temperature 1."""
    keys = vocab_keys(V)
    counts = torch.zeros(V, dtype=torch.int64)
    for c0 in range(0, 20_000, 1000):
        codes = torch.cat([real_sampler(LOGITS, torch.tensor(1.0), torch.tensor(50), torch.tensor([42]),
                                        torch.tensor(c), keys) for c in range(c0, c0 + 1000)])
        counts += torch.bincount(codes, minlength=V)
    assert chi_square_p(counts, expected_counts(LOGITS, 50, 1.0, 20_000)) > ALPHA


# -- 5. the audit the benchmark runs at full size, here through the real frame loop ------------

@pytest.mark.parametrize("topk,takes,cfg", [(1, 1, 1.5), (1, 3, 1.0), (50, 2, 1.5)])
def test_every_draw_of_a_long_run_on_the_tiny_checkpoint_is_inside_the_topk(tiny_ckpt, mula_golden, topk, takes, cfg):
    """The real checkpoint loading and frame loop with every draw tallied against its scores
    (what `bench --what greedy` does on a GPU at full size): 0 draws outside the top k."""
    from heartmula.mula.load import load_heartmula
    from heartmula.mula.generate import GenerateOptions, StepBuffers, cache_length, generate_frames
    from heartmula.mula.prompt import GenConfig, build_prompt, load_tokenizer

    meta, _ = mula_golden
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", torch.device("cpu"), torch.float32)
    gen = GenConfig.from_file(tiny_ckpt / "gen_config.json")
    prompt = build_prompt(load_tokenizer(tiny_ckpt / "tokenizer.json"), meta["lyrics"], meta["tags"], gen)
    n = model.args.backbone.max_seq_len - len(prompt)  # every position the tiny backbone has
    opts = GenerateOptions(max_audio_length_ms=n * 80, takes=takes, cfg_scale=cfg, topk=topk, seed=0, ignore_eos=True)
    model.setup_caches(takes * (2 if opts.guided else 1), cache_length(len(prompt), n, model.args.backbone.max_seq_len))
    buf = StepBuffers(model, takes, opts.guided, audit=True)
    fr = generate_frames(model, prompt, gen, opts, buffers=buf)
    draws, below_kth, below_best = buf.tally.tolist()
    assert draws == n * takes * 8
    assert below_kth == 0
    if topk == 1:
        assert below_best == 0
    else:
        assert below_best > 0  # top-k 50 does sample: the tally would see a bad draw
    assert all(f.shape == (n, 8) for f in fr.frames)
