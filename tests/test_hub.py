"""`--push-to-hub` against a local fake Hub (synth.testing.fake_hub): the real huggingface_hub client
over HTTP, as a user runs it. The pushes run in `synth` subprocesses because huggingface_hub reads
HF_ENDPOINT and offline mode once, at import, and this test process is offline."""

import json
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from synth.data import udhr_path
from synth.testing.fake_hub import FakeHub, card_metadata_errors

from conftest import SYNTH_BIN

REPO = "org/zu-en"
ONLINE_ONLY = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")

# The library path the Prefect flow takes, run against the same folder later: resume the staged
# chunks, publish them with other shard sizes, push (an update, then the same again, then with a
# wrong token), and read the repo back by its id with nothing but `datasets`.
LATER_RUN = """
import json, sys, time
from datasets import load_dataset
from huggingface_hub.errors import HfHubHTTPError
from synth.backtranslate import BacktranslateJob
from synth.config import BacktranslateConfig

out, repo, token, corpus, base_url, cache = sys.argv[1:]
config = BacktranslateConfig(corpus=[corpus], lang="zu", limit=6, base_url=[base_url], model="udhr-oracle",
                             out=out, push_to_hub=repo)
job = BacktranslateJob(config)
results = [job.finished(chunk) for chunk in job.chunks()]
assert all(results), "the CLI run staged every chunk"
published, _ = job.publish(results, time.time(), run_id="later-run")
report = {"update": vars(job.push(published, "later-run", token=token))}
report["again"] = vars(job.push(published, "again-run", token=token))
try:
    job.push(published, "refused-run", token="hf_wrong_token_0123")
except HfHubHTTPError as error:
    report["refused"] = str(error)
report["loaded"] = {c: {s: d.to_list() for s, d in load_dataset(repo, c, cache_dir=cache, token=token).items()}
                    for c in ("default", "pairs", "translation")}
print(json.dumps(report))
"""


@pytest.fixture
def hub():
    with FakeHub(token="hf_" + secrets.token_hex(16)) as hub:
        yield hub


def online_env(synth_env: dict, hub: FakeHub, home: Path, **extra) -> dict:
    env = {k: v for k, v in synth_env.items() if k not in ONLINE_ONLY}
    # HF_HOME: no token saved by the machine's user can stand in for the one given.
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), **extra)
    return env


def synth(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), *args], env=env, capture_output=True, text=True, timeout=300)


def published_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*") if p.is_file() and not p.relative_to(out).as_posix().startswith(".synth/")
    }


def test_pushes_make_one_commit_per_change_and_the_repo_loads_back(tmp_path, hub, openai_server, synth_env):
    out = tmp_path / "out"
    env = online_env(synth_env, hub, tmp_path / "hf-home", HF_TOKEN=hub.token)
    args = ["backtranslate", str(udhr_path("zul")), "--lang", "zu", "--limit", "6", "--base-url", openai_server.base_url,
            "--model", "udhr-oracle", "--out", str(out), "--push-to-hub", REPO]

    with ThreadPoolExecutor(2) as pool:
        first, untokened = pool.map(lambda run: synth(*run), [
            ([*args, "--rows-per-shard", "2"], env),
            ([*args[:-4], "--out", str(tmp_path / "other"), "--push-to-hub", REPO], {k: v for k, v in env.items() if k != "HF_TOKEN"}),
        ])

    # No token: refused before any work, not after a whole run.
    assert untokened.returncode == 2 and "$HF_TOKEN" in untokened.stderr and "Traceback" not in untokened.stderr
    assert not (tmp_path / "other").exists()
    assert first.returncode == 0, first.stderr
    commits = hub.commits(REPO)
    assert len(commits) == 2  # the repo's initial commit, then this run's
    (run_record,) = (out / ".synth" / "runs").glob("*.json")
    assert run_record.stem in commits[-1].title
    assert f"{hub.url}/datasets/{REPO}/commit/{commits[-1].oid}" in " ".join(first.stderr.split())
    assert hub.repos[REPO].private
    assert hub.validations and not any(hub.validations)  # the card's metadata passed the Hub's check
    local = published_files(out)
    assert len([name for name in local if name.startswith("pairs/train-")]) == 3
    assert {name: hub.file_bytes(REPO, name) for name in local} == local

    later = subprocess.run(
        [sys.executable, "-c", LATER_RUN, str(out), REPO, hub.token, str(udhr_path("zul")), openai_server.base_url,
         str(tmp_path / "datasets-cache")],
        env={k: v for k, v in env.items() if k != "HF_TOKEN"}, capture_output=True, text=True, timeout=300,
    )
    assert later.returncode == 0, later.stderr
    report = json.loads(later.stdout)

    # One shard per split now: a new commit, and the three-shard files are gone from the repo.
    commits = hub.commits(REPO)
    assert len(commits) == 3 and "later-run" in commits[-1].title
    assert report["update"] == {"repo_id": REPO, "revision": commits[-1].oid, "changed": True,
                                "commit_url": f"{hub.url}/datasets/{REPO}/commit/{commits[-1].oid}"}
    local = published_files(out)
    assert set(hub.repos[REPO].head.files) - {".gitattributes"} == set(local)
    assert {name: hub.file_bytes(REPO, name) for name in local} == local
    # The same files again: huggingface_hub finds nothing changed and makes no commit.
    assert report["again"] == {**report["update"], "changed": False}
    assert "401" in report["refused"] and "hf_wrong_token_0123" not in report["refused"]
    assert hub.unauthorized >= 1 and len(hub.commits(REPO)) == 3

    loaded = report["loaded"]
    assert sum(len(rows) for rows in loaded["pairs"].values()) == 6
    assert loaded["pairs"]["train"][0]["anchor"].startswith("All human beings are born free")
    assert [row["translation"]["zu"] for row in loaded["translation"]["train"]] == [row["text"] for row in loaded["default"]["train"]]

    secret = hub.token
    for result in (first, untokened, later):
        assert secret not in result.stdout and secret not in result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    assert not [n for c in hub.commits(REPO) for n in c.files if secret.encode() in hub.file_bytes(REPO, n, c.oid)]


def test_fake_hub_refuses_card_metadata_the_hub_would_refuse():
    good = "---\nlanguage:\n- zu\nsize_categories:\n- n<1K\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/*.parquet\n---\n"
    assert card_metadata_errors(good, "dataset") == []
    bad = "---\nlanguage: [Zulu]\nsize_categories: [huge]\nconfigs:\n- data_files: x\n---\n"
    assert card_metadata_errors(bad, "dataset") == [
        "size_categories: unknown value 'huge'", "language: 'Zulu' is not an ISO 639-1/3 code", "every config needs a config_name",
    ]
