"""Content-addressed, crash-consistent cache of generations (SQLite in WAL mode).

The key is a hash of what determines the answer: model, messages and sampling parameters. Each
answer is committed as soon as it arrives, so a run killed at any moment resends nothing that had
already succeeded.
"""

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by threads, serialised by a lock: writes are tiny and rare next
        # to a request's latency.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # survives kill -9; only power loss may drop the last commits
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT, answer TEXT NOT NULL)"
            )

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                batch = keys[start : start + 500]
                marks = ",".join("?" * len(batch))
                for key, answer in self._db.execute(
                    f"SELECT key, answer FROM generations WHERE key IN ({marks})", batch
                ):
                    found[key] = json.loads(answer)
        return found

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, answer: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO generations (key, model, answer) VALUES (?, ?, ?)",
                (key, model, json.dumps(answer, ensure_ascii=False)),
            )

    def put_many(self, items: list[tuple[str, str, dict]]) -> None:
        """(key, model, answer) triples, committed together (one transaction: all or none)."""
        rows = [(key, model, json.dumps(answer, ensure_ascii=False)) for key, model, answer in items]
        with self._lock:
            with self._db:  # a transaction: BEGIN ... COMMIT
                self._db.executemany("INSERT OR REPLACE INTO generations (key, model, answer) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
