"""The base corpus builder's readers and caps, on small made-up package folders (tests fetch nothing)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from charnn.base import corpus, sources
from charnn.base.packages import Package
from charnn.base.sources import Source


def _source(cap: int | None, spread: bool = True) -> Source:
    return Source("t", "test", (Package("debian", "t", "1"),), "none", lambda roots: iter(()), cap=cap, spread=spread)


def test_a_spread_cap_keeps_paragraphs_from_the_whole_source_within_the_cap() -> None:
    paragraphs = [f"{i:04d} " + "x" * 95 for i in range(1000)]  # 100 characters each, 102 with the separator
    kept = corpus.capped(paragraphs, _source(cap=10_200))
    assert sum(len(p) + 2 for p in kept) <= 10_200
    assert len(kept) >= 95
    assert kept[0] < "0020" and kept[-1] > "0980"  # from the start to the end, not the first hundred


def test_an_unspread_cap_keeps_the_first_paragraphs_and_no_cap_keeps_all() -> None:
    paragraphs = [f"{i:04d} " + "x" * 95 for i in range(100)]
    assert corpus.capped(paragraphs, _source(cap=1_020, spread=False)) == paragraphs[:10]
    assert corpus.capped(paragraphs, _source(cap=None)) == paragraphs


def test_shakespeare_is_dropped_but_shaking_is_not() -> None:
    dropped: Counter[str] = Counter()
    kept = corpus.kept_paragraphs(["The ground shook and shaken men ran.", "As Shakespeare wrote.",
                                   "To be sure. --Shak.", "The ground shook and shaken men ran."], set(), set(), dropped)
    assert kept == ["The ground shook and shaken men ran."]
    assert dropped == Counter({"shakespeare": 2, "duplicate": 1})


def test_speeches_are_cut_at_sentence_ends_and_lose_the_audience_notes(tmp_path: Path) -> None:
    data = tmp_path / "package/data"
    data.mkdir(parents=True)
    text = "We gather tonight. [Applause] " + " ".join(f"Sentence number {i} is here." for i in range(60))
    (data / "2001_a_b_n.json").write_text(json.dumps({"year": 2001, "name": "A B", "text": text}))
    (data / "1999_c_d_n.json").write_text(json.dumps({"year": 1999, "name": "C D", "text": "Short. Speech."}))
    out = list(sources.sotu_paragraphs([tmp_path]))
    assert out[0] == "A B, State of the Union, 2001"  # newest first
    assert "[Applause]" not in out[1] and out[1].startswith("We gather tonight. Sentence number 0")
    assert len(out) > 4 and all(p.endswith(".") for p in out[1:-2])
    assert out[-2:] == ["C D, State of the Union, 1999", "Short. Speech."]


def test_wesnoth_dialogue_names_its_speakers_and_drops_variables(tmp_path: Path) -> None:
    scenario = tmp_path / "usr/share/games/wesnoth/1.16/data/campaigns/C/scenarios/01.cfg"
    scenario.parent.mkdir(parents=True)
    scenario.write_text('''
[part]
    story= _ "Long ago, the kingdom ""fell""."
[/part]
[event]
    [message]
        speaker=Konrad
        message= _ "So this is Alduin."
    [/message]
    [message]
        speaker=narrator
        message= _ "And so the party landed."
    [/message]
    [message]
        speaker=Delfador
        message= _ "Well met, $unit.name|."
    [/message]
[/event]
''')
    assert list(sources.wesnoth_paragraphs([tmp_path])) == [
        'Long ago, the kingdom "fell".', "Konrad: So this is Alduin.\nAnd so the party landed."]


def test_endless_sky_names_the_captain_and_drops_other_placeholders(tmp_path: Path) -> None:
    data = tmp_path / "usr/share/games/endless-sky/data"
    data.mkdir(parents=True)
    (data / "m.txt").write_text('mission "X"\n\tconversation\n'
                                '\t\t`Tomek asks, "Captain <last>, is the <ship> ready for the long trip?"`\n'
                                '\t\t`You land on <planet>.`\n\t\tchoice\n\t\t\t`\t"Yes, she is ready to fly."`\n')
    assert list(sources.endless_sky_paragraphs([tmp_path])) == [
        'Tomek asks, "Captain Reyes, is the Wayfarer ready for the long trip?"']


def test_wordnet_synsets_become_plain_definitions(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/wordnet"
    folder.mkdir(parents=True)
    (folder / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        "00217593 04 n 02 kill 1 putting_to_death 0 002 @ 00217014 n 0000 | the destruction of an enemy plane; "
        '"the pilot reported two kills"  \n')
    for part in ("verb", "adj", "adv"):
        (folder / f"data.{part}").write_text("")
    assert list(sources.wordnet_paragraphs([tmp_path])) == [
        'kill, putting to death (noun): the destruction of an enemy plane; "the pilot reported two kills"']


def test_every_source_names_pinned_packages_and_a_licence() -> None:
    names = [s.name for s in sources.SOURCES]
    assert len(set(names)) == len(names)
    for source in sources.SOURCES:
        assert source.licence and source.packages
        assert all(p.version and p.registry in ("debian", "npm") for p in source.packages)
    assert "songs-poems" in sources.FORTUNES_LEFT_OUT
