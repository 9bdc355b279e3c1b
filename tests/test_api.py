"""The studio's named API endpoints through gradio_client, against app.py on the tiny checkpoint."""

from __future__ import annotations

import pytest
import soundfile as sf

pytestmark = pytest.mark.browser  # needs the running app, like the browser tests

LYRICS = "[verse]\nhello world\n[chorus]\nsing it loud\n"


@pytest.fixture(scope="module")
def client(studio_app):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(studio_app.url, verbose=False)


def test_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert {"/generate", "/transcribe", "/compare"} <= set(api["named_endpoints"])
    params = {ep: [p["parameter_name"] for p in api["named_endpoints"][ep]["parameters"]]
              for ep in ("/generate", "/transcribe", "/compare")}
    assert params["/generate"] == ["lyrics", "tags", "max_audio_length_s", "cfg_scale", "temperature", "topk",
                                   "seed", "takes", "ignore_eos", "codec_steps", "codec_guidance_scale"]
    assert params["/transcribe"] == ["audio", "batch_size", "chunk_length_s", "language"]
    assert params["/compare"] == ["names", "lyrics", "tags", "max_audio_length_s", "seed"]
    assert not any(p.startswith("param_") for ps in params.values() for p in ps)


def test_generate_endpoint(client, studio_app):
    before = len(studio_app.sidecars())
    out = client.predict(lyrics=LYRICS, tags="rock, guitar", max_audio_length_s=2, seed="77",
                         takes=2, ignore_eos=True, codec_steps=2, api_name="/generate")
    status, audios = out[0], out[1:9]
    assert "2 take(s)" in status and "seed 77" in status
    played = [a["value"] for a in audios if isinstance(a, dict) and a.get("visible") and a.get("value")]
    assert len(played) == 2
    for path in played:
        audio, rate = sf.read(path)
        assert rate == 48_000 and audio.shape == (25 * 3840, 2)  # 2 s = 25 frames
    metadata = out[10]
    assert [m["seed"] for m in metadata] == [77, 78] and metadata[0]["tags"] == "rock, guitar"
    assert len(studio_app.sidecars()) == before + 2


def test_generate_endpoint_bad_input(client, studio_app):
    from gradio_client.exceptions import AppError

    before = len(studio_app.sidecars())
    short = dict(max_audio_length_s=2, seed="1", codec_steps=2, ignore_eos=True, api_name="/generate")
    # Wrong values and types answer in the studio's words (the option's own check), never {"error": null}
    for bad, message in (({"temperature": 99.0}, "temperature=99.0 is out of range; allowed: 0.05 to 5.0"),
                         ({"topk": "abc"}, "topk must be a number, got 'abc'"),
                         ({"cfg_scale": None}, "cfg_scale is empty"),
                         ({"seed": "nan"}, "seed must be a finite number"),
                         ({"seed": "-1"}, "seed=-1 is out of range"),
                         ({"takes": 2.5}, "takes must be a whole number, got 2.5")):
        with pytest.raises(AppError, match=message.replace("(", r"\(")):
            client.predict(lyrics=LYRICS, tags="rock", **{**short, **bad})
    with pytest.raises(AppError, match="shorten the lyrics or the length"):  # the tiny model holds ~15 s
        client.predict(lyrics=LYRICS, tags="rock", **{**short, "max_audio_length_s": 60})
    with pytest.raises(AppError, match="lyrics are empty"):
        client.predict(lyrics="  ", tags="rock", **short)
    assert len(studio_app.sidecars()) == before


def test_transcribe_endpoint(client, speak, tmp_path):
    from gradio_client import handle_file

    clip = speak(["the quick brown fox", "jumps over the lazy dog"], tmp_path / "fox.wav")
    text, segments, files, speed = client.predict(audio=handle_file(str(clip)), batch_size=8, chunk_length_s=30,
                                                  api_name="/transcribe")
    assert "fox" in text.lower() and "lazy" in text.lower(), text
    assert segments["data"] and len(segments["data"][0]) == 3
    assert sorted(p.rsplit(".", 1)[1] for p in files) == ["lrc", "srt", "txt"]
    assert "real-time factor (lower is faster)" in speed


def test_the_readme_api_example_runs(studio_app, capsys):
    import re

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- api-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block, "README lost its API example"
    code = block.group(1).replace("http://127.0.0.1:7860/", studio_app.url)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert "✅" in namespace["status"] and "seed 42" in namespace["status"]
    audio, rate = sf.read(namespace["take_1"]["value"])
    assert rate == 48_000 and audio.shape[0] > 0


def test_extend_and_regenerate_endpoints(client, studio_app):
    import json

    before = set(studio_app.sidecars())
    client.predict(lyrics=LYRICS, tags="folk", max_audio_length_s=2, seed="5", ignore_eos=True, codec_steps=2,
                   api_name="/generate")
    (song,) = set(studio_app.sidecars()) - before
    before = set(studio_app.sidecars())
    client.predict(song_id=song.stem, seconds=1, lyrics="", api_name="/extend")
    (longer,) = set(studio_app.sidecars()) - before
    assert json.loads(longer.read_text())["parent"]["id"] == song.stem
    before = set(studio_app.sidecars())
    client.predict(song_id=longer.stem, at="0:01", takes=2, lyrics="", api_name="/regenerate")
    assert len(set(studio_app.sidecars()) - before) == 2
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="give a time from"):
        client.predict(song_id=song.stem, at="9:00", takes=1, lyrics="", api_name="/regenerate")
    with pytest.raises(AppError, match="no song"):
        client.predict(song_id="../../etc/passwd", seconds=1, lyrics="", api_name="/extend")
    for seconds in (-5, 0):  # answered in the studio's words (gradio's own range check logged a traceback)
        with pytest.raises(AppError, match="seconds to add must be more than 0"):
            client.predict(song_id=song.stem, seconds=seconds, lyrics="", api_name="/extend")
