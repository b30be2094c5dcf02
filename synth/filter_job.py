"""Filter an existing parallel corpus with the pair filters and publish it like a generated dataset.

`FilterJob` is a `synth.job.ChunkedJob` whose records arrive with both sides: reading the pairs
takes the place of generation (no model, no requests), and the chunks, staging, resume, funnel,
rejects, card and Hub push are the shared machinery's. Pairs come from one TSV/CSV/JSONL/Parquet
file (columns `src`/`tgt`, other names with --src-field/--tgt-field, a Hugging Face `translation`
column keyed by language, or a header-less TSV's first two columns) or from two aligned text files.
Exact and near duplicates are marked while reading, in corpus order (so the marks do not depend on
how chunks are scheduled or resumed), and dropped by the first filter with their reason.
"""

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from synth.config import FilterConfig
from synth.filters.base import FilterChain
from synth.filters.dedup import DuplicateFilter, PairDeduplicator
from synth.filters.pairs import card_thresholds, embedder_name, filter_settings, pair_filters, score_columns
from synth.filters.heuristics import instruction_texts
from synth.generate.tasks.backtranslate import BacktranslationPrompt
from synth.job import Chunk, ChunkedJob
from synth.languages import language_name, normalize_language
from synth.publish import CardInfo, PublishResult, View, bitext_views
from synth.read import CorpusError, ReadStats, normalize_text, read_segments, record_id
from synth.schema import PAIR_REJECT_SCHEMA, PAIR_SCHEMA

__all__ = ["FilterJob", "PairRecord", "read_pairs", "run_filter"]

_SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_BATCH_ROWS = 10_000

PAIR_COLUMNS = [
    ("id", "sha256 of the normalised pair (`text`, tab, `translation`), 16 hex digits"),
    ("text", "the source side, in `lang`"),
    ("translation", "the target side, in `pivot_lang`"),
    ("lang / pivot_lang", "language codes of `text` and `translation`"),
    ("source / line", "the file the pair came from and its 1-based line or row there"),
    ("consistency", "cosine similarity of the two sides' embeddings"),
    ("margin", "ratio margin of that similarity within the chunk (embeddings centred per language)"),
    ("partner_rank", "the worse of the two retrieval ranks of the pair within the chunk (1 = best)"),
    ("lid_lang / lid_score / lid_detector / lid_status", "language ID of `translation`"),
    ("text_lid_*", "the same for `text`"),
]


@dataclass(frozen=True, slots=True)
class PairRecord:
    id: str
    text: str
    translation: str
    source: str
    line: int
    duplicate: str | None = None  # why it repeats an earlier pair ("duplicate:exact", "near_duplicate:0.93"), or None


def read_pairs(
    paths: list[str | Path], *, src_field: str = "src", tgt_field: str = "tgt", src_lang: str, tgt_lang: str,
    fmt: str = "auto", stats: ReadStats | None = None,
) -> Iterator[tuple[str, int, str, str]]:
    """(source, line, text, translation) of every pair, sides normalised; a pair with both sides
    empty is counted in `stats.empty_dropped` and skipped. Problems raise CorpusError."""
    stats = stats if stats is not None else ReadStats()
    if len(paths) == 2:
        pairs = _aligned_lines(Path(paths[0]), Path(paths[1]))
        stats.files += 2
    else:
        path = Path(paths[0])
        fmt = fmt if fmt != "auto" else _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None or fmt == "text":
            raise CorpusError(path, "one text file holds one side only: give the two aligned files (source first), or a .tsv/.csv/.jsonl/.parquet of pairs")
        pairs = _table_pairs(path, fmt, src_field, tgt_field, normalize_language(src_lang), normalize_language(tgt_lang))
        stats.files += 1
    for source, line, text, translation in pairs:
        stats.lines_read += 1
        text, translation = normalize_text(text or ""), normalize_text(translation or "")
        if not text and not translation:
            stats.empty_dropped += 1
            continue
        stats.segments += 1
        yield source, line, text, translation


