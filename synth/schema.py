"""Arrow schemas of what synth writes. One place, so writers, readers and the card agree."""

import pyarrow as pa

# A back-translation pair. `text` is the authentic sentence in `lang` (the target side for
# training a translation model into `lang`); `translation` is synthetic, written by `model`.
BACKTRANSLATION_FIELDS = [
    pa.field("id", pa.string(), nullable=False),          # sha256 of the normalised text, 16 hex
    pa.field("text", pa.string(), nullable=False),        # authentic, in `lang`
    pa.field("translation", pa.string()),                 # synthetic, in `pivot_lang`
    pa.field("lang", pa.string(), nullable=False),
    pa.field("pivot_lang", pa.string(), nullable=False),
    pa.field("synthetic_side", pa.string(), nullable=False),  # always "translation" here
    pa.field("source", pa.string()),                      # corpus file the text came from
    pa.field("line", pa.int64()),                         # 1-based line / row in that file
    pa.field("consistency", pa.float64()),                # cosine of the two sides
    pa.field("margin", pa.float64()),                     # ratio margin within the batch
    pa.field("partner_rank", pa.int64()),                 # worse of the two retrieval ranks (1 = best)
    pa.field("null_z", pa.float64()),                     # similarity above the chunk's unrelated pairs, in their SDs (worse direction)
    pa.field("round_trip_chrf", pa.float64()),            # chrF of the translation translated back against `text` (where asked)
    pa.field("lid_lang", pa.string()),                    # language detected in `translation`
    pa.field("lid_score", pa.float64()),
    pa.field("lid_detector", pa.string()),
    pa.field("lid_status", pa.string()),                  # verified | unverified | failed
    pa.field("text_lid_lang", pa.string()),               # language detected in `text`
    pa.field("text_lid_score", pa.float64()),
    pa.field("text_lid_detector", pa.string()),
    pa.field("text_lid_status", pa.string()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("generation_params", pa.string()),           # JSON of the sampling parameters
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("raw_answer", pa.string()),                  # the model's answer before parsing
]
BACKTRANSLATION_SCHEMA = pa.schema(BACKTRANSLATION_FIELDS)
REJECT_SCHEMA = pa.schema(
    BACKTRANSLATION_FIELDS
    + [
        pa.field("reject_stage", pa.string(), nullable=False),   # the filter that dropped it
        pa.field("reject_reason", pa.string(), nullable=False),  # e.g. "lid_mismatch:translation=fr"
    ]
)

# A search query for a passage, one row per query. `passage` is authentic text in `lang`; `query`
# is synthetic, written by `model` in `query_lang` (another language: a cross-lingual pair).
QUERY_FIELDS = [
    pa.field("id", pa.string(), nullable=False),          # sha256 of passage_id, kind and query, 16 hex
    pa.field("query", pa.string()),                       # synthetic, in `query_lang`
    pa.field("passage", pa.string(), nullable=False),     # authentic, in `lang`
    pa.field("passage_id", pa.string(), nullable=False),  # sha256 of the normalised passage, 16 hex
    pa.field("kind", pa.string(), nullable=False),        # keyword | question | long | a template's own kind
    pa.field("query_lang", pa.string(), nullable=False),
    pa.field("lang", pa.string(), nullable=False),
    pa.field("source", pa.string()),                      # corpus file the passage came from
    pa.field("line", pa.int64()),                         # 1-based line / row of its document there
    pa.field("consistency", pa.float64()),                # cosine of query and passage
    pa.field("rank", pa.int64()),                         # rank of the passage among the chunk's for the query (1 = best)
    pa.field("round_trip", pa.float64()),                 # how likely a rank that good is for a query of this passage, in its chunk (0-1)
    pa.field("relevance", pa.string()),                   # the LLM relevance check's answer (yes/no/unclear/failed), where it was asked
    pa.field("negative", pa.string()),                    # the hardest negative passage (with --negatives)
    pa.field("negatives", pa.list_(pa.string())),         # every mined negative, hardest first
    pa.field("lid_lang", pa.string()),                    # language detected in `query`
    pa.field("lid_score", pa.float64()),
    pa.field("lid_detector", pa.string()),
    pa.field("lid_status", pa.string()),                  # verified | unverified | failed
    pa.field("model", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("generation_params", pa.string()),           # JSON of the sampling parameters
    pa.field("prompt_tokens", pa.int64()),                # of the request that wrote the query (shared by its siblings)
    pa.field("completion_tokens", pa.int64()),
    pa.field("raw_answer", pa.string()),                  # the model's answer before parsing
]
QUERY_SCHEMA = pa.schema(QUERY_FIELDS)
QUERY_REJECT_SCHEMA = pa.schema(QUERY_FIELDS + [REJECT_SCHEMA.field("reject_stage"), REJECT_SCHEMA.field("reject_reason")])

# A pair of an existing parallel corpus, filtered (`synth filter`): `text` in `lang` (the corpus's
# source side), `translation` in `pivot_lang` (its target side); neither is known to be synthetic.
# The columns are the back-translation ones that apply, so both kinds of dataset read alike.
_PAIR_COLUMNS = {
    "id", "text", "translation", "lang", "pivot_lang", "source", "line", "consistency", "margin", "partner_rank", "null_z",
    "lid_lang", "lid_score", "lid_detector", "lid_status", "text_lid_lang", "text_lid_score", "text_lid_detector",
    "text_lid_status",
}
PAIR_FIELDS = [field for field in BACKTRANSLATION_FIELDS if field.name in _PAIR_COLUMNS]  # `id`: of the two sides
PAIR_SCHEMA = pa.schema(PAIR_FIELDS)
PAIR_REJECT_SCHEMA = pa.schema(PAIR_FIELDS + [REJECT_SCHEMA.field("reject_stage"), REJECT_SCHEMA.field("reject_reason")])


def table_from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table with exactly `schema`'s columns; missing keys become nulls."""
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    return pa.Table.from_pydict(columns, schema=schema)
