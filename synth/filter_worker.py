"""The filter process: where a job's chunks are filtered and staged while its event loop keeps the
requests going.

Filters are Python that holds the GIL (difflib, regexes, detectors, tokenizers): on a thread of
the event loop's process they starve generation (every socket call then waits for the GIL). One
worker process per synth process filters and stages the chunks of the engine (synth.job
`run_async`); it outlives a job, so the models it loaded serve the next job too. Like any library
with worker processes, a script that runs a job needs the `if __name__ == "__main__":` guard (the
worker imports the main module). In a daemonic process (a Dask worker), which may not start
children, a thread stands in for it.
"""

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import lru_cache

log = logging.getLogger("synth")

class _FilterPool(ProcessPoolExecutor):
    """Its process is born with SIGINT blocked: Ctrl-C in a terminal reaches the whole process
    group, and the parent, which stops this process itself (stop_filter_process), is the one to
    answer it; the child would print a KeyboardInterrupt from wherever it was, even mid-start."""

    def submit(self, fn, /, *args, **kwargs):
        # A spawning pool starts its process inside submit, in the calling thread, whose signal
        # mask the new process inherits across fork and exec.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_filter_pool: ProcessPoolExecutor | None = None
_worker_jobs: dict[str, object] = {}  # the jobs rebuilt in the filter process, by class and config
_worker_jobs_lock = threading.Lock()


def filter_executor() -> Executor:
    global _filter_pool
    if multiprocessing.current_process().daemon:
        # A daemonic process (a Dask worker) may not start children: the filters run in a thread
        # of this process, still beside the event loop that keeps the requests going.
        return _filter_thread()
    if _filter_pool is None:
        _filter_pool = _FilterPool(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_filter_worker
        )
    return _filter_pool


def forget_broken_pool() -> None:
    """The filter process died (killed, out of memory): the next job starts another."""
    global _filter_pool
    _filter_pool = None


def stop_filter_process() -> None:
    """End the filter process now (a run stopped by a signal): what it was staging is redone on
    the rerun, and the interpreter does not wait for it on the way out."""
    global _filter_pool
    pool, _filter_pool = _filter_pool, None
    if pool is None:
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _start_filter_worker() -> None:
    # Niced: where CPU is short, the event loop (and a local server) go first and the filters,
    # which may lag behind by BUFFERED_ROWS, take what is left.
    os.nice(5)
    # A pool worker outlives a parent killed with -9 (it holds its own end of the task queue):
    # exit with it instead. What the worker was staging is redone on the rerun.
    parent = multiprocessing.parent_process()

    def exit_with_parent() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=exit_with_parent, name="synth-exit-with-parent", daemon=True).start()


def warm_filters_in_worker(job_class: type, config) -> None:
    """In the filter process, while the first requests are out: load what the filters need."""
    try:
        in_worker(job_class, config, "warm_filters")
    except Exception as error:  # noqa: BLE001  the first chunk's filtering meets it again, and reports it
        log.debug("warming the filters up failed: %r", error)


@lru_cache(maxsize=1)
def _filter_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-filter")



def in_worker(job_class: type, config, method: str, *args):
    """In the filter process: `method` of the job, rebuilt from its config (once per config)."""
    key = f"{job_class.__module__}.{job_class.__qualname__}:{config.model_dump_json()}"
    with _worker_jobs_lock:
        if key not in _worker_jobs:
            _worker_jobs.clear()
            _worker_jobs[key] = job_class(config)
        job = _worker_jobs[key]
    return getattr(job, method)(*args)
