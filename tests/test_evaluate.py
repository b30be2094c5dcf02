"""`synth evaluate` on real aligned text: a dataset of UDHR sentence pairs of related Bantu
languages (Zulu from 6 articles, Xhosa, Chichewa and Shona from all 30), evaluated on the 24
other Zulu articles. The fine-tuned student must gain clearly over the untouched one; the same
training on pairs shuffled out of alignment must not (the evaluation can fail). Bad inputs get a
clear message and exit 2. The command runs as a subprocess, as a user runs it.
"""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from synth.evaluate.dataset import Pairs, text_key, without_overlap
from synth.evaluate.metrics import bitext_retrieval, normalized, procrustes, query_retrieval
from synth.evaluate.run import shuffled
from synth.testing.udhr_bitext import article_pairs, sentence_pairs, write_tsv

from conftest import SYNTH_BIN

HELD_OUT = range(6, 30)


def synth(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    return " ".join(text.split())


def publish_pairs(pairs: list[tuple[str, str]], folder: Path, env: dict, *extra: str) -> Path:
    """The pairs published as a dataset by `synth filter` (model-based filters off: the pairs are real)."""
    tsv = write_tsv(pairs, folder.with_suffix(".tsv"))
    done = synth(
        "filter", str(tsv), "--src-lang", "zu", "--tgt-lang", "en", "--out", str(folder), "--embedder", "none",
        "--lid-detectors", "none", "--max-words", "off", "--min-terminal-punctuation", "off", *extra, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def bantu(tmp_path_factory: pytest.TempPathFactory, synth_env: dict) -> tuple[Path, Path, list[tuple[str, str]]]:
    root = tmp_path_factory.mktemp("evaluate")
    train = sentence_pairs("zul", articles=range(6))
    for lang in ("xho", "nya", "sna"):
        train += sentence_pairs(lang)
    held_out = write_tsv(article_pairs("zul", articles=HELD_OUT), root / "zul-held-out.tsv")
    return publish_pairs(train, root / "bantu-en", synth_env, "--splits", "train"), held_out, train


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two trainings of 80 s on 2 quiet cores; under CI's second worker, several times that
def test_a_student_trained_on_real_pairs_gains_and_one_trained_on_shuffled_pairs_does_not(bantu, synth_env: dict) -> None:
    dataset, held_out, train = bantu
    # The defaults (8 epochs at length 128): about 80 s a training on 2 quiet cores (bench/evaluate.py).
    done = synth("evaluate", str(dataset), "--eval", str(held_out), "--ablation", "shuffled", env=synth_env, timeout=900)
    assert done.returncode == 0, done.stderr
    results = json.loads((dataset / "eval" / "results.json").read_text(encoding="utf-8"))

    assert results["kind"] == "bitext" and (results["lang"], results["pivot_lang"]) == ("zu", "en")
    assert results["train_pairs"] == len(train)
    [evaluation] = results["eval"]
    assert evaluation["name"] == "zul-held-out"
    # No leakage: every held-out article whose text (a one-sentence article, or its English) was
    # trained on is left out, and counted.
    trained = {text_key(text) for pair in train for text in pair}
    leaking = sum(text_key(zu) in trained or text_key(en) in trained for zu, en in article_pairs("zul", articles=HELD_OUT))
    assert leaking > 0 and evaluation["excluded_overlap"] == leaking
    assert evaluation["pairs"] == len(HELD_OUT) - leaking

    base, procrustes_map, tuned, control = (evaluation[m] for m in ("base", "procrustes", "finetuned", "finetuned_shuffled"))
    # all-MiniLM-L6-v2 knows no Zulu: near chance before training.
    assert base["accuracy_src2tgt"] < 0.25 and base["mrr"] < 0.35
    # The gain is clear, in both directions and in MRR, and beats the Procrustes map.
    assert tuned["mrr"] >= base["mrr"] + 0.2
    assert tuned["accuracy_src2tgt"] + tuned["accuracy_tgt2src"] >= base["accuracy_src2tgt"] + base["accuracy_tgt2src"] + 0.4
    assert tuned["mrr"] > procrustes_map["mrr"]
    # The control: the same texts out of alignment teach nothing about translation.
    assert control["mrr"] <= base["mrr"] + 0.05
    assert tuned["mrr"] >= control["mrr"] + 0.2

    # What the user sees: the table, the files, the card's section.
    output = flat(done.stderr)
    assert "fine-tuned on shuffled pairs" in output and "results:" in output
    assert (dataset / "eval" / "retrieval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (dataset / "README.md").read_text(encoding="utf-8")
    assert card.count("## Evaluation") == 1 and f"| zul-held-out | {evaluation['pairs']} | fine-tuned |" in card
    assert "Traceback" not in done.stderr


def test_bad_inputs_get_a_clear_message_and_exit_2(bantu, tmp_path: Path, synth_env: dict) -> None:
    dataset, held_out, _ = bantu
    udhr = Path(__file__).resolve().parents[1] / "synth" / "data" / "udhr"
    nothing_kept = publish_pairs(article_pairs("zul", articles=range(10)), tmp_path / "none-kept", synth_env, "--max-chars", "3")
    all_held_out = publish_pairs(article_pairs("zul", articles=range(10)), tmp_path / "all-test", synth_env, "--splits", "test=100")
    (tmp_path / "plain").mkdir()
    cases = {
        "no pairs config": ([str(nothing_kept)], "has no `pairs` config"),
        "no train rows": ([str(all_held_out)], "the `pairs` config has no train rows"),
        "not a dataset": ([str(tmp_path / "plain")], "not a dataset folder published by synth"),
        "no such folder": ([str(tmp_path / "missing")], "no such dataset folder"),
        "other languages": ([str(dataset), "--eval", f"{udhr / 'fra.txt'},{udhr / 'eng.txt'}"], "its first side reads as French (fr)"),
        "no evaluation set": ([str(dataset)], "no evaluation set with at least 5 pairs"),
        "student not offline": ([str(dataset), "--eval", str(held_out), "--student", "sentence-transformers/LaBSE"], "cannot load the student 'sentence-transformers/LaBSE'"),
        "bad option": ([str(dataset), "--objective", "contrastive"], "objective"),
    }
    with ThreadPoolExecutor(2) as pool:  # each waits mostly on start-up and imports
        runs = dict(zip(cases, pool.map(lambda case: synth("evaluate", *case[0], env=synth_env, timeout=300), cases.values())))
    for name, (args, message) in cases.items():
        done = runs[name]
        assert done.returncode == 2, (name, done.stderr)
        assert message in flat(done.stderr), (name, done.stderr)
        assert "Traceback" not in done.stderr, name


# --- the parts, on numbers that can be checked by hand -------------------------------------------------


def test_retrieval_metrics_and_procrustes_on_known_vectors() -> None:
    rng = np.random.default_rng(0)
    tgt = normalized(rng.normal(size=(20, 8)))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    src = tgt @ rotation.T  # the same points, rotated: base retrieval is poor, Procrustes undoes it
    assert bitext_retrieval(tgt, tgt) == {"accuracy_src2tgt": 1.0, "accuracy_tgt2src": 1.0, "mrr": 1.0}
    assert bitext_retrieval(src, tgt)["mrr"] < 0.6
    mapped = normalized(src @ procrustes(src, tgt))
    assert bitext_retrieval(mapped, tgt)["accuracy_src2tgt"] == 1.0
    # One pair's partner swapped with another's: two misses in each direction.
    swapped = tgt[[1, 0, *range(2, 20)]]
    scores = bitext_retrieval(tgt, swapped)
    assert scores["accuracy_src2tgt"] == scores["accuracy_tgt2src"] == 0.9
    # Queries: 3 passages, query 0 finds its passage 2nd, the others 1st.
    passages = np.eye(3)
    queries = normalized(np.array([[0.5, 0.9, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 1.0]]))
    assert query_retrieval(passages, queries, np.array([0, 1, 2])) == {"recall_at_10": 1.0, "mrr_at_10": round((0.5 + 1 + 1) / 3, 4)}


def test_overlap_and_repeats_are_removed_and_counted_and_the_control_moves_every_pair() -> None:
    pairs = Pairs("eval", ["Umuntu.", "Abantu bonke.", "Abantu bonke", "Inkululeko."], ["A person.", "All people.", "All humans.", "Freedom."])
    cleared = without_overlap(pairs, {text_key("FREEDOM")})
    assert cleared.src == ["Umuntu.", "Abantu bonke."]
    assert (cleared.excluded_overlap, cleared.excluded_duplicates) == (1, 1)
    control = shuffled(Pairs("train", [f"s{i}" for i in range(50)], [f"t{i}" for i in range(50)]), seed=0)
    assert sorted(control.tgt) == sorted(f"t{i}" for i in range(50))
    assert all(tgt != f"t{i}" for i, tgt in enumerate(control.tgt))


def test_a_dataset_on_the_hub_is_evaluated_by_its_repo_id(bantu, tmp_path: Path, synth_env: dict) -> None:
    """Pushed to a (local, fake) Hub as a private repo, the dataset is downloaded with the token
    from HF_TOKEN and evaluated; the results go to --out, and no card is touched."""
    import secrets
    import sys

    from synth.testing.fake_hub import FakeHub
    from test_hub import online_env

    dataset, held_out, train = bantu
    with FakeHub(token="hf_" + secrets.token_hex(16)) as hub:
        env = online_env(synth_env, hub, tmp_path / "hf-home", HF_TOKEN=hub.token)
        # Pushed from another process: this one is offline (huggingface_hub reads that once, at import).
        pushed = subprocess.run(
            [sys.executable, "-c", "import os, sys; from pathlib import Path; from synth.publish.hub import push_folder; "
             "push_folder(Path(sys.argv[1]), sys.argv[2], token=os.environ['HF_TOKEN'], message='test')", str(dataset), "synth-test/bantu-en"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert pushed.returncode == 0, pushed.stderr
        done = synth(
            "evaluate", "synth-test/bantu-en", "--eval", str(held_out), "--out", str(tmp_path / "results"),
            "--epochs", "1", "--max-seq-length", "32", "--objective", "distill", env=env,
        )
        missing = synth("evaluate", "synth-test/no-such-repo", "--eval", str(held_out), env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text(encoding="utf-8"))
    assert results["dataset"] == "synth-test/bantu-en" and results["train_pairs"] == len(train)
    # Multilingual distillation, the teacher being the student's starting weights.
    assert (results["objective"], results["teacher"]) == ("distill", "sentence-transformers/all-MiniLM-L6-v2")
    assert results["training"]["finetuned"]["steps"] > 0
    assert "results:" in flat(done.stderr) and "Evaluation section" not in flat(done.stderr)
    assert missing.returncode == 2 and "synth-test/no-such-repo: no such dataset on the Hub" in flat(missing.stderr)


def test_a_queries_dataset_is_scored_by_query_to_passage_recall(tmp_path: Path, synth_env: dict) -> None:
    """English questions for Zulu UDHR articles from the test server, 10 passages held out (the
    split goes by passage, so no held-out passage was trained on): recall@10 and MRR@10."""
    from synth.data import udhr_path
    from synth.testing.server_process import start_server

    out = tmp_path / "zu-en-queries"
    with start_server() as server:
        made = synth(
            "queries", str(udhr_path("zul")), "--lang", "zu", "--query-lang", "en", "--kinds", "question,keyword",
            "--out", str(out), "--base-url", server.base_url, "--model", "udhr-oracle", "--embedder", "none",
            "--lid-detectors", "none", "--splits", "test=10", env=synth_env,
        )
    assert made.returncode == 0, made.stderr
    done = synth("evaluate", str(out), "--epochs", "1", "--max-seq-length", "64", "--save-model", str(tmp_path / "student"), env=synth_env)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["kind"] == "queries" and (results["lang"], results["pivot_lang"]) == ("zu", "en")
    [test] = results["eval"]
    assert test["name"] == "test" and test["excluded_overlap"] == 0 and test["pairs"] >= 10
    for method in ("base", "procrustes", "finetuned"):
        assert set(test[method]) == {"recall_at_10", "mrr_at_10"}
        assert 0 < test[method]["mrr_at_10"] <= test[method]["recall_at_10"] <= 1
    assert "recall@10" in flat(done.stderr)
    # --save-model: the fine-tuned student, loadable as it is.
    assert (tmp_path / "student" / "modules.json").is_file() and (tmp_path / "student" / "config.json").is_file()


def test_backtranslate_with_evaluate_publishes_then_evaluates_in_one_run(tmp_path: Path, synth_env: dict) -> None:
    """`--evaluate`: the evaluation runs on what the job just published, inside the same run (the
    dataset's lock held), and its results are in the card."""
    from synth.data import udhr_path
    from synth.testing.server_process import start_server

    out = tmp_path / "zu-en"
    with start_server() as server:
        done = synth(
            "backtranslate", str(udhr_path("zul")), "--lang", "zu", "--out", str(out), "--base-url", server.base_url,
            "--model", "udhr-oracle", "--embedder", "none", "--lid-detectors", "none", "--max-words", "off",
            "--min-terminal-punctuation", "off", "--splits", "test=8", "--evaluate", env=synth_env, timeout=900,
        )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "eval" / "results.json").read_text(encoding="utf-8"))
    [test] = results["eval"]
    assert test["name"] == "test" and test["pairs"] + test["excluded_duplicates"] + test["excluded_overlap"] == 8
    assert results["train_pairs"] >= 18  # the oracle's answers are the real English articles
    assert "## Evaluation" in (out / "README.md").read_text(encoding="utf-8")
    assert "fine-tuned" in flat(done.stderr) and f"kept {results['train_pairs'] + 8} pairs" in flat(done.stderr)


def test_the_rejects_ablation_trains_on_kept_and_rejected_pairs_but_never_on_held_out_texts(bantu, tmp_path: Path, synth_env: dict) -> None:
    _, held_out, train = bantu
    # Long sentences rejected (too long), so the dataset has rejects; and one rejected pair is a
    # held-out Zulu article itself, which must stay out of the ablation's training.
    leaking = article_pairs("zul", articles=[29])
    dataset = publish_pairs(train + leaking, tmp_path / "with-rejects", synth_env, "--max-chars", "150", "--splits", "train")
    import pyarrow.parquet as pq

    rejected = [row for path in sorted((dataset / "rejects").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    assert leaking[0][0] in {row["text"] for row in rejected}
    done = synth("evaluate", str(dataset), "--eval", str(held_out), "--ablation", "rejects", "--epochs", "1", "--max-seq-length", "32", env=synth_env)
    assert done.returncode == 0, done.stderr
    results = json.loads((dataset / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["train_pairs"] == len(train) + 1 - len(rejected)
    assert results["rejects_left_out"] >= 1 and results["rejects_added"] + results["rejects_left_out"] == len(rejected)
    assert set(results["eval"][0]) >= {"base", "procrustes", "finetuned", "finetuned_with_rejects"}
    assert "fine-tuned on kept + rejected" in flat(done.stderr)


def test_length_grouped_batches_cover_every_pair_once_never_repeat_a_text_and_vary_by_seed_and_epoch() -> None:
    import random

    from synth.evaluate.student import length_grouped_sampler

    lengths = [random.Random(i).randint(10, 120) for i in range(100)]
    texts = [(f"s{i}", "shared" if i in (3, 7) else f"t{i}") for i in range(100)]  # two pairs share a text
    sampler = length_grouped_sampler(lengths, texts)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        batch_sampler = sampler(list(range(100)), batch_size=16, drop_last=False, seed=seed)
        batch_sampler.set_epoch(epoch)
        return [list(batch) for batch in batch_sampler]

    first = batches(0, 0)
    assert sorted(i for batch in first for i in batch) == list(range(100))
    assert not any({3, 7} <= set(batch) for batch in first)
    assert first == batches(0, 0)  # deterministic
    # The in-batch negatives change with the epoch and the seed (a small dataset is one pool).
    as_sets = lambda runs: {frozenset(batch) for batch in runs}  # noqa: E731
    assert as_sets(first) != as_sets(batches(0, 1)) and as_sets(first) != as_sets(batches(1, 0))
    # Batches still group by length: far less spread than random batches.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 55  # random batches of 16 from 10-120 spread ~95
