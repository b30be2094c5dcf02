"""Language codes: one canonical form (ISO 639-1 where it exists, else ISO 639-3) everywhere."""

from functools import lru_cache

import langcodes


class UnknownLanguageError(ValueError):
    pass


# Individual languages folded into the macrolanguage code that the detectors, the Hub and most
# corpora use ('swh' Swahili is reported as 'sw' by every detector). CLDR's 'tl' -> 'fil' alias is
# undone for the same reason.
MACROLANGUAGE = {
    "swh": "sw", "quz": "qu", "quy": "qu", "ayr": "ay", "gug": "gn", "arb": "ar", "pes": "fa",
    "zsm": "ms", "plt": "mg", "uzn": "uz", "khk": "mn", "npi": "ne", "ory": "or", "ekk": "et",
    "lvs": "lv", "cmn": "zh", "fil": "tl",
}


@lru_cache(maxsize=None)
def normalize_language(code: str) -> str:
    """'zul', 'ZU', 'zu-ZA' -> 'zu'; 'swh' -> 'sw' (see MACROLANGUAGE). Raises UnknownLanguageError for junk."""
    raw = (code or "").strip()
    if not raw or not langcodes.tag_is_valid(raw.replace("_", "-")):
        raise UnknownLanguageError(
            f"unknown language code {code!r}: use an ISO 639-1 or 639-3 code such as 'zu' or 'zul'"
        )
    language = langcodes.Language.get(langcodes.standardize_tag(raw.replace("_", "-"))).language
    if not language or language in {"und", "zxx", "mul", "mis"}:
        raise UnknownLanguageError(f"{code!r} names no particular language")
    if not langcodes.Language.get(language).is_valid():
        raise UnknownLanguageError(f"unknown language code {code!r}")
    return MACROLANGUAGE.get(language, language)


@lru_cache(maxsize=None)
def language_name(code: str) -> str:
    """English name, for prompts and the dataset card ('zu' -> 'Zulu')."""
    try:
        return langcodes.Language.get(code).display_name("en")
    except Exception:  # language_data missing or an exotic code: the code itself still reads
        return code


@lru_cache(maxsize=None)
def iso639_3(code: str) -> str:
    return langcodes.Language.get(code).to_alpha3()
