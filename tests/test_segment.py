from synth.data import udhr_articles, udhr_path
from synth.read import ReadStats, read_segments
from synth.read.segment import split_sentences


def test_sentences_split_on_end_punctuation_and_keep_closing_quotes():
    assert split_sentences("J. Smith went home in 1948. Article one applies! Then «quoted.» Next") == [
        "J. Smith went home in 1948.", "Article one applies!", "Then «quoted.»", "Next",
    ]


def test_ethiopic_full_stop_splits_without_a_space():
    first = split_sentences(udhr_articles("amh")[0])
    assert len(first) == 2 and first[0].endswith("።፡") and first[1].endswith("።")


def test_reader_splits_lines_into_sentences_keeping_line_numbers():
    stats = ReadStats()
    segments = list(read_segments([udhr_path("zul")], segment="sentence", stats=stats))
    assert segments[0].text == "Bonke abantu bazalwa bekhululekile belingana ngesithunzi nangamalungelo."
    assert segments[0].line == segments[1].line == 1
    assert stats.lines_read == 30 and stats.segments == len(segments) > 30
    assert len({s.id for s in segments}) == len(segments)
