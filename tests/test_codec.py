"""HeartCodec decoder: golden parity with the reference, windowing, streaming, batching, loading."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from heartmula.audio import SAMPLES_PER_FRAME
from heartmula.checkpoint import CheckpointError, read_json
from heartmula.codec.decoder import (
    HOP_FRAMES,
    IGNORED_KEY,
    IGNORED_PREFIXES,
    OVERLAP_FRAMES,
    OVERLAP_SAMPLES,
    WINDOW_FRAMES,
    CodecConfig,
    HeartCodec,
    _Take,
    load_codec,
    n_windows_for,
    pad_codes,
)

FAST_STEPS = 2  # Euler steps for tests that check shapes and plumbing, not values


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These tests share a 2-core machine with other jobs; two spinning OpenMP threads per
    # process then run several times slower than one. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
    if not path.is_dir():
        pytest.skip(f"golden data not found at {path}")
    return path


@pytest.fixture(scope="module")
def codec_dir(golden_dir: Path) -> Path:
    return golden_dir / "ckpt_tiny" / "HeartCodec-oss"


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "heartcodec_tiny_golden.safetensors"))


@pytest.fixture(scope="module")
def codec(codec_dir: Path) -> HeartCodec:
    return load_codec(codec_dir)


@pytest.fixture(scope="module")
def golden_decode(codec: HeartCodec, golden) -> np.ndarray:
    # As the golden JSON describes: torch.manual_seed(7), then decode with the defaults.
    torch.manual_seed(7)
    return codec.decode(golden["detok_codes"])


@pytest.fixture(scope="module")
def one_frame(codec: HeartCodec, golden) -> np.ndarray:
    return codec.decode(golden["detok_codes"][:, :1], num_steps=FAST_STEPS,
                        generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def one_window(codec: HeartCodec, golden) -> np.ndarray:
    return codec.decode(golden["detok_codes"][:, :WINDOW_FRAMES], num_steps=FAST_STEPS,
                        generator=torch.Generator().manual_seed(6))


# ---- golden parity (float32, CPU) ------------------------------------------------------------

def test_rvq_decode_matches_golden(codec, golden):
    with torch.inference_mode():
        out = codec.flow_matching.vq_embed.decode(golden["rvq_codes"])
    assert out.shape == golden["rvq_out"].shape
    assert rel_err(out, golden["rvq_out"]) < 1e-4


def test_estimator_matches_golden(codec, golden):
    with torch.inference_mode():
        out = codec.flow_matching.estimator(golden["estimator_in"], golden["estimator_t"])
    assert out.shape == golden["estimator_out"].shape
    assert rel_err(out, golden["estimator_out"]) < 1e-4


def test_scalar_decode_matches_golden(codec, golden):
    with torch.inference_mode():
        out = codec.scalar_model.decode(golden["sq_decode_in"])
    assert out.shape == golden["sq_decode_out"].shape
    assert rel_err(out, golden["sq_decode_out"]) < 1e-4


def test_detokenize_matches_golden(golden_decode, golden):
    n_frames = golden["detok_codes"].shape[1]
    assert golden_decode.dtype == np.float32
    assert list(golden_decode.shape) == golden["detok_wav_shape"].tolist() == [2, n_frames * SAMPLES_PER_FRAME]
    head, tail = golden["detok_wav_head"], golden["detok_wav_tail"]
    assert rel_err(golden_decode[:, : head.shape[1]], head) < 1e-4
    assert rel_err(golden_decode[:, -tail.shape[1]:], tail) < 1e-4


def test_stream_equals_decode_and_yields_per_window(codec, golden, golden_decode):
    progress = []
    torch.manual_seed(7)
    chunks = list(codec.decode_stream(golden["detok_codes"], on_progress=lambda d, t: progress.append((d, t))))
    assert progress == [(1, 2), (2, 2)]
    # The first window's audio is final up to where the next window's crossfade starts.
    assert [c.shape[1] for c in chunks] == [HOP_FRAMES * SAMPLES_PER_FRAME,
                                            golden_decode.shape[1] - HOP_FRAMES * SAMPLES_PER_FRAME]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), golden_decode)


# ---- lengths, windows and seams ------------------------------------------------------------------

def test_decode_one_frame(one_frame):
    assert one_frame.shape == (2, SAMPLES_PER_FRAME) and one_frame.dtype == np.float32
    assert np.isfinite(one_frame).all() and np.abs(one_frame).max() > 0


def test_decode_exactly_one_window(one_window):
    assert n_windows_for(WINDOW_FRAMES) == 1
    assert one_window.shape == (2, WINDOW_FRAMES * SAMPLES_PER_FRAME)
    assert np.isfinite(one_window).all() and np.abs(one_window).max() > 0


def test_generator_and_global_seed_draw_the_same_noise(codec, golden, one_frame):
    torch.manual_seed(5)  # the default path draws from torch's global generator; numpy codes work too
    again = codec.decode(golden["detok_codes"][:, :1].numpy(), num_steps=FAST_STEPS)
    np.testing.assert_array_equal(again, one_frame)


def test_several_windows_length_and_seams(codec, golden):
    n_frames = 700  # 3 windows: 0..372, 320..692, 640..1012 (padded by repeating the song)
    codes = golden["detok_codes"][:, torch.arange(n_frames) % golden["detok_codes"].shape[1]]
    assert n_windows_for(n_frames) == 3
    audio = codec.decode(codes, num_steps=FAST_STEPS, generator=torch.Generator().manual_seed(1))
    assert audio.shape == (2, n_frames * SAMPLES_PER_FRAME)
    assert np.isfinite(audio).all()
    steps = np.abs(np.diff(audio.astype(np.float64), axis=1))
    typical = np.percentile(steps, 99.9)
    hop = HOP_FRAMES * SAMPLES_PER_FRAME
    for k in (1, 2):  # crossfade k starts at k*hop and ends OVERLAP_SAMPLES later
        for edge in (k * hop, k * hop + OVERLAP_SAMPLES):
            assert steps[:, edge - 8 : edge + 8].max() < 1.5 * typical, f"jump at seam {k}, sample {edge}"
    # The loudness does not collapse or blow up around the seams.
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    for k in (1, 2):
        around = audio[:, k * hop : k * hop + OVERLAP_SAMPLES]
        assert 0.5 < rms(around) / rms(audio) < 2.0


def test_crossfade_is_linear_and_continuous():
    # Two windows of constant level 1 then 3: the overlap must ramp linearly from 1 to 3.
    take = _Take(codes=torch.zeros(8, 1), noise=[], target_samples=0)
    window = WINDOW_FRAMES * SAMPLES_PER_FRAME
    first = HeartCodec._crossfade(take, torch.ones(2, window), last=False)
    second = HeartCodec._crossfade(take, torch.full((2, window), 3.0), last=True)
    assert first.shape[1] == window - OVERLAP_SAMPLES and np.all(first == 1)
    assert second.shape[1] == window
    ramp = second[:, :OVERLAP_SAMPLES]
    np.testing.assert_allclose(ramp[0], 1 + 2 * np.linspace(0, 1, OVERLAP_SAMPLES), rtol=1e-6)
    assert np.all(second[:, OVERLAP_SAMPLES:] == 3)
    assert np.abs(np.diff(np.concatenate([first, second], axis=1))).max() < 1e-4


@pytest.mark.parametrize("n_frames", [1, 5, 371, 372, 373, 424, 692, 693, 744, 7500])
def test_padding_rule(n_frames):
    codes = torch.arange(n_frames).repeat(8, 1)
    padded = pad_codes(codes)
    n_windows = n_windows_for(n_frames)
    assert padded.shape == (8, n_windows * HOP_FRAMES + OVERLAP_FRAMES)
    # Windows cover the song; the padding repeats it from its start.
    assert (n_windows - 1) * HOP_FRAMES + WINDOW_FRAMES >= n_frames
    assert torch.equal(padded[:, :n_frames], codes)
    assert torch.equal(padded[0], torch.arange(padded.shape[1]) % n_frames)


# ---- batching ------------------------------------------------------------------------------------

def test_decode_batch_equals_separate_decodes(codec, golden, one_frame):
    codes = golden["detok_codes"]
    alone = codec.decode(codes[:, 100:130], num_steps=FAST_STEPS, generator=torch.Generator().manual_seed(9))
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(9)]
    progress = []
    outs = codec.decode_batch([codes[:, :1], codes[:, 100:130]], num_steps=FAST_STEPS, generators=gens,
                              on_progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (2, 2)
    assert outs[0].shape == one_frame.shape and outs[1].shape == alone.shape == (2, 30 * SAMPLES_PER_FRAME)
    # Batched matrix products may round differently from single ones; nothing else differs.
    assert rel_err(outs[0], one_frame) < 1e-5
    assert rel_err(outs[1], alone) < 1e-5
    # Different takes got different noise (the batch rows are not mixed up or shared).
    assert rel_err(outs[0][:, :SAMPLES_PER_FRAME], outs[1][:, :SAMPLES_PER_FRAME]) > 1e-2


# ---- precision -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_low_precision_estimator(codec_dir, golden, dtype, tol):
    codec = load_codec(codec_dir, dtype=dtype)
    assert codec.flow_matching.estimator.transformer_blocks[0].attn.q_proj.weight.dtype == dtype
    # Time conditioning, norms and the scalar decoder stay float32.
    assert codec.flow_matching.estimator.adaln_single.linear.weight.dtype == torch.float32
    assert codec.scalar_model.decoder[0].weight.dtype == torch.float32
    with torch.inference_mode():
        out = codec.flow_matching.estimator(golden["estimator_in"], golden["estimator_t"])
    assert out.dtype == torch.float32
    err = rel_err(out, golden["estimator_out"])
    assert 0 < err < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_codec_streamed_to_its_device_is_the_one_loaded_through_the_host(codec_dir, dtype):
    """Off the CPU the codec is read straight to its device, a group of tensors at a time, each
    cast as it arrives and the encoder's never kept (the language model's loader): the same
    parameters, bit for bit, as reading it on the host, folding and casting there."""
    from heartmula import checkpoint

    reads = []
    real = checkpoint.load_state_dict

    def spy(*args, **kwargs):
        reads.append(kwargs.get("streamed"))
        return real(*args, **kwargs)

    import heartmula.codec.decoder as decoder

    host = load_codec(codec_dir, dtype=dtype, streamed=False)
    decoder.load_state_dict, saved = spy, decoder.load_state_dict
    try:
        streamed = load_codec(codec_dir, dtype=dtype, streamed=True)
    finally:
        decoder.load_state_dict = saved
    assert reads == [True]
    a, b = dict(host.named_parameters()), dict(streamed.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].device == b[name].device, name
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


# ---- checkpoint keys -----------------------------------------------------------------------------

def test_real_config_keys_match_manifest(golden_dir):
    manifest = read_json(golden_dir / "manifest_heartcodec.json")
    config = CodecConfig.from_dict(manifest["config"])
    assert (config.num_layers, config.num_layers_2, config.dim) == (24, 6, 512)
    with torch.device("meta"):
        model = HeartCodec(config)
    expected = {k: list(v) for k, v in model.checkpoint_shapes().items()}
    params = {k: v["shape"] for k, v in manifest["params"].items()}
    ignored = {k for k in params if k.startswith(IGNORED_PREFIXES) or IGNORED_KEY.fullmatch(k)}
    assert {k: params[k] for k in params if k not in ignored} == expected
    # The ignored ones are exactly the encoder and the RVQ's EMA statistics.
    assert ignored == {k for k in params if k.startswith("scalar_model.encoder.")} | {
        f"flow_matching.vq_embed.layers.{q}._codebook.{name}"
        for q in range(8) for name in ("cluster_size", "embed_avg", "initted")}


def _copy_checkpoint(codec_dir: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    shutil.copy(codec_dir / "config.json", dest / "config.json")
    state = load_file(str(codec_dir / "model.safetensors"))
    edit(state)
    save_file(state, str(dest / "model.safetensors"))
    return dest


def test_unknown_key_is_an_error_naming_it(codec_dir, tmp_path):
    folder = _copy_checkpoint(codec_dir, tmp_path / "extra",
                              lambda s: s.__setitem__("flow_matching.estimator.surprise.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unknown keys: flow_matching\.estimator\.surprise\.weight"):
        load_codec(folder)


def test_missing_key_is_an_error_naming_it(codec_dir, tmp_path):
    key = "scalar_model.decoder.3.convs.2.conv1.parametrizations.weight.original0"
    folder = _copy_checkpoint(codec_dir, tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match="missing keys: " + re.escape(key)):
        load_codec(folder)


def test_wrong_shape_is_an_error_naming_it(codec_dir, tmp_path):
    key = "flow_matching.cond_feature_emb.bias"
    folder = _copy_checkpoint(codec_dir, tmp_path / "shape", lambda s: s.__setitem__(key, torch.zeros(7)))
    with pytest.raises(CheckpointError, match="shape mismatches: " + re.escape(key)):
        load_codec(folder)


def test_ignored_keys_may_be_absent(codec_dir, tmp_path):
    def drop(state):
        for k in [k for k in state if k.startswith("scalar_model.encoder.") or k.endswith("embed_avg")]:
            del state[k]
    folder = _copy_checkpoint(codec_dir, tmp_path / "lean", drop)
    load_codec(folder)


# ---- input checks --------------------------------------------------------------------------------

def test_bad_codes_are_rejected(codec, golden):
    codes = golden["detok_codes"][:, :10]
    with pytest.raises(ValueError, match=r"pass codes\.T"):
        codec.decode(codes.T)
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codec.decode(codes + 60)
    with pytest.raises(ValueError, match="integers"):
        codec.decode(codes.float())
    with pytest.raises(ValueError, match="num_steps"):
        codec.decode(codes, num_steps=0)
    with pytest.raises(ValueError, match="dtype"):
        load_codec(Path("unused"), dtype=torch.float64)


# ----- the scalar decoder in time chunks (issue 21: the decode's peak memory) -------------------
class LiveBytes:
    """Peak bytes of the tensors ops make while it is on (storages counted once, views free;
    weights and inputs not counted): what a decode holds beside its weights, on any device."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        owner = self
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors on it]
        self.now = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else [out]:
                    if isinstance(t, torch.Tensor):
                        owner._track(t)
                return out

        self.mode = Mode()

    def _track(self, t: torch.Tensor) -> None:
        import weakref

        s = t.untyped_storage()
        key = s.data_ptr()
        if key not in self.live:
            self.live[key] = [s.nbytes(), 0]
            self.now += s.nbytes()
            self.peak = max(self.peak, self.now)
        self.live[key][1] += 1
        weakref.finalize(t, self._drop, key)

    def _drop(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def random_scalar_decoder(seed: int = 0):
    from heartmula.codec.scalar import ScalarDecoder, ScalarDecoderArgs

    torch.manual_seed(seed)
    dec = ScalarDecoder(ScalarDecoderArgs(init_channel=4)).eval()  # the tiny codec's widths, real strides
    for m in dec.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.init.normal_(m.weight, 0.0, (1.0 / (m.weight.shape[1] * m.weight.shape[2])) ** 0.5)
    return dec


@pytest.mark.parametrize("seed", range(6))
def test_scalar_decode_in_chunks_is_the_whole_decode(seed, codec):
    """Decoded a chunk at a time (each with the latents its first samples reach back to), the
    audio is the whole decode's: random lengths and chunk sizes, edges included (a chunk of one
    latent, chunks longer than the song, a song shorter than the context)."""
    rng = np.random.default_rng(seed)
    decoders = [codec.scalar_model, random_scalar_decoder(seed)]
    for n, chunk in [(1, 1), (3, 1), (50, 7), (int(rng.integers(2, 400)), int(rng.integers(1, 200))),
                     (int(rng.integers(45, 120)), 44), (200, 500)]:
        latent = torch.from_numpy(rng.uniform(-1, 1, (2, 128, n)).astype(np.float32))
        for dec in decoders:
            with torch.inference_mode():
                whole = dec.decode(latent, chunk=None)
                parts = dec.decode(latent, chunk=chunk)
            assert parts.shape == whole.shape == (2, 1, n * dec.args.hop_length)
            # float32 rounding only (the convolutions' kernels may sum in another order for
            # another length): within a few ulps of the loudest sample
            err = float((parts - whole).abs().max() / whole.abs().max())
            assert err < 3e-6, (n, chunk, err)


def test_too_little_context_would_change_the_audio(monkeypatch):
    """The control: chunks given fewer steps before them than the decoder reaches are wrong."""
    from heartmula.codec.scalar import ScalarDecoder

    dec = random_scalar_decoder()
    latent = torch.rand(2, 128, 120) * 2 - 1
    with torch.inference_mode():
        whole = dec.decode(latent, chunk=None)
        monkeypatch.setattr(ScalarDecoder, "left_context", property(lambda self: 30))
        parts = dec.decode(latent, chunk=40)
    assert float((parts - whole).abs().max() / whole.abs().max()) > 1e-3


def test_the_left_context_is_how_far_back_the_decoder_reaches():
    """Changing latent t0 changes audio from latent t0 - 2 (the first conv looks 2 ahead) to
    at most latent t0 + left_context, and no further: the context each chunk is given covers it."""
    dec = random_scalar_decoder()
    hop, reach = dec.args.hop_length, dec.left_context
    assert 40 <= reach <= 50  # 44 for the real strides and dilations
    n, t0 = 3 * reach, reach
    latent = torch.rand(1, 128, n) * 2 - 1
    moved = latent.clone()
    moved[..., t0] += 0.5
    with torch.inference_mode():
        diff = (dec.decode(latent, chunk=None) - dec.decode(moved, chunk=None)).abs()[0, 0]
    changed = torch.nonzero(diff > 0).flatten()
    assert changed.min() >= (t0 - 2) * hop
    assert changed.max() < (t0 + reach + 1) * hop
    assert changed.max() >= (t0 + reach - 8) * hop  # and not far less: the bound is close


def test_scalar_decode_memory_does_not_grow_with_the_window():
    """A 30 s window's audio is made a chunk at a time: the decoder's largest activations (64
    channels at 48 kHz, ~3 MB a latent in float32 at the real widths) are held for one chunk,
    not for the window's 744 latents (~2.2 GB of the 6.5 GiB peak of a low-memory song)."""
    dec = random_scalar_decoder()
    held = {}
    for n in (400, 744):  # both have chunks of a full context before them
        latent = torch.rand(2, 128, n) * 2 - 1
        with torch.inference_mode(), LiveBytes() as mem:
            audio = dec.decode(latent)
        held[n] = mem.peak - audio.nbytes  # the audio itself grows with the window, one channel
    assert held[744] < 1.1 * held[400], held
