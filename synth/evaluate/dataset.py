"""What an evaluation reads: a published dataset's training pairs (and rejects), its held-out
`test` split, and extra evaluation bitexts, with every evaluation pair that shares a text with
the training data removed first (no leakage, ever).

A published folder is read through its card's `configs:` block (the files `datasets.load_dataset`
would read), so the evaluation sees exactly what a user would load. A Hub repo id is downloaded
first (`huggingface_hub.snapshot_download`), then read the same way.
"""

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from synth.data import udhr_path
from synth.languages import iso639_3, language_name
from synth.read import CorpusError

# Bitext kinds of dataset: back-translation and filtered corpora; queries datasets pair a query with a passage.
BITEXT, QUERIES = "bitext", "queries"
# The bundled UDHR as an evaluation set (`--eval udhr`): its files are named by ISO 639-3 code.
UDHR = "udhr"
_UDHR_CODES = {"sw": "swh", "ht": "hat"}


class EvaluationError(ValueError):
    """Bad input to an evaluation: what is wrong and what to do, for the user."""


@dataclass
class Pairs:
    """Aligned pairs: `src[i]` (the dataset's low-resource side) belongs with `tgt[i]` (the pivot
    side: the translation, or the query)."""

    name: str
    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)
    negative: list[str] | None = None  # a hard negative per pair (queries with --negatives)
    excluded_overlap: int = 0
    excluded_duplicates: int = 0

    def __len__(self) -> int:
        return len(self.src)

    def texts(self) -> set[str]:
        return {text_key(text) for text in (*self.src, *self.tgt)}


def text_key(text: str) -> str:
    """Texts compare case, spacing and punctuation aside (as synth's exact dedup does)."""
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


@dataclass
class PublishedDataset:
    folder: Path
    name: str                  # the folder's name or the repo id, for results and messages
    kind: str                  # BITEXT or QUERIES
    lang: str                  # the low-resource side (`text`, or the passages)
    pivot: str                 # the other side (`translation`, or the queries)
    configs: dict[str, dict[str, list[Path]]]  # config -> split -> parquet files

    @classmethod
    def open(cls, spec: str, token: str | None = None) -> "PublishedDataset":
        path = Path(spec).expanduser()
        if path.exists():
            return cls.from_folder(path, path.resolve().name)
        if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
            raise EvaluationError(f"{spec}: no such dataset folder (or give a Hugging Face dataset repo id, ORG/NAME)")
        return cls.from_folder(_download(spec, token), spec)

    @classmethod
    def from_folder(cls, folder: Path, name: str) -> "PublishedDataset":
        card = folder / "README.md"
        if not folder.is_dir() or not card.is_file():
            raise EvaluationError(f"{folder}: not a dataset folder published by synth (no README.md with the dataset's configs)")
        configs = {}
        for config in _front_matter(card).get("configs") or []:
            splits = {}
            for entry in config.get("data_files") or []:
                patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]  # exact files, or globs
                files = sorted({path for pattern in patterns for path in folder.glob(pattern)})
                if files:
                    splits[entry["split"]] = files
            configs[config["config_name"]] = splits
        if "pairs" not in configs:
            raise EvaluationError(
                f"{folder}: the dataset has no `pairs` config (its card declares {', '.join(configs) or 'none'}): "
                "evaluate a dataset made by `synth backtranslate`, `synth queries` or `synth filter`; "
                "one where no pair passed the filters has nothing to train on"
            )
        if not configs["pairs"].get("train"):
            raise EvaluationError(f"{folder}: the `pairs` config has no train rows: nothing to train a student on")
        default = configs.get("default", {}).get("train") or configs["pairs"]["train"]
        names = pq.read_schema(default[0]).names
        first = pq.read_table(default[0]).slice(0, 1).to_pylist()
        row = first[0] if first else {}
        if "query" in names:
            kind, lang, pivot = QUERIES, row.get("lang"), row.get("query_lang")
        else:
            kind, lang, pivot = BITEXT, row.get("lang"), row.get("pivot_lang")
        if not lang or not pivot:
            raise EvaluationError(f"{folder}: cannot tell the dataset's languages (no `lang`/`pivot_lang` in its `default` config)")
        return cls(folder, name, kind, lang, pivot, configs)

    def pairs(self, split: str) -> Pairs:
        """The `pairs` config's split: anchor is the pivot side, positive the low-resource side."""
        table = _read(self.configs["pairs"].get(split, []))
        if table is None:
            return Pairs(split)
        return Pairs(
            split, table["positive"].to_pylist(), table["anchor"].to_pylist(),
            table["negative"].to_pylist() if "negative" in table.column_names else None,
        )

    def rejected_pairs(self) -> Pairs:
        """Every rejected row that has both sides (a failed generation has no pivot side)."""
        table = _read(self.configs.get("rejects", {}).get("train", []))
        if table is None:
            return Pairs("rejects")
        src, tgt = ("passage", "query") if self.kind == QUERIES else ("text", "translation")
        pairs = [(s, t) for s, t in zip(table[src].to_pylist(), table[tgt].to_pylist()) if s and t]
        return Pairs("rejects", [s for s, _ in pairs], [t for _, t in pairs])

    def fingerprint(self) -> str:
        """Which version of the training pairs was evaluated (content hash of their files)."""
        import hashlib

        digest = hashlib.sha256()
        for path in self.configs["pairs"]["train"]:
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


def _front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    block = text.split("---", 2)[1]
    try:
        return yaml.safe_load(block) or {}
    except yaml.YAMLError as error:
        raise EvaluationError(f"{card}: its YAML metadata does not parse ({error})") from None


