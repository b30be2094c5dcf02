"""What a run is doing, for people and for machines, through the standard `logging` module.

`RunProgress` follows a job: its stage (read, generate, filter, publish, then push or evaluate),
the requests (or records) planned and done, the rate and the time left, answers from the cache,
retries and chunks staged. It logs on the `synth.progress` logger: a record at each stage change,
one every `every` seconds while the run goes (from a timer thread, so lines keep coming while the
filters and the publish run), and a record per staged chunk at DEBUG. Each record carries the
figures as `record.synth` (a dict), so that a host application, Prefect's logger
(`PREFECT_LOGGING_EXTRA_LOGGERS=synth`) or `JsonFormatter` can take them as data; the message is
the same figures as one line of text. The CLI shows them as a rich display in a terminal and as
these lines when stderr is not one.
"""

import json
import logging
import threading
import time
from datetime import datetime, timezone

log = logging.getLogger("synth.progress")

STAGES = ("read", "generate", "filter", "publish", "evaluate", "push", "done")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RunProgress:
    """Thread-safe counters of one run; `snapshot()` is what every line and display shows."""

    def __init__(self, task: str, unit: str = "requests", every: float | None = None):
        self.task, self.unit, self.every = task, unit, every
        self.stage = "start"  # until the output folder is checked and locked: an error there is the only line
        self.total: int | None = None
        self.done = 0
        self.chunks = 0
        self.chunks_staged = 0
        self.stats_sources: list = []  # live GenerationStats of the run's chunks (cache hits, retries)
        self.started = time.monotonic()
        self.stage_started = self.started
        self._rate_from: tuple[float, int] | None = None  # (time, done) of the first piece of work
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.listeners: list = []      # callables(snapshot) on every change (the rich display)
        self._last_line = 0.0

    # --- what the job reports ----------------------------------------------------------------------
    def plan(self, total: int, chunks: int) -> None:
        with self._lock:
            self.total, self.chunks = total, chunks
        self._changed()

    def set_stage(self, stage: str) -> None:
        with self._lock:
            if stage == self.stage:
                return
            self.stage, self.stage_started = stage, time.monotonic()
            if stage == "generate":  # the rate counts from here: a model's first answers may come late, and in batches
                self._rate_from = (self.stage_started, self.done)
        self._log(self.snapshot("stage"))
        self._changed()

    def advance(self, count: int) -> None:
        with self._lock:
            if self._rate_from is None:
                self._rate_from = (self.stage_started, self.done)
            self.done += count
        self._changed()

    def chunk_staged(self, index: int, kept: int, rejected: int, reused: bool = False) -> None:
        with self._lock:
            self.chunks_staged += 1
        snapshot = self.snapshot("chunk")
        snapshot.update(chunk=index, kept=kept, rejected=rejected, reused=reused)
        log.debug(
            "chunk %d %s: %d kept, %d rejected (%d of %d chunks staged)", index, "taken as staged before" if reused else "staged",
            kept, rejected, snapshot["chunks_staged"], snapshot["chunks"], extra={"synth": snapshot},
        )
        self._changed()

    # --- what is shown -----------------------------------------------------------------------------
    def snapshot(self, event: str = "progress") -> dict:
        with self._lock:
            now = time.monotonic()
            cache_hits = sum(s.cache_hits for s in self.stats_sources)
            retries = sum(s.retries for s in self.stats_sources)
            rate = None
            if self._rate_from is not None and now - self._rate_from[0] >= 1.0:
                rate = (self.done - self._rate_from[1]) / (now - self._rate_from[0])
            eta = None
            if rate and self.total is not None and self.stage == "generate":
                eta = max(self.total - self.done, 0) / rate if rate > 0 else None
            return {
                "event": event, "task": self.task, "stage": self.stage, "unit": self.unit,
                "done": self.done, "total": self.total,
                "percent": round(100.0 * self.done / self.total, 1) if self.total else None,
                "rate_per_s": round(rate, 2) if rate is not None else None,
                "eta_s": round(eta, 1) if eta is not None else None,
                "elapsed_s": round(now - self.started, 1),
                "cache_hits": cache_hits, "retries": retries,
                "chunks_staged": self.chunks_staged, "chunks": self.chunks,
            }

    def line(self, snapshot: dict | None = None) -> str:
        """The figures as one line: `generate 120/480 requests (25%), 4.1/s, ETA 1m28s, ...`."""
        s = snapshot or self.snapshot()
        if s["event"] == "stage":  # where the run is going, said once
            plan = f"{s['total']:,} {s['unit']} in {s['chunks']} chunk{'s' * (s['chunks'] != 1)}" if s["total"] is not None else ""
            return {
                "start": "start: checking the output folder",
                "read": "read: reading the corpus to plan the run",
                "generate": f"generate: {plan} to answer (from the cache or the model)",
                "filter": f"filter: {s['done']:,} {s['unit']} in; the filters finish the last chunks ({s['chunks_staged']}/{s['chunks']} staged)" if s["total"] is not None and s["unit"] == "requests" else f"filter: {plan}",
                "publish": f"publish: writing the dataset ({s['chunks_staged']} chunks)",
                "evaluate": "evaluate: training a student on the dataset",
                "push": "push: uploading the dataset to the Hub",
                "done": f"done: {s['done']:,} {s['unit']}, cache hits {s['cache_hits']:,}, retries {s['retries']:,}, in {_duration(s['elapsed_s'])}",
            }.get(s["stage"], s["stage"])
        if s["stage"] == "read":
            return f"read: reading the corpus to plan the run, elapsed {_duration(s['elapsed_s'])}"
        total = f"/{s['total']:,}" if s["total"] is not None else ""
        percent = f" ({s['percent']:.0f}%)" if s["percent"] is not None else ""
        rate = f", {s['rate_per_s']:.1f}/s" if s["rate_per_s"] is not None else ""
        eta = f", ETA {_duration(s['eta_s'])}" if s["eta_s"] is not None else ""
        chunks = f"/{s['chunks']}" if s["total"] is not None else ""  # the plan counts the chunks with the total
        return (
            f"{s['stage']}: {s['done']:,}{total} {s['unit']}{percent}{rate}{eta}, cache hits {s['cache_hits']:,}, "
            f"retries {s['retries']:,}, chunks staged {s['chunks_staged']}{chunks}, elapsed {_duration(s['elapsed_s'])}"
        )

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener(self)

    # --- the periodic line -------------------------------------------------------------------------
    def __enter__(self) -> "RunProgress":
        self._last_line = time.monotonic()
        if self.every:
            self._ticker = threading.Thread(target=self._tick, name="synth-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)

    def _log(self, snapshot: dict) -> None:
        self._last_line = time.monotonic()
        log.info(self.line(snapshot), extra={"synth": snapshot})

    def _tick(self) -> None:
        while not self._stop.wait(min(self.every, 1.0)):
            if self.stage != "start" and time.monotonic() - self._last_line >= self.every:  # a stage's line counts as one
                self._log(self.snapshot())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's figures (`synth`)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        data.update(getattr(record, "synth", None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS message` (a warning says so)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"{stamp} {level}{record.getMessage()}"
