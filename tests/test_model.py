"""The model's structure and checkpoint loading, against the official layout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from heartmula.checkpoint import CheckpointError, resolve_paths
from heartmula.mula.load import load_heartmula
from heartmula.mula.model import FLAVORS, HeartMuLa, HeartMuLaArgs


def test_3b_state_dict_equals_official_manifest(golden_dir):
    manifest = json.loads((golden_dir / "manifest_heartmula_3b.json").read_text())
    with torch.device("meta"):
        model = HeartMuLa(HeartMuLaArgs.from_config(manifest["config"]))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v["shape"] for k, v in manifest["params"].items()}
    assert ours == theirs


def test_flavors_match_golden_table(golden_dir):
    table = json.loads((golden_dir / "flavors.json").read_text())
    assert set(table) <= set(FLAVORS)
    for name, f in table.items():
        a = FLAVORS[name]
        assert (a.n_layer, a.n_head, a.n_kv_head, a.dim, a.intermediate_dim, a.max_seq_len) == (
            f["num_layers"], f["num_heads"], f["num_kv_heads"], f["embed_dim"], f["intermediate_dim"], f["max_seq_len"])
        assert (a.rope_base, a.rope_scale_factor, a.rope_low_freq_factor, a.rope_high_freq_factor,
                a.rope_old_context_len) == (f["rope_base"], f["rope_scale_factor"], f["rope_low_freq_factor"],
                                            f["rope_high_freq_factor"], f["rope_old_context_len"])


def test_explicit_sizes_in_config():
    cfg = {"backbone": {"n_layer": 1, "n_head": 2, "n_kv_head": 1, "dim": 16, "intermediate_dim": 32, "max_seq_len": 64},
           "decoder_flavor": "llama-tiny-decoder", "audio_vocab_size": 37, "text_vocab_size": 50, "muq_dim": 4}
    args = HeartMuLaArgs.from_config(cfg)
    assert args.backbone.dim == 16 and args.decoder == FLAVORS["llama-tiny-decoder"]
    with pytest.raises(ValueError, match="llama-huge"):
        HeartMuLaArgs.from_config({"backbone_flavor": "llama-huge", "decoder_flavor": "llama-300M"})


def test_loads_tiny_checkpoint_exactly(tiny_ckpt):
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny", fuse=False)
    state = load_file(str(tiny_ckpt / "HeartMuLa-oss-tiny" / "model.safetensors"))
    ours = model.state_dict()
    assert set(ours) == set(state)
    for k, v in state.items():
        assert torch.equal(ours[k], v), k


def test_sharded_checkpoint_with_index(tiny_ckpt, tmp_path):
    src = tiny_ckpt / "HeartMuLa-oss-tiny"
    dst = tmp_path / "HeartMuLa-oss-tiny"
    dst.mkdir()
    shutil.copy(src / "config.json", dst)
    state = load_file(str(src / "model.safetensors"))
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(dst / fname))
        weight_map.update({k: fname for k in keys})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = load_heartmula(dst, dtype=torch.bfloat16)
    assert model.codebook0_head.weight.dtype == torch.bfloat16
    assert torch.equal(model.codebook0_head.weight.float(), state["codebook0_head.weight"].bfloat16().float())


def test_pickled_weights_are_refused(tiny_ckpt, tmp_path):
    dst = tmp_path / "HeartMuLa-oss-tiny"
    dst.mkdir()
    shutil.copy(tiny_ckpt / "HeartMuLa-oss-tiny" / "config.json", dst)
    (dst / "pytorch_model.bin").write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(CheckpointError, match=r"pickled weights \(pytorch_model.bin\).*refused"):
        load_heartmula(dst)


def test_missing_pieces_name_the_path_and_the_fix(tiny_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"HeartMuLa-oss-3B.*found versions: tiny.*download"):
        resolve_paths(tiny_ckpt, "3B")
    root = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, root)
    (root / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=f"expected {root / 'tokenizer.json'}.*python -m heartmula download"):
        resolve_paths(root, "tiny")


def test_unknown_and_missing_keys_are_named(tiny_ckpt, tmp_path):
    dst = tmp_path / "m"
    dst.mkdir()
    shutil.copy(tiny_ckpt / "HeartMuLa-oss-tiny" / "config.json", dst)
    state = load_file(str(tiny_ckpt / "HeartMuLa-oss-tiny" / "model.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    del state["projection.weight"]
    save_file(state, str(dst / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: projection.weight.*unknown keys: extra.weight"):
        load_heartmula(dst)


def test_setup_caches_is_idempotent(tiny_ckpt):
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny")
    model.setup_caches(2, 128)
    ptr = model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr()
    model.setup_caches(2, 128)
    assert model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr() == ptr
    model.setup_caches(1, 128)  # fewer rows (cfg switched off): the first row of the same store
    assert model.backbone.layers[0].attn.kv_cache.k_cache.shape[0] == 1
    assert model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr() == ptr
    with pytest.raises(ValueError, match="exceeds"):
        model.setup_caches(1, 10_000)


def test_caches_are_views_of_a_store_that_grows_only_when_outgrown(tiny_ckpt):
    model = load_heartmula(tiny_ckpt / "HeartMuLa-oss-tiny")
    kv = lambda: model.backbone.layers[0].attn.kv_cache  # noqa: E731
    model.setup_caches(4, 128)
    ptr = kv().k_cache.data_ptr()
    model.setup_caches(2, 64)  # smaller: a view, the store's length kept
    assert kv().k_cache.data_ptr() == ptr and kv().k_cache.shape[0] == 2 and model.backbone.cache_len == 128
    model.setup_caches(2, 200)  # longer than the store: replaced by one of the size asked (no reservation)
    assert kv().k_cache.shape[0] == 2 and model.backbone.cache_len == 200 and model.backbone.cache_rows == 2
    # every layer and the depth decoder follow; writes through a view land in the store
    assert all(layer.attn.kv_cache.k_cache.shape[0] == 2 for layer in model.decoder.layers)
    model.reserve_caches(6, 256)
    ptr = kv().k_cache.data_ptr()
    for rows, length in [(1, 16), (6, 256), (3, 100), (2, 256)]:
        model.setup_caches(rows, length)
        assert kv().k_cache.data_ptr() == ptr and kv().k_cache.shape[0] == rows and model.backbone.cache_len == 256
    assert model.cache_bytes(6, 256) == sum(k.numel() * k.element_size() * 2 for m in (model.backbone, model.decoder)
                                           for k, _ in m._store)
    model.setup_caches(8, 64)  # more rows than reserved: a larger store, still the reserved length
    assert model.backbone.cache_rows == 8 and model.backbone.cache_len == 256 and model.backbone.reserved == (6, 256)
    model.free_caches()  # ends the reservation
    assert model.backbone.reserved == (0, 0) and model.backbone.cache_len == 0 and kv() is None
