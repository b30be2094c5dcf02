"""Language identification with the real detectors on real UDHR text (30 aligned articles)."""

import pytest

from synth.data import udhr_articles
from synth.filters.base import FilterChain
from synth.filters.langid import (
    DEFAULT_DETECTORS,
    LangdetectDetector,
    LanguageIdentifier,
    LanguageIdFilter,
    make_detector,
)

# A real language (K'iche', ISO 639-3) that none of the three detectors knows.
UNCOVERED = "quc"


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier()


def pairs(text_file: str, text_lang: str, translation_file: str = "eng", pivot: str = "en") -> list[dict]:
    return [
        {"text": text, "lang": text_lang, "translation": translation, "pivot_lang": pivot}
        for text, translation in zip(udhr_articles(text_file), udhr_articles(translation_file), strict=True)
    ]


def test_detector_languages_are_canonical_codes_from_the_libraries():
    langdetect, cld2, py3langid = (make_detector(name) for name in ("langdetect", "pycld2", "py3langid"))
    assert {"en", "fr", "sw", "zh"} <= langdetect.languages and "zh-cn" not in langdetect.languages
    assert {"zu", "yo", "he", "jv"} <= cld2.languages and not {"iw", "jw", "un", "xxx"} & cld2.languages
    assert {"zu", "rw", "sn"} <= py3langid.languages and "zxx" not in py3langid.languages
    assert not {"yo", "zu", "ha", "am"} & langdetect.languages
    assert len(langdetect.languages) >= 50 and len(cld2.languages) >= 150 and len(py3langid.languages) >= 130


def test_coverage_table(identifier):
    rows = {row["lang"]: row for row in identifier.coverage()}
    assert list(rows) == sorted(rows)
    assert rows["zu"] == {
        "lang": "zu", "name": "Zulu", "langdetect": False, "pycld2": True, "py3langid": True, "chosen": "pycld2",
        "script": "Latn",
    }
    assert rows["am"]["script"] == "Ethi" and rows["ar"]["script"] == "Arab" and rows["ja"]["script"] == "Hani+Hira+Kana"
    assert rows["en"]["chosen"] == "pycld2"
    assert rows["sw"]["langdetect"] and rows["sw"]["pycld2"]
    assert rows["ny"]["py3langid"] is False and rows["ny"]["chosen"] == "pycld2"

    asked = identifier.coverage(["zul", "swh", UNCOVERED])
    assert [row["lang"] for row in asked] == ["quc", "sw", "zu"]
    assert asked[0]["chosen"] is None and not any(asked[0][name] for name in DEFAULT_DETECTORS)
    assert asked[1]["chosen"] == "pycld2"


@pytest.mark.parametrize(
    "udhr_code, lang, detector",
    [("zul", "zu", "pycld2"), ("yor", "yo", "pycld2"), ("swh", "sw", "pycld2"),
     ("hau", "ha", "pycld2"), ("xho", "xh", "pycld2")],
)
def test_good_pairs_are_verified_and_kept(identifier, udhr_code, lang, detector):
    block = LanguageIdFilter(identifier)
    rows = pairs(udhr_code, lang)
    verdicts = block.judge(rows)

    assert sum(verdict is None for verdict in verdicts) >= 27
    kept = [row for row, verdict in zip(rows, verdicts) if verdict is None]
    for row in kept:
        assert (row["text_lid_lang"], row["text_lid_detector"], row["text_lid_status"]) == (lang, detector, "verified")
        assert (row["lid_lang"], row["lid_detector"], row["lid_status"]) == ("en", "pycld2", "verified")
        assert 0.5 <= row["text_lid_score"] <= 1 and 0.5 <= row["lid_score"] <= 1
    assert not block.unverified_counts


def test_translation_in_the_wrong_language_is_dropped(identifier):
    rows = pairs("zul", "zu", translation_file="fra", pivot="en")
    kept, rejected = FilterChain([LanguageIdFilter(identifier)]).run(rows)

    assert len(rejected) >= 27
    for row in rejected:
        assert row["reject_stage"] == "language_id"
        assert row["reject_reason"].startswith("lid_mismatch:translation=fr")
        assert row["lid_status"] == "failed" and row["text_lid_status"] == "verified"


def test_text_in_the_wrong_language_is_dropped(identifier):
    rows = pairs("zul", "yo")  # Zulu text declared as Yoruba, English translation fine
    verdicts = LanguageIdFilter(identifier).judge(rows)

    assert sum(verdict == "lid_mismatch:text=zu" for verdict in verdicts) >= 27
    assert all(row["text_lid_detector"] == "pycld2" and row["lid_status"] == "verified" for row in rows)


