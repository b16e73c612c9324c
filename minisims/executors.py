"""Where a sweep command's tasks run: in this process (the default), a pool, or a Dask cluster.

    (default)             in this process, one task after another
    --workers N           figure 4: a thread pool of N on this machine
    --processes N         figure 4: a process pool of N on this machine
    --dask-local N        a local Dask cluster of N worker processes, one thread each
    --scheduler ADDRESS   an existing Dask cluster: ``dask scheduler`` on one machine, then
                          ``dask worker ADDRESS --nthreads 1 --no-nanny`` on each (for GPUs, one
                          worker per GPU: ``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1
                          --no-nanny --resources GPU=1``; with --device gpu every task asks for
                          GPU=1)

A task is one chunk of runs (minisims.loops.sweep, map_chunks): plain picklable data and a
top-level function, and every run has its own random streams, so every executor gives the same
numbers bit for bit (for one BLAS thread per task). Dask is optional: it is imported only when
--dask-local or --scheduler is used (``pip install -e .[dask]``), and its log lines are
silenced (DASK_LOGGING__DISTRIBUTED=info shows them) so that errors stay one line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from .cli_util import fail, int_at_least

CONNECT_TIMEOUT_S = 5     # --scheduler: a wrong address fails after this long, not never
WORKERS_TIMEOUT_S = 30    # --scheduler: how long to wait for the cluster's first worker
INSTALL = "pip install 'dask[distributed]' (or pip install -e .[dask])"
# a local cluster without the dashboard; its HTTP server on a free port (the default, 8787, may be
# another cluster's: Dask would then warn)
NO_DASHBOARD = dict(dashboard_address=":0", scheduler_kwargs={"dashboard": False})
# Two Dask defaults slow the toy's many small NumPy steps down (timings: docs/notes/core.md):
# - the nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536; a fixed trim threshold turns off
#   glibc's dynamic mmap threshold, and every large temporary is mapped afresh (about 3x slower);
# - each worker samples its task's stack every 10 ms (the dashboard's profile).
# The local workers run without both; for `dask worker`, see toy/README.md.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False}


def add_executor_options(p, pools: bool = False) -> None:
    """--dask-local and --scheduler (and, with ``pools``, --workers and --processes), one at most."""
    g = p.add_mutually_exclusive_group()
    if pools:
        g.add_argument("--workers", type=int_at_least(1), help="threads running tasks at once")
        g.add_argument("--processes", type=int_at_least(1), help="use a process pool of this size instead")
    g.add_argument("--dask-local", type=int_at_least(1), metavar="N",
                   help="run the tasks on a local Dask cluster of N worker processes (one thread each)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the tasks on the Dask cluster of this scheduler, e.g. tcp://host:8786 "
                        "(workers: dask worker ADDRESS --nthreads 1 --no-nanny [--resources GPU=1])")


@contextlib.contextmanager
def open_executor(prog: str, args, workers: int = 1):
    """The executor the command line asks for (None: the default, in this process), closed on the
    way out. A failure or Ctrl-C inside the block cancels the tasks not yet started and stops the
    running ones where that is possible (pool and local-cluster processes are killed; a thread
    cannot be, and a remote worker finishes its task), without waiting for them."""
    if getattr(args, "scheduler", None) or getattr(args, "dask_local", None):
        with _dask_executor(prog, args) as executor:
            yield executor
        return
    if getattr(args, "processes", None):  # workers leave Ctrl-C to this process, which ends them
        executor = ProcessPoolExecutor(args.processes, initializer=signal.signal,
                                       initargs=(signal.SIGINT, signal.SIG_IGN))
    elif workers > 1:
        executor = ThreadPoolExecutor(workers)
    else:
        yield None
        return
    try:
        yield executor
    except BaseException:
        if isinstance(executor, ProcessPoolExecutor):
            for proc in list((getattr(executor, "_processes", None) or {}).values()):
                proc.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()


def _import_distributed(prog: str):
    """distributed, with its logging silenced (here and in the worker processes it starts), or a
    one-line exit 2 when it is not installed."""
    level = os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")  # read at import
    try:
        import distributed
    except ImportError:
        fail(prog, f"--dask-local and --scheduler need Dask: {INSTALL}", 2)
    logging.getLogger("distributed").setLevel(level.upper())  # if it was imported before
    return distributed


@contextlib.contextmanager
def _dask_executor(prog: str, args):
    """A concurrent.futures executor on a Dask cluster: a local one of --dask-local processes, or
    the one at --scheduler. With --device gpu every task asks for the worker resource GPU=1."""
    distributed = _import_distributed(prog)
    import dask
    gpu = getattr(args, "device", "cpu") == "gpu"
    cluster = None
    if args.dask_local:
        # the worker processes inherit "ignore SIGINT": a Ctrl-C in the terminal reaches the whole
        # process group, and only this process should act on it (a Ctrl-C during these few seconds
        # of start-up is lost: press it again)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            with dask.config.set(WORKER_CONFIG):
                cluster = distributed.LocalCluster(n_workers=args.dask_local, threads_per_worker=1,
                                                   processes=True, **NO_DASHBOARD,
                                                   resources={"GPU": 1} if gpu else None)
        except Exception as e:  # e.g. no worker process could start
            fail(prog, f"could not start a local Dask cluster of {args.dask_local} workers: {e}", 1)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        client = distributed.Client(cluster)
    else:
        client = _connect(distributed, prog, args.scheduler, gpu)
    executor = client.get_executor(pure=False, resources={"GPU": 1} if gpu else None)
    try:
        yield executor
    except BaseException:
        _close(executor, client, cluster, kill=True)
        raise
    _close(executor, client, cluster, kill=False)


def _connect(distributed, prog: str, address: str, gpu: bool):
    """A Client of the scheduler at ``address`` with at least one worker (with GPU=1 for
    ``gpu``); a wrong address, no worker or no GPU worker is a one-line exit 2."""
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as e:  # unreachable, refused, or not an address
        fail(prog, f"cannot reach the Dask scheduler at {address!r}: {e}", 2)
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        workers = client.scheduler_info()["workers"].values()
    except (OSError, TimeoutError) as e:
        client.close()
        fail(prog, f"the Dask scheduler at {address} has no worker after {WORKERS_TIMEOUT_S} s ({e}): "
                   f"start some with dask worker {address} --nthreads 1 --no-nanny", 2)
    if gpu and not any(w.get("resources", {}).get("GPU") for w in workers):
        client.close()
        fail(prog, f"no worker of {address} offers the GPU resource that --device gpu tasks ask "
                   f"for: start them with dask worker {address} --nthreads 1 --no-nanny --resources GPU=1", 2)
    return client


def _close(executor: Executor, client, cluster, kill: bool) -> None:
    """Close the client (and the local cluster). With ``kill`` (a failure or Ctrl-C) the tasks
    not yet done are cancelled and local worker processes killed at once, so the command ends
    within a second instead of waiting for the running tasks."""
    with contextlib.suppress(Exception):
        if kill:
            executor.shutdown(wait=False)  # cancels this executor's pending and running futures
            for nanny in (cluster.workers.values() if cluster is not None else ()):
                if nanny.pid:
                    os.kill(nanny.pid, signal.SIGKILL)  # a worker process this command started
        client.close(timeout=2)
        if cluster is not None:
            cluster.close(timeout=2)