def _read(files: list[Path]) -> pa.Table | None:
    if not files:
        return None
    return pa.concat_tables([pq.read_table(path) for path in files])


def _download(repo_id: str, token: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", token=token, allow_patterns=["README.md", "*.parquet"]))
    except RepositoryNotFoundError:
        raise EvaluationError(f"{repo_id}: no such dataset on the Hub (or it is private: set the token's variable, --hub-token-env)") from None
    except LocalEntryNotFoundError:
        raise EvaluationError(f"{repo_id}: not a local folder, and the Hub cannot be reached (HF_HUB_OFFLINE is set, or no network)") from None
    except HfHubHTTPError as error:
        raise EvaluationError(f"{repo_id}: the Hub refused the download ({error})") from None


def read_eval_set(spec: str, dataset: PublishedDataset, src_field: str = "src", tgt_field: str = "tgt") -> Pairs:
    """An `--eval` bitext: 'udhr', 'SRC,TGT' (two aligned text files) or one file of pairs."""
    from synth.filter_job import read_pairs

    if spec == UDHR:
        files = [udhr_path(_UDHR_CODES.get(dataset.lang, iso639_3(dataset.lang))), udhr_path(_UDHR_CODES.get(dataset.pivot, iso639_3(dataset.pivot)))]
        missing = [f"{language_name(code)} ({code})" for code, path in zip((dataset.lang, dataset.pivot), files) if not path.is_file()]
        if missing:
            raise EvaluationError(f"--eval udhr: synth bundles no UDHR in {' or '.join(missing)}; give a bitext file instead")
        name = f"udhr-{files[0].stem}"
    else:
        files = [Path(part).expanduser() for part in spec.split(",")] if "," in spec else [Path(spec).expanduser()]
        if len(files) > 2:
            raise EvaluationError(f"--eval {spec}: give one file of pairs, or two aligned text files as SRC,TGT")
        for path in files:
            if not path.is_file():
                raise EvaluationError(f"--eval {spec}: {path}: no such file")
        name = files[0].name.split(".")[0]
    try:
        rows = list(read_pairs(files, src_field=src_field, tgt_field=tgt_field, src_lang=dataset.lang, tgt_lang=dataset.pivot))
    except CorpusError as error:
        raise EvaluationError(f"--eval {spec}: {error}") from None
    pairs = Pairs(name, [text for _, _, text, translation in rows if text and translation], [translation for _, _, text, translation in rows if text and translation])
    check_languages(pairs, dataset, spec)
    return pairs


def check_languages(pairs: Pairs, dataset: PublishedDataset, spec: str, sample: int = 50) -> None:
    """An evaluation set must be in the dataset's two languages, low-resource side first: each
    side's texts (a sample) are identified, and a side that mostly reads as another language is
    an error. A language no detector covers cannot be checked and passes."""
    from synth.filters.langid import LanguageIdentifier

    identifier = LanguageIdentifier(["pycld2", "langdetect", "py3langid"])
    rng = random.Random(0)
    picks = rng.sample(range(len(pairs)), min(sample, len(pairs)))
    for side, lang, texts in (("first", dataset.lang, pairs.src), ("second", dataset.pivot, pairs.tgt)):
        results = [identifier.identify(texts[i], lang) for i in picks]
        verdicts = [r for r in results if r.status != "unverified"]
        if not verdicts:
            continue
        wrong = [r for r in verdicts if r.lang != lang]
        if len(wrong) > len(verdicts) / 2:
            seen = max({r.lang or "und" for r in wrong}, key=lambda code: sum((r.lang or "und") == code for r in wrong))
            raise EvaluationError(
                f"--eval {spec}: its {side} side reads as {language_name(seen)} ({seen}) in {len(wrong)} of {len(verdicts)} "
                f"sampled texts, not {language_name(lang)} ({lang}): an evaluation set holds pairs in the dataset's "
                f"languages, {dataset.lang} first and {dataset.pivot} second"
            )


def without_overlap(pairs: Pairs, seen: set[str]) -> Pairs:
    """`pairs` less every pair whose either text occurs in `seen` (training texts), and less
    repeated texts (retrieval needs one right answer), each count kept."""
    kept = Pairs(pairs.name)
    overlap = duplicates = 0
    used_src, used_tgt = set(), set()
    for src, tgt in zip(pairs.src, pairs.tgt):
        s, t = text_key(src), text_key(tgt)
        if s in seen or t in seen:
            overlap += 1
        elif s in used_src or t in used_tgt:
            duplicates += 1
        else:
            used_src.add(s)
            used_tgt.add(t)
            kept.src.append(src)
            kept.tgt.append(tgt)
    kept.excluded_overlap, kept.excluded_duplicates = overlap, duplicates
    return kept


def queries_without_overlap(pairs: Pairs, seen: set[str]) -> Pairs:
    """For a queries dataset: queries whose text or passage was trained on are removed; several
    queries may share a passage (each is still one query with one right passage)."""
    kept = Pairs(pairs.name)
    overlap = duplicates = 0
    used = set()
    for src, tgt in zip(pairs.src, pairs.tgt):
        s, t = text_key(src), text_key(tgt)
        if s in seen or t in seen:
            overlap += 1
        elif t in used:
            duplicates += 1
        else:
            used.add(t)
            kept.src.append(src)
            kept.tgt.append(tgt)
    kept.excluded_overlap, kept.excluded_duplicates = overlap, duplicates
    return kept
