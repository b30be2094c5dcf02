"""Content-addressed, crash-consistent cache of generations (SQLite in WAL mode).

The key is a hash of what determines the answer: model, messages and sampling parameters. Each
answer is committed as soon as it arrives, so a run killed at any moment resends nothing that had
already succeeded.

A damaged cache never blocks a run. A cache file SQLite cannot read (cut short, overwritten) is
set aside (moved to `damaged/` beside it with the time in its name, never deleted), the answers
still readable in it are copied into a fresh cache, and the others are asked again. An entry that
is not a readable answer is moved to the `damaged_generations` table and asked again. Each repair
is logged as a warning on the "synth" logger. What is stored is scrubbed of secrets first.
"""

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from synth.redact import scrub

log = logging.getLogger("synth")

# SQLite's primary result codes for a damaged file.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def is_damage(error: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged (not: full disk, locked, read-only)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(error).lower()
    return any(words in text for words in ("malformed", "not a database", "quick_check", "damaged"))


def _valid_answer(answer) -> bool:
    return isinstance(answer, dict) and isinstance(answer.get("text"), str) and all(
        isinstance(answer.get(name, 0), int) for name in ("prompt_tokens", "completion_tokens")
    )


def _stored(answer: dict) -> str:
    if isinstance(answer.get("text"), str):
        answer = {**answer, "text": scrub(answer["text"])}
    return json.dumps(answer, ensure_ascii=False)


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by threads, serialised by a lock: writes are tiny and rare next
        # to a request's latency.
        self._lock = threading.Lock()
        self.repairs: list[str] = []  # what was set aside, for the run's report
        with self._lock:
            try:
                self._open(check=True)
            except sqlite3.DatabaseError as error:
                if not is_damage(error):
                    raise
                self._recover(error)

    # --- opening and repairing ---------------------------------------------------------------------
    def _open(self, check: bool = False) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # survives kill -9; only power loss may drop the last commits
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT, answer TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS damaged_generations (key TEXT, model TEXT, answer TEXT, reason TEXT, found TEXT)"
            )
            if check:
                result = self._db.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {result}")
        except BaseException:
            self._db.close()
            raise

    def _recover(self, error: BaseException) -> None:
        """Set the damaged file aside, start a fresh one, copy in what can still be read."""
        try:
            self._db.close()
        except Exception:
            pass
        stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
        damaged_dir = self.path.parent / "damaged"
        damaged_dir.mkdir(exist_ok=True)
        aside = damaged_dir / f"{self.path.name}.{stamp}"
        # The write-ahead log and its index go with the file: together they are the database.
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        self._open()
        salvaged = self._salvage(aside)
        message = (
            f"the generation cache {self.path} is damaged ({str(error)[:200]}): set aside as {aside}; "
            f"{salvaged} intact answers kept, the others are asked again"
        )
        self.repairs.append(message)
        log.warning("%s", message)

    def _salvage(self, damaged: Path) -> int:
        """Copy every readable, valid answer of a damaged cache file into this one."""
        rows: dict[str, tuple[str, str, str]] = {}
        try:
            old = sqlite3.connect(damaged, isolation_level=None)
        except sqlite3.Error:
            return 0
        try:
            # Two scans: in rowid order (the table), and in key order (its index, then the table):
            # a damaged page stops one scan but not necessarily the other.
            for query in ("SELECT key, model, answer FROM generations", "SELECT key, model, answer FROM generations ORDER BY key"):
                try:
                    for key, model, answer in old.execute(query):
                        try:
                            if isinstance(key, str) and _valid_answer(json.loads(answer)):
                                rows.setdefault(key, (key, model, answer))
                        except (TypeError, ValueError):
                            continue
                except sqlite3.Error:
                    continue
        finally:
            old.close()
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO generations (key, model, answer) VALUES (?, ?, ?)", list(rows.values()))
        return len(rows)

    def _guarded(self, operation):
        """Run `operation()` (under the lock); a cache found damaged on the way is repaired and
        the operation run once more on the fresh one."""
        with self._lock:
            try:
                return operation()
            except sqlite3.DatabaseError as error:
                if not is_damage(error):
                    raise
                self._recover(error)
                return operation()

    # --- reading and writing ---------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, dict]:
        def read() -> dict[str, dict]:
            found: dict[str, dict] = {}
            bad: list[tuple[str, str, str, str]] = []
            for start in range(0, len(keys), 500):
                batch = keys[start : start + 500]
                marks = ",".join("?" * len(batch))
                for key, model, answer in self._db.execute(
                    f"SELECT key, model, answer FROM generations WHERE key IN ({marks})", batch
                ):
                    try:
                        parsed = json.loads(answer)
                    except (TypeError, ValueError) as error:
                        bad.append((key, model, answer, f"not JSON: {error}"))
                        continue
                    if not _valid_answer(parsed):
                        bad.append((key, model, answer, "not an answer"))
                        continue
                    found[key] = parsed
            if bad:
                self._set_entries_aside(bad)
            return found

        return self._guarded(read)

    def _set_entries_aside(self, bad: list[tuple[str, str, str, str]]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._db:
            self._db.executemany(
                "INSERT INTO damaged_generations (key, model, answer, reason, found) VALUES (?, ?, ?, ?, ?)",
                [(key, model, answer if isinstance(answer, str) else repr(answer), reason, now) for key, model, answer, reason in bad],
            )
            self._db.executemany("DELETE FROM generations WHERE key = ?", [(key,) for key, *_ in bad])
        message = (
            f"{len(bad)} damaged entries of the generation cache {self.path} (first: {bad[0][3][:100]}) moved to its "
            "damaged_generations table: asked again"
        )
        self.repairs.append(message)
        log.warning("%s", message)

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, answer: dict) -> None:
        self.put_many([(key, model, answer)])

    def put_many(self, items: list[tuple[str, str, dict]]) -> None:
        """(key, model, answer) triples, committed together (one transaction: all or none)."""
        rows = [(key, model, _stored(answer)) for key, model, answer in items]

        def write() -> None:
            with self._db:  # a transaction: BEGIN ... COMMIT
                self._db.executemany("INSERT OR REPLACE INTO generations (key, model, answer) VALUES (?, ?, ?)", rows)

        self._guarded(write)

    def __len__(self) -> int:
        return self._guarded(lambda: self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