def _aligned_lines(first: Path, second: Path) -> Iterator[tuple[str, int, str, str]]:
    """Line N of `first` with line N of `second` (the shared reader skips empty lines: they are
    put back by line number). Files of different lengths are not aligned: an error, before any pair."""
    counts = [_line_count(path) for path in (first, second)]
    if counts[0] != counts[1]:
        raise CorpusError(
            second, f"{counts[1]} lines, but {first} has {counts[0]}: two aligned files need one line per pair in each"
        )
    sides = [read_segments(path, fmt="text", dedup=False) for path in (first, second)]
    pending = [next(side, None) for side in sides]  # each side's next non-empty line
    for line in range(1, counts[0] + 1):
        texts = []
        for index, side in enumerate(sides):
            segment = pending[index]
            if segment is not None and segment.line == line:
                texts.append(segment.text)
                pending[index] = next(side, None)
            else:
                texts.append("")
        yield str(first), line, texts[0], texts[1]


def _line_count(path: Path) -> int:
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    count, last = 0, b"\n"
    with opener(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")  # a last line without a newline


def _table_pairs(path: Path, fmt: str, src_field: str, tgt_field: str, src_lang: str, tgt_lang: str) -> Iterator[tuple[str, int, str, str]]:
    import polars as pl

    try:
        frame, header_lines = _scan(path, fmt, src_field, tgt_field)
        if fmt in ("tsv", "csv") and not header_lines:  # no header: the first two columns
            sides = pl.nth(0), pl.nth(1)
        else:
            sides = _side_columns(path, frame.collect_schema(), src_field, tgt_field, src_lang, tgt_lang)
        batches = frame.select(sides[0].cast(pl.String).alias("src"), sides[1].cast(pl.String).alias("tgt")).collect_batches(
            chunk_size=_BATCH_ROWS
        )
        line = header_lines
        for batch in batches:
            for text, translation in batch.iter_rows():
                line += 1
                yield str(path), line, text, translation
    except pl.exceptions.PolarsError as error:
        raise CorpusError(path, f"not readable as {fmt} ({type(error).__name__}: {str(error).splitlines()[0]}). Check the format (--format).") from None


def _scan(path: Path, fmt: str, src_field: str, tgt_field: str):
    """(lazy frame, lines before the first record)."""
    import polars as pl

    if fmt == "parquet":
        return pl.scan_parquet(path), 0
    if fmt == "jsonl":
        return pl.scan_ndjson(path, infer_schema_length=1000), 0
    separator = "\t" if fmt == "tsv" else ","
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().rstrip("\r\n").split(separator)
    # CSV files have a header; bitext TSV mostly has none: a first line naming both fields is one.
    has_header = fmt == "csv" or (src_field in first and tgt_field in first)
    # Bitext TSV is not CSV: a quote is text, not quoting.
    options = {"quote_char": None} if fmt == "tsv" else {}
    frame = pl.scan_csv(path, separator=separator, has_header=has_header, infer_schema=False, **options)
    return frame, int(has_header)


def _side_columns(path: Path, columns, src_field: str, tgt_field: str, src_lang: str, tgt_lang: str):
    import polars as pl

    names = list(columns)
    if src_field in names and tgt_field in names:
        return pl.col(src_field), pl.col(tgt_field)
    translation = columns.get("translation")
    if isinstance(translation, pl.Struct):
        keys = {}
        for struct_field in translation.fields:
            try:
                keys[normalize_language(struct_field.name)] = struct_field.name
            except ValueError:
                continue
        if src_lang in keys and tgt_lang in keys:
            return pl.col("translation").struct.field(keys[src_lang]), pl.col("translation").struct.field(keys[tgt_lang])
    shown = ", ".join(repr(name) for name in names[:20])
    raise CorpusError(
        path,
        f"no fields {src_field!r} and {tgt_field!r} (fields: {shown}), nor a `translation` column keyed by "
        f"{src_lang!r} and {tgt_lang!r}. Name the sides with --src-field and --tgt-field.",
    )


class FilterJob(ChunkedJob):
    task = "filter"
    generates = False
    kept_schema = PAIR_SCHEMA
    reject_schema = PAIR_REJECT_SCHEMA

    config: FilterConfig

    @property
    def prompt_versions(self) -> dict[str, str]:
        return {}

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.config.src_lang, self.config.tgt_lang)

    # --- read: the pairs, with their duplicate marks, stand in for the generated rows -------------
    def segments(self) -> Iterator[PairRecord]:
        c = self.config
        dedup = PairDeduplicator(c.near_duplicate)
        pairs = read_pairs(
            c.pairs, src_field=c.src_field, tgt_field=c.tgt_field, src_lang=c.src_lang, tgt_lang=c.tgt_lang,
            fmt=c.input_format, stats=self.read_stats,
        )
        for source, line, text, translation in itertools.islice(pairs, c.limit):
            yield PairRecord(record_id(f"{text}\t{translation}"), text, translation, source, line, dedup.check(text, translation))

    def requests_for(self, segment: PairRecord) -> list:
        return []  # nothing to ask a model

    @property
    def chunks_in_memory(self) -> int:
        return 2  # one chunk filtered while the next is read: nothing to keep a server busy with

    def rows_to_filter(self, chunk: Chunk) -> list[dict]:
        c = self.config
        return [
            {"id": r.id, "text": r.text, "translation": r.translation, "lang": c.src_lang, "pivot_lang": c.tgt_lang,
             "source": r.source, "line": r.line, "duplicate": r.duplicate}
            for r in chunk.segments
        ]

    def filter_chain(self, chunk: Chunk) -> FilterChain:
        # Neither side of an existing corpus is known to be human-written: chatter and truncation are looked for on both.
        # Either side may be an LLM's answer that repeats its prompt: the default back-translation prompt's words, both ways.
        c = self.config
        template = BacktranslationPrompt.load().template
        names = (language_name(c.src_lang), language_name(c.tgt_lang))
        instructions = [
            *instruction_texts(template, source_language=names[0], target_language=names[1]),
            *instruction_texts(template, source_language=names[1], target_language=names[0]),
        ]
        return FilterChain([DuplicateFilter(), *pair_filters(c, suspect_sides=("text", "translation"), instructions=instructions)])

    def fingerprint_settings(self) -> dict:
        c = self.config
        return {
            "src": c.src_lang, "tgt": c.tgt_lang, "near_duplicate": c.near_duplicate, **filter_settings(c),
        }

    # --- publish ---------------------------------------------------------------------------------
    def views(self) -> list[View]:
        c = self.config
        return bitext_views(
            c.src_lang, c.tgt_lang,
            f"`anchor`: the {language_name(c.tgt_lang)} side, `positive`: the {language_name(c.src_lang)} side",
        )

    def card_info(self, command: str | None = None) -> CardInfo:
        c = self.config
        src, tgt = language_name(c.src_lang), language_name(c.tgt_lang)
        files = ", ".join(f"`{Path(p).name}`" for p in c.pairs)
        return CardInfo(
            task=self.task,
            pretty_name=f"{src}-{tgt} parallel corpus, filtered",
            summary=(
                f"Sentence pairs of an existing {src}-{tgt} parallel corpus ({files}), filtered with synth's pair filters: "
                f"exact and near duplicates, refusals and chatter, copies, truncations, length bounds and ratio, "
                f"repetitions, numerals, the script and language of each side, and the embedding consistency of "
                f"the pair. `text` is the {src} (`{c.src_lang}`) side, `translation` the {tgt} (`{c.tgt_lang}`) side; "
                f"nothing was generated, and where the corpus itself came from is for its own documentation to say."
            ),
            columns=PAIR_COLUMNS,
            task_categories=["translation", "sentence-similarity"],
            tags=["bitext", "filtered", "low-resource"],
            lid_columns={c.src_lang: "text", c.tgt_lang: "translation"},
            score_columns=score_columns(c),
            lang=c.src_lang, pivot_lang=c.tgt_lang, model="", generation_params={}, prompt_versions={},
            embedder=embedder_name(c),
            lid_detectors=self.lid_detectors_used(),
            thresholds={**card_thresholds(c), "near_duplicate": c.near_duplicate},
            license=c.license, command=command, source_files=[str(p) for p in c.pairs],
        )


def run_filter(
    config: FilterConfig, on_done: Callable[[int], None] | None = None, command: str | None = None
) -> tuple[PublishResult, dict]:
    """The whole job in this process. Returns the publish result and the stats written."""
    return FilterJob(config).run(on_done, command)

