"""The History library (issue 16): titles, favourites and search over an sqlite index that is
built from the sidecars, follows them, and is rebuilt when missing, stale or damaged."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest

from heartmula import History
from heartmula.library.index import DB_NAME, SCHEMA_VERSION, default_title, search_words

from test_history import BAD_SIDECARS, _result


def _song(h, lyrics="[verse]\nhello", tags="pop, piano", **kw):
    return h.save(replace(_result(tags=tags, **kw), lyrics=lyrics))


def _ids(h, query="", **kw):
    return [e.id for e in h.find(query, **kw)[0]]


@pytest.mark.parametrize("lyrics,tags,title", [
    ("[verse]\nMorning light on the pane\nmore", "pop", "Morning light on the pane"),
    ("\n\n  [intro]  \n\n[verse]\n   Two   spaces  here \n", "pop", "Two spaces here"),
    ("[verse]\n[chorus]\n", "rock, loud", "rock, loud"),
    ("", "", "Untitled"),
    ("x" * 500, "", "x" * 119 + "…"),
    ("[not a tag line\nnext", "", "[not a tag line"),
])
def test_default_title_is_the_first_sung_line(lyrics, tags, title):
    assert default_title(lyrics, tags) == title


def test_find_lists_what_scan_lists_newest_first_with_titles(tmp_path):
    h = History(tmp_path)
    a = _song(h, "[verse]\nfirst song line", tags="folk")[0]
    b = _song(h, "[verse]\nsecond song line", tags="rock", takes=2)
    entries, total = h.find()
    assert total == 3 and [e.id for e in entries] == [s.id for s in h.list()]
    assert {e.title for e in entries} == {"first song line", "second song line"}
    assert entries[-1].id == a.id and {e.take for e in entries[:2]} == {0, 1} and entries[0].takes == 2
    assert entries[0].seed in (7, 8) and entries[0].has_codes and not entries[0].favourite
    assert (tmp_path / DB_NAME).is_file()
    assert [e.id for e in h.find(limit=1)[0]] == [entries[0].id] and h.find(limit=1)[1] == 3
    assert _ids(History(tmp_path)) == [e.id for e in entries]  # a restart reads the same index
    assert b


def test_titles_and_favourites_live_in_the_sidecar(tmp_path):
    h = History(tmp_path)
    s = _song(h, "[verse]\nopening line")[0]
    other = _song(h, "[verse]\nanother")[0]
    h.set_title(s.id, "  My   Song \n title ")
    h.set_favourite(other.id, True)
    assert json.loads(s.sidecar_path.read_text())["title"] == "My Song title"
    assert json.loads(other.sidecar_path.read_text())["favourite"] is True
    assert {e.id: e.title for e in h.find()[0]}[s.id] == "My Song title"
    assert _ids(h, favourites=True) == [other.id]
    (tmp_path / DB_NAME).unlink()  # the index is only a cache of the sidecars
    again = History(tmp_path)
    assert _ids(again, favourites=True) == [other.id] and _ids(again, "my song") == [s.id]
    again.set_title(s.id, "")  # blank: back to the first lyric line
    again.set_favourite(other.id, False)
    assert {e.id: e.title for e in again.find()[0]}[s.id] == "opening line"
    assert _ids(again, favourites=True) == [] and "favourite" not in json.loads(other.sidecar_path.read_text())
    with pytest.raises(ValueError, match="no song"):
        again.set_title("nope", "x")


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_search_over_title_tags_and_lyrics(tmp_path, fts):
    h = History(tmp_path)
    h.index.sync()
    h.index.fts = fts and h.index.fts  # the LIKE path is what a sqlite without FTS5 runs
    rain = _song(h, "[verse]\nCoffee steam and the sound of rain", tags="jazz, piano")[0]
    sun = _song(h, "[verse]\nSunny day", tags="pop, guitar, café")[0]
    h.set_title(sun.id, "Summer anthem")
    assert _ids(h, "rain") == [rain.id] and _ids(h, "RAIN coffee") == [rain.id]  # every word, any case
    assert _ids(h, "summ") == [sun.id] and _ids(h, "guitar") == [sun.id] and _ids(h, "café") == [sun.id]
    assert _ids(h, "rain guitar") == [] and _ids(h, "zzz") == []
    assert set(_ids(h, "")) == {rain.id, sun.id} and set(_ids(h, "   ")) == {rain.id, sun.id}
    for hostile in ['"', "*", "rain*", "rain OR sunny", "NEAR(rain", "-rain", "'; DROP TABLE songs; --",
                    "%", "_", "\\", "title:rain", "^rain", "(", "AND", "\x00"]:
        found = _ids(h, hostile)  # never an sqlite error; operators are plain words here
        assert set(found) <= {rain.id, sun.id}, hostile
    assert _ids(h, "rain OR sunny") == []  # "or" is a word to match, not an operator
    assert _ids(h) and search_words("a-b c'd") == ["a", "b", "c", "d"]


def test_index_follows_the_folder(tmp_path):
    h = History(tmp_path)
    first = _song(h, "[verse]\none")[0]
    assert _ids(h) == [first.id]
    second = _song(History(tmp_path), "[verse]\ntwo")[0]  # saved by another process (the CLI)
    assert _ids(h) == [second.id, first.id]
    meta = json.loads(first.sidecar_path.read_text())
    first.sidecar_path.write_text(json.dumps({**meta, "title": "edited by hand", "lyrics": "[verse]\nnew words"}))
    assert _ids(h, "hand") == [first.id] and _ids(h, "words") == [first.id]
    audio = first.audio_path.read_bytes()
    first.audio_path.unlink()  # audio gone: skipped, and said why
    assert _ids(h) == [second.id] and [p.name for p, _ in h.skipped] == [first.sidecar_path.name]
    assert "missing" in h.skipped[0][1]
    first.audio_path.write_bytes(audio)  # back: listed again, with no change to the sidecar
    assert _ids(h) == [second.id, first.id] and h.skipped == []
    h.delete(second.id)
    assert _ids(h) == [first.id]


@pytest.mark.parametrize("damage", ["garbage", "empty", "old-schema", "dropped-table"])
def test_a_damaged_or_old_index_is_built_again(tmp_path, damage):
    h = History(tmp_path)
    saved = [s.id for s in _song(h, takes=3)]
    h.set_favourite(saved[1], True)
    assert len(_ids(h)) == 3
    h.index.close()
    db = tmp_path / DB_NAME
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        con = sqlite3.connect(db)
        if damage == "old-schema":
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
        else:
            con.execute("DROP TABLE songs")
        con.commit()
        con.close()
    again = History(tmp_path)
    assert sorted(_ids(again)) == sorted(saved) and _ids(again, favourites=True) == [saved[1]]


def test_a_damaged_index_while_open_is_built_again(tmp_path):
    h = History(tmp_path)
    saved = _song(h)[0]
    assert _ids(h) == [saved.id]
    h.index._db.execute("DROP TABLE skipped")  # damaged under a running studio
    assert _ids(h) == [saved.id]


def test_unwritable_folder_lists_from_memory(tmp_path, monkeypatch):
    h = History(tmp_path)
    saved = _song(h)[0]
    db_path = tmp_path / DB_NAME
    db_path.mkdir()  # a folder where the database would go: it cannot be opened or replaced
    again = History(tmp_path)
    assert _ids(again) == [saved.id] and again.index.location == ":memory:"


def test_missing_folder_finds_nothing_then_sees_the_first_song(tmp_path):
    h = History(tmp_path / "later")
    assert h.find() == ([], 0) and not (tmp_path / "later").exists()
    saved = _song(h)[0]
    assert _ids(h) == [saved.id] and (tmp_path / "later" / DB_NAME).is_file()


@pytest.mark.parametrize("name,spoil", BAD_SIDECARS, ids=[b[0] for b in BAD_SIDECARS])
def test_one_bad_sidecar_never_hides_the_rest_of_the_library(tmp_path, name, spoil):
    h = History(tmp_path)
    good = _song(h, tags="good")[0]
    bad = _song(h, tags="bad")[0]
    bad.sidecar_path.write_bytes(spoil(json.loads(bad.sidecar_path.read_text())))
    assert _ids(h) == [good.id] and [p for p, _ in h.skipped] == [bad.sidecar_path]
    assert _ids(h, "good") == [good.id] and _ids(h) == [good.id]  # the second listing skips it again


@pytest.mark.parametrize("title,favourite", [(5, "yes"), (["a"], 1), ("", None), ("\n\n", True)])
def test_odd_title_and_favourite_fields_fall_back(tmp_path, title, favourite):
    h = History(tmp_path)
    s = _song(h, "[verse]\nreal first line")[0]
    meta = json.loads(s.sidecar_path.read_text())
    s.sidecar_path.write_text(json.dumps({**meta, "title": title, "favourite": favourite}))
    (entry,), _ = h.find()
    assert entry.title == "real first line" and entry.favourite is (favourite is True)


def test_family_of_a_song_and_its_variants(tmp_path):
    h = History(tmp_path)
    root = _song(h)[0]
    child = h.save(_with_parent(_result(), root.id, "extend"))[0]
    grand = h.save(_with_parent(_result(takes=2), child.id, "regenerate"))
    stranger = _song(h)[0]
    family = h.family(grand[1].id)
    assert family[:2] == [root.id, child.id] and set(family[2:]) == {g.id for g in grand}
    assert h.family(root.id) == family and h.family(stranger.id) == [stranger.id]


def _with_parent(result, parent_id, mode):
    return replace(result, parent={"id": parent_id, "mode": mode, "at_s": 1.0, "sidecar": f"{parent_id}.json"})


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_a_query_with_no_word_is_matched_as_written(tmp_path, fts):
    """"(", "%" or "\\" hold no word: they listed every song as a match. They are looked for as
    written in title, tags and lyrics (a musician typing "(" wants "(live)"); with no letter in
    them there is no case to ignore."""
    h = History(tmp_path)
    h.index.sync()
    h.index.fts = fts and h.index.fts
    live = _song(h, "[verse]\nhello", tags="pop")[0]
    h.set_title(live.id, "Rain (Live)")
    sure = _song(h, "[verse]\n100% sure", tags="rock")[0]
    slash = _song(h, "[verse]\nback\\slash", tags="folk_punk")[0]
    assert _ids(h, "(") == [live.id] and h.find("(")[1] == 1
    assert _ids(h, " %  ") == [sure.id] and _ids(h, "\\") == [slash.id] and _ids(h, "_") == [slash.id]
    assert _ids(h, "*") == [] and _ids(h, "'; --") == [] and _ids(h, "\x00") == []
    assert set(_ids(h, "   ")) == {live.id, sure.id, slash.id}  # blank: no search at all


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_a_seed_finds_the_songs_made_with_it(tmp_path, fts):
    """A whole number matches a song's seed exactly (as the table shows it), besides any word."""
    h = History(tmp_path)
    h.index.sync()
    h.index.fts = fts and h.index.fts
    first, second = h.save(_result(seed=123456789, takes=2))  # take i uses seed + i
    small = _song(h, "[verse]\nhello", seed=7)[0]
    big = _song(h, "[verse]\nhello", seed=2**63 - 1)[0]
    assert _ids(h, "123456789") == [first.id] and _ids(h, "123456790") == [second.id]
    assert _ids(h, "7") == [small.id] and _ids(h, "007") == [small.id] and _ids(h, "hello 7") == [small.id]
    assert _ids(h, str(2**63 - 1)) == [big.id]
    assert _ids(h, "1234") == [] and _ids(h, "pop 8") == []  # a seed matches whole, never as a prefix