def test_empty_translation_is_dropped_as_unknown(identifier):
    rows = [{"text": udhr_articles("zul")[0], "lang": "zu", "translation": "  ", "pivot_lang": "en"}]
    assert LanguageIdFilter(identifier).judge(rows) == ["lid_mismatch:translation=unknown"]
    assert rows[0]["lid_lang"] is None and rows[0]["lid_status"] == "failed"


def test_language_no_detector_knows_is_kept_unverified(identifier):
    assert identifier.detector_for(UNCOVERED) is None
    block = LanguageIdFilter(identifier)
    rows = pairs("zul", UNCOVERED)[:5]  # the words are Zulu, but nobody can check a K'iche' claim

    assert block.judge(rows) == [None] * 5
    for row in rows:
        assert row["text_lid_status"] == "unverified"
        assert row["text_lid_detector"] == "pycld2"  # the first detector's guess, for information
        assert row["lid_status"] == "verified"
    assert block.unverified_counts == {"text": 5}


def test_per_language_min_score_overrides_the_default():
    # No score exceeds 1, so Zulu can never pass; English keeps the default threshold.
    strict = LanguageIdentifier(min_score=0.5, min_scores={"zul": 1.01})
    zulu, english = udhr_articles("zul")[0], udhr_articles("eng")[0]

    result = strict.identify(zulu, "zu")
    assert (result.lang, result.detector, result.status) == ("zu", "pycld2", "failed")
    assert strict.identify(english, "en").status == "verified"
    assert LanguageIdentifier().identify(zulu, "zu").status == "verified"


def test_the_user_names_the_detector_of_a_language():
    identifier = LanguageIdentifier(chosen={"zul": "py3langid"})
    zulu, english = udhr_articles("zul")[0], udhr_articles("eng")[0]

    result = identifier.identify(zulu, "zu")
    assert (result.lang, result.detector, result.status) == ("zu", "py3langid", "verified")
    assert identifier.identify(english, "en").detector == "pycld2"  # the others keep the preference order
    assert {row["lang"]: row["chosen"] for row in identifier.coverage(["zu", "en"])} == {"en": "pycld2", "zu": "py3langid"}
    # A detector that does not know the language is refused at once, naming those that do.
    with pytest.raises(ValueError, match=r"py3langid cannot recognise Nyanja \(ny\); detectors that can: pycld2"):
        LanguageIdentifier(chosen={"ny": "py3langid"})
    with pytest.raises(ValueError, match="no available detector can"):
        LanguageIdentifier(chosen={UNCOVERED: "pycld2"})


def test_per_language_settings_from_the_config():
    from synth.config import PairFilterSettings
    from synth.filters.pairs import language_identifier

    identifier = language_identifier(PairFilterSettings(lid_min_score={"zul": 1.01, "*": 0.4}, lid_detector={"sw": "langdetect"}))
    assert (identifier.min_score, identifier.min_scores) == (0.4, {"zu": 1.01})
    assert identifier.identify(udhr_articles("zul")[0], "zu").status == "failed"
    assert identifier.detector_for("swh").name == "langdetect"
    assert language_identifier(PairFilterSettings(lid_detectors=[])) is None


def test_unknown_detector_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="langdetect, pycld2, py3langid"):
        make_detector("nope")
    with pytest.raises(ValueError):
        LanguageIdentifier(detectors=["pycld2", "nope"])
    assert make_detector("pycld2") is make_detector("pycld2")


def test_langdetect_is_deterministic():
    # Spanish articles are where langdetect's random sampling wavers towards Portuguese.
    texts = udhr_articles("spa") + ["si", "Hola mundo, olá mundo", "the casa is grande"]
    shared = make_detector("langdetect")
    first = [shared.detect(text) for text in texts]
    assert [shared.detect(text) for text in texts] == first
    fresh = LangdetectDetector()  # its own profile load and factory: the seed is not borrowed state
    assert [fresh.detect(text) for text in texts] == first


def test_pycld2_survives_characters_it_rejects():
    cld2 = make_detector("pycld2")
    zulu = udhr_articles("zul")[2]
    for odd in ("\x00", "\x07", "\x9f", "\ufffe", "\ud800"):
        assert cld2.detect(f"{zulu[:40]}{odd}{zulu[40:]}").lang == "zu"
