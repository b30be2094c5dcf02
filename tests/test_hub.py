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

# What a user would run to read the pushed repo back: nothing but `datasets`, by repo id.
LOAD_BACK = """
import json, sys
from datasets import load_dataset
print(json.dumps({c: {s: d.to_list() for s, d in load_dataset(sys.argv[1], c, cache_dir=sys.argv[2]).items()}
                  for c in ("default", "pairs", "translation")}))
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


def test_cli_pushes_one_commit_per_change_and_the_repo_loads_back(tmp_path, hub, openai_server, synth_env):
    out = tmp_path / "out"
    env = online_env(synth_env, hub, tmp_path / "hf-home", HF_TOKEN=hub.token)
    args = ["backtranslate", str(udhr_path("zul")), "--lang", "zu", "--limit", "6", "--base-url", openai_server.base_url,
            "--model", "udhr-oracle", "--out", str(out), "--push-to-hub", REPO]
    outputs = []

    first = synth([*args, "--rows-per-shard", "2"], env)
    outputs.append(first)
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

    again = synth([*args, "--rows-per-shard", "2"], env)
    outputs.append(again)
    assert again.returncode == 0, again.stderr
    assert "no new commit" in again.stderr
    assert len(hub.commits(REPO)) == 2

    with ThreadPoolExecutor(2) as pool:  # two independent refusals at once
        refused, untokened = pool.map(lambda run_env: synth(args, run_env), [
            {**env, "HF_TOKEN": "hf_wrong_" + secrets.token_hex(8)},
            {k: v for k, v in env.items() if k != "HF_TOKEN"},
        ])
    outputs += [refused, untokened]
    assert refused.returncode == 4
    assert "push to org/zu-en failed" in " ".join(refused.stderr.split()) and "401" in refused.stderr
    assert hub.unauthorized >= 1 and len(hub.commits(REPO)) == 2
    # No token at all: refused before any work, not after a whole run.
    assert untokened.returncode == 2 and "$HF_TOKEN" in untokened.stderr and "Traceback" not in untokened.stderr

    fewer_shards = synth(args, env)  # the same rows in one shard per split: stale shards go
    outputs.append(fewer_shards)
    assert fewer_shards.returncode == 0, fewer_shards.stderr
    assert len(hub.commits(REPO)) == 3
    local = published_files(out)
    head = hub.repos[REPO].head
    assert set(head.files) - {".gitattributes"} == set(local)
    assert {name: hub.file_bytes(REPO, name) for name in local} == local

    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_BACK, REPO, str(tmp_path / "datasets-cache")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    outputs.append(loaded)
    assert loaded.returncode == 0, loaded.stderr
    remote = json.loads(loaded.stdout)
    assert sum(len(rows) for rows in remote["pairs"].values()) == 6
    assert remote["pairs"]["train"][0]["anchor"].startswith("All human beings are born free")
    assert [row["translation"]["zu"] for row in remote["translation"]["train"]] == [
        row["text"] for row in remote["default"]["train"]
    ]

    secret = hub.token
    for result in outputs:
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
