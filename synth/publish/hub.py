"""Push a published dataset folder to the Hugging Face Hub: one commit per publish, none when the
Hub already holds the same files.

The commit is made with `HfApi.create_commit` (not `upload_folder`, which with hf_xet installed may
split a large folder into several commits). Unchanged files are left out by huggingface_hub itself:
the Hub's preupload answer gives each file's remote oid (git blob sha1, or LFS sha256), and when
every file matches, no commit is made. Data files and plots the folder no longer has are deleted in
the same commit, so `load_dataset(repo)` never mixes shards of two publishes. The token is passed
in; it is never printed, logged or written.
"""

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError

from synth.redact import register, scrub

# What a publish writes (synth.publish.dataset); nothing else in the folder is uploaded.
PUBLISHED_FILES = ["README.md", "stats.json", "*.parquet", "plots/*.png", "eval/results.json", "eval/*.png"]
# Remote files a publish owns: those the folder lacks are deleted.
OWNED_REMOTE_FILES = ["*.parquet", "plots/*.png", "eval/results.json", "eval/*.png"]
REPO_TYPE = "dataset"


class HubPushError(RuntimeError):
    pass


@dataclass
class HubPush:
    repo_id: str
    revision: str        # the commit the repo's main branch is at after the push
    commit_url: str      # a link to that revision
    changed: bool        # False: the Hub already had exactly these files, no commit was made


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str | None,
    message: str,
    private: bool = True,
    endpoint: str | None = None,
) -> HubPush:
    """Create the dataset repo if needed (private by default; an existing one keeps its visibility)
    and commit the folder's published files to it. `endpoint` defaults to HF_ENDPOINT / the Hub."""
    if not token:
        raise HubPushError(
            "no Hugging Face token: set HF_TOKEN (or the variable named by --hub-token-env), or pass one in"
        )
    folder = Path(folder)
    local = _published_files(folder)
    if "README.md" not in local:
        raise HubPushError(f"{folder} holds no published dataset (no README.md): publish before pushing")
    register(token)
    try:
        return _push(folder, repo_id, local, token=token, message=message, private=private, endpoint=endpoint)
    except HfHubHTTPError as error:
        # The Hub's answer may quote the token: scrubbed here, so that neither the CLI's message nor
        # a flow's failed state (kept in Prefect's database) ever holds it.
        raise HfHubHTTPError(scrub(str(error)), response=error.response) from None


def _push(folder: Path, repo_id: str, local: list[str], *, token: str, message: str, private: bool, endpoint: str | None) -> HubPush:
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    before = api.repo_info(repo_id, repo_type=REPO_TYPE).sha
    stale = [
        path for path in api.list_repo_files(repo_id, repo_type=REPO_TYPE)
        if path not in local and any(fnmatch.fnmatch(path, pattern) for pattern in OWNED_REMOTE_FILES)
    ]
    operations = [CommitOperationDelete(path) for path in stale] + [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=folder / path) for path in local
    ]
    info = api.create_commit(repo_id, operations, commit_message=message, repo_type=REPO_TYPE)
    return HubPush(repo_id=repo_id, revision=info.oid, commit_url=info.commit_url, changed=info.oid != before)


def _published_files(folder: Path) -> list[str]:
    """The folder's published files, relative and sorted (hidden files and .synth/ never). Of the
    shards, those of the version stats.json lists (a publish cut short may have left another's)."""
    try:
        listed = set(json.loads((folder / "stats.json").read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in Path(relative).parts):
            continue
        if listed is not None and relative.endswith(".parquet") and relative not in listed:
            continue
        if any(fnmatch.fnmatch(relative, pattern) for pattern in PUBLISHED_FILES):
            found.append(relative)
    return found
