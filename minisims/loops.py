"""Self-consuming (autophagous) loops, paper Section 2 (Definition 1) and Section 4.2.1.

# R runs (the ensemble axis), G generations, n points, D data dimension (2), C cells of a sweep

Generation 1 trains on real data only, G^1 = A(D_r). Generation t >= 2 trains *from scratch* on

    fully_synthetic   D^t = D_s^{t-1}
    augmentation      D^t = D_r   u D_s^{t-1}      (a fixed real set: the paper's Figure 4 loop)
    fresh             D^t = D_r^t u D_s^{t-1}      (a new real set every generation)

where D_s^{t-1} are |D_s| samples of generation t-1's model. The training algorithm A is either
standard training (the base model alone, ``method="standard"``) or SIMS (Algorithm 1) at guidance
w (``method="sims"``): then the generation's model *is* the SIMS model, and its samples at w are
what it passes on. Every generation's distance to p_r is measured on n_eval of its samples (the
first |D_s| of the same draw feed the next generation); the per-run moments are kept, so any
closed-form distance (W2, W2^2) can be taken from the raw results afterwards.

Random numbers. Each (chunk of runs, generation) gets four independent streams, keyed by the seed,
the chunk index and the generation only, never by w, |D_s| or the method:

    data    the real points (numpy, so the data are the same on CPU and GPU)
    base    the base model's init and training
    aux     SIMS only: the synthetic set S and the auxiliary fine-tuning
    sample  the samples that are measured and passed on

So every cell of a sweep sees the same real data and the same generation-1 base model for a given
run (common random numbers: differences between cells are the method's, not the noise's), and a
SIMS loop at w = 0 reproduces the standard loop bit for bit (its aux stream is simply extra).
Results depend on the chunk size (it decides which runs share a stream); a sweep records it.

Runs train together on the ensemble axis in chunks of at most ``chunk_size`` runs (memory grows
linearly with it); the (cell, chunk) tasks of a sweep go through any ``concurrent.futures``
executor: the default runs them in this process one after another, a ThreadPoolExecutor or
ProcessPoolExecutor runs several at once, and a Dask ``client.get_executor()`` spreads them on a
cluster. Tasks are plain picklable data plus a top-level function.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import backend
from .data import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from .metrics import gaussian_w2_from_moments, moments
from .nn import MLPConfig
from .sims import SIMSConfig, synthesize, train_aux, train_base

LOOPS = ("fully_synthetic", "augmentation", "fresh")
METHODS = ("standard", "sims")
STREAMS = ("data", "base", "aux", "sample")


@dataclass
class LoopConfig:
    """One self-consuming loop on the 2D Gaussian p_r = N(mean, cov). Defaults: Figure 4."""
    loop: str = "augmentation"      # fully_synthetic | augmentation | fresh
    generations: int = 100
    n_real: int = 1000              # |D_r|
    n_eval: int = 2000              # samples per run and generation that measure dist(G^t, p_r)
    sims: SIMSConfig = field(default_factory=SIMSConfig)
    mean: tuple = tuple(GAUSSIAN_MEAN)
    cov: tuple = tuple(map(tuple, GAUSSIAN_COV))

    def __post_init__(self):
        if self.loop not in LOOPS:
            raise ValueError(f"unknown loop {self.loop!r}: use one of {', '.join(LOOPS)}")
        if self.generations < 1 or self.n_real < 2 or self.n_eval < 2:
            raise ValueError("need generations >= 1, n_real >= 2 and n_eval >= 2")


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: the training method, its guidance w and |D_s^t|."""
    n_synth: int                    # |D_s^t|, synthetic points passed to the next generation
    w: float = 0.0
    method: str = "sims"            # standard | sims

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use standard or sims")
        if self.method == "standard" and self.w != 0:
            raise ValueError("standard training has no guidance: w must be 0")
        if self.n_synth < 1:
            raise ValueError(f"|D_s| must be >= 1, got {self.n_synth}")

    @property
    def label(self) -> str:
        return "standard" if self.method == "standard" else f"SIMS w={self.w:g}"


@dataclass
class LoopResult:
    """Per-run moments of every generation's samples, and the distances they give."""
    cell: Cell
    mu: np.ndarray        # R,G,D  mean of each run's n_eval samples at each generation
    cov: np.ndarray       # R,G,D,D  their covariance (n-1)
    seconds: float = 0.0

    def distance(self, mean, cov, squared: bool = False) -> np.ndarray:
        """dist(G^t, p_r) per run and generation (R,G): W2 of the Gaussian fit, or W2^2."""
        return gaussian_w2_from_moments(self.mu, self.cov, np.asarray(mean, float),
                                        np.asarray(cov, float), squared)


def rng_for(seed: int, chunk: int, generation: int, stream: str, numpy: bool = False):
    """The generator of one stream (see the module docstring). numpy=True forces NumPy's."""
    ss = np.random.SeedSequence(seed, spawn_key=(chunk, generation, STREAMS.index(stream)))
    if numpy:
        return np.random.default_rng(ss)
    return backend.default_rng(int(ss.generate_state(1)[0]))


def real_data(cfg: LoopConfig, runs: int, seed: int, chunk: int, generation: int):
    """|D_r| fresh points per run from p_r, on the current device. (R,n_real,D)"""
    x = sample_gaussian(cfg.n_real, rng_for(seed, chunk, generation, "data", numpy=True), runs,
                        mean=np.asarray(cfg.mean), cov=np.asarray(cfg.cov))  # R,n,D
    return backend.asarray(x)


def generation_model(data, cfg: SIMSConfig, method: str, seed: int, chunk: int, generation: int):
    """A(D): train a fresh base model on ``data`` (R,n,D); for SIMS also its auxiliary model
    (Algorithm 1, steps 1-3). Returns (base, aux or None)."""
    base, _ = train_base(data, cfg, rng_for(seed, chunk, generation, "base"))
    if method == "standard":
        return base, None
    aux_rng = rng_for(seed, chunk, generation, "aux")
    S = synthesize(base, cfg, cfg.n_synth, aux_rng)  # R,n_s,D
    aux, _ = train_aux(base, S, cfg, aux_rng)
    del S  # Algorithm 1: discard S
    return base, aux


def run_loop_chunk(cfg: LoopConfig, cell: Cell, runs: int, seed: int = 0, chunk: int = 0,
                   progress: bool = False) -> LoopResult:
    """Run one loop for ``runs`` runs at once (one chunk). Returns moments (R,G,...)."""
    t0 = time.perf_counter()
    G, D = cfg.generations, len(cfg.mean)
    mu = np.zeros((runs, G, D))
    cov = np.zeros((runs, G, D, D))
    n_draw = max(cfg.n_eval, cell.n_synth)
    xp = backend.xp()
    D_r = D_s = None
    gens = range(1, G + 1)
    if progress:
        from tqdm.auto import tqdm
        gens = tqdm(gens, desc=f"{cell.label} |D_s| {cell.n_synth} chunk {chunk}", leave=False)
    for t in gens:
        # the training set D^t of this loop type
        if t == 1 or cfg.loop == "fresh":
            D_r = real_data(cfg, runs, seed, chunk, t)  # R,n_real,D
        if t == 1:
            data = D_r
        elif cfg.loop == "fully_synthetic":
            data = D_s
        else:
            data = xp.concatenate([D_r, D_s], axis=1)  # R,n_real+n_synth,D
        base, aux = generation_model(data, cfg.sims, cell.method, seed, chunk, t)
        x = synthesize(base, cfg.sims, n_draw, rng_for(seed, chunk, t, "sample"), aux=aux,
                       w=cell.w if aux is not None else 0.0)  # R,n_draw,D
        mu[:, t - 1], cov[:, t - 1] = moments(backend.to_numpy(x[:, :cfg.n_eval]))
        D_s = x[:, :cell.n_synth]  # R,n_synth,D: what generation t passes on
    return LoopResult(cell, mu, cov, time.perf_counter() - t0)


def generation_one(cfg: LoopConfig, omegas, runs: int, seed: int = 0, chunk: int = 0,
                   aux_factory=None) -> dict:
    """Generation 1 of every SIMS loop at once: one base and aux per run, sampled at each w.

    Uses the loop's generation-1 streams, so the distances equal those of run_loop_chunk's first
    generation at the same w whenever |D_s| <= n_eval (then both draw n_eval points; a test
    checks it). ``aux_factory(D_r, base, rng)`` may replace the
    SIMS auxiliary (e.g. autoguidance's bad model). Returns {w: (mu (R,D), cov (R,D,D))}.
    """
    D_r = real_data(cfg, runs, seed, chunk, 1)  # R,n_real,D
    if aux_factory is None:
        base, aux = generation_model(D_r, cfg.sims, "sims", seed, chunk, 1)
    else:
        base, _ = train_base(D_r, cfg.sims, rng_for(seed, chunk, 1, "base"))
        aux = aux_factory(D_r, base, rng_for(seed, chunk, 1, "aux"))
    out = {}
    for w in omegas:
        x = synthesize(base, cfg.sims, cfg.n_eval, rng_for(seed, chunk, 1, "sample"), aux=aux,
                       w=float(w))  # R,n_eval,D
        out[float(w)] = moments(backend.to_numpy(x))
    return out


# ---------------------------------------------------------------- sweeps over cells and chunks

class _Deferred(Future):
    """A future that runs its call the first time its result is asked for."""

    def __init__(self, fn, args, kwargs):
        super().__init__()
        self._call = (fn, args, kwargs)

    def result(self, timeout=None):
        if self._call is not None:
            fn, args, kwargs = self._call
            self._call = None
            try:
                self.set_result(fn(*args, **kwargs))
            except BaseException as e:  # the future carries the error to the caller
                self.set_exception(e)
        return super().result(timeout)


class InlineExecutor(Executor):
    """The default executor: runs each task in this process, one after another, when its result
    is asked for (so progress and partial results appear as tasks finish)."""

    def submit(self, fn, /, *args, **kwargs):
        return _Deferred(fn, args, kwargs)


def bytes_per_run(cfg: LoopConfig, n_synth: int) -> int:
    """A rough upper bound of one run's working memory while training (float32 activations of
    every layer, kept for backward, plus the ReLU masks and temporaries)."""
    n = max(cfg.n_real + n_synth, cfg.sims.n_synth, cfg.n_eval, n_synth)
    H, L = cfg.sims.mlp.hidden, cfg.sims.mlp.depth
    return 4 * n * H * (3 * L + 6)


def chunk_sizes(runs: int, chunk_size: int) -> list[int]:
    """Split ``runs`` into chunks of ``chunk_size`` (the last one may be smaller)."""
    if runs < 1 or chunk_size < 1:
        raise ValueError(f"need runs >= 1 and chunk_size >= 1, got {runs}, {chunk_size}")
    return [min(chunk_size, runs - s) for s in range(0, runs, chunk_size)]


def auto_chunk_size(cfg: LoopConfig, cells, memory_mb: float) -> int:
    """The largest chunk whose working memory stays under ``memory_mb`` for every cell."""
    worst = max(bytes_per_run(cfg, c.n_synth) for c in cells)
    return max(1, int(memory_mb * 2 ** 20 // worst))


def _task(cfg: LoopConfig, cell: Cell, runs: int, seed: int, chunk: int, device: str,
          blas_threads: int | None, parent_pid: int) -> LoopResult:
    """One (cell, chunk) of a sweep; top level so process pools can pickle it."""
    if backend.current_device() != device:
        backend.use_device(device)
    if blas_threads is None or os.getpid() == parent_pid:  # the parent set its own limit
        return run_loop_chunk(cfg, cell, runs, seed, chunk)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(blas_threads):
        return run_loop_chunk(cfg, cell, runs, seed, chunk)


def sweep(cfg: LoopConfig, cells, runs: int, seed: int = 0, chunk_size: int | None = None,
          executor: Executor | None = None, memory_mb: float = 256, blas_threads: int | None = None,
          progress: bool = False, on_cell=None) -> dict:
    """Run the loop for every cell, ``runs`` runs each. Returns {cell: LoopResult (R,G,...)}.

    Tasks are (cell, chunk) pairs submitted to ``executor`` (default: in-process, serial). The
    chunk size is ``chunk_size`` or the largest that fits ``memory_mb``; it is the same for every
    cell so that run r sees the same random streams everywhere. ``blas_threads`` caps the BLAS
    threads of each process (1 is best when several tasks run at once). ``on_cell(results so
    far)`` is called each time a cell's last chunk arrives (e.g. to save partial results of a long
    sweep).
    """
    cells = list(cells)
    if chunk_size is None:
        chunk_size = auto_chunk_size(cfg, cells, memory_mb)
    sizes = chunk_sizes(runs, chunk_size)
    executor = executor or InlineExecutor()
    device = backend.current_device()
    limits = None
    if blas_threads is not None:  # BLAS thread pools are per process: limit this one for inline
        from threadpoolctl import threadpool_limits  # and thread-pool tasks, workers limit theirs
        limits = threadpool_limits(blas_threads)
    out = {}
    try:
        futures = {(cell, c): executor.submit(_task, cfg, cell, size, seed, c, device, blas_threads,
                                              os.getpid())
                   for cell in cells for c, size in enumerate(sizes)}
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(futures), desc="sweep tasks")
        for cell in cells:  # wait in submission order; a failure raises here
            chunks = []
            for c in range(len(sizes)):
                chunks.append(futures[(cell, c)].result())
                if bar is not None:
                    bar.update(1)
            out[cell] = LoopResult(cell, np.concatenate([r.mu for r in chunks]),
                                   np.concatenate([r.cov for r in chunks]),
                                   sum(r.seconds for r in chunks))
            if on_cell is not None:
                on_cell(dict(out))
        if bar is not None:
            bar.close()
    finally:
        if limits is not None:
            limits.restore_original_limits()
    return out


# ---------------------------------------------------------------- summaries and the raw file

def ratio_curve(result: LoopResult, mean, cov, squared: bool = False) -> np.ndarray:
    """E[dist(G^t)] / E[dist(G^1)] over generations (G,), expectations = means over runs."""
    d = result.distance(mean, cov, squared).mean(axis=0)  # G
    return d / d[0]


def converged_ratio(result: LoopResult, mean, cov, squared: bool = False, start: int = 20,
                    stop: int | None = None) -> float:
    """E[dist(G^inf)] / E[dist(G^1)], G^inf = the mean over generations start..stop (1-based,
    inclusive; the paper: 20..100)."""
    d = result.distance(mean, cov, squared).mean(axis=0)  # G
    stop = len(d) if stop is None else stop
    if not 1 <= start <= stop <= len(d):
        raise ValueError(f"generation window {start}..{stop} is outside 1..{len(d)}")
    return float(d[start - 1:stop].mean() / d[0])


def save_results(path: str, cfg: LoopConfig, results: dict, meta: dict | None = None):
    """Write a sweep to an npz anyone can reload with numpy alone: per cell (axis C) its method,
    w and |D_s|, the moments mu (C,R,G,D) and cov (C,R,G,D,D), and W2 / W2^2 (C,R,G); the
    configuration as JSON under 'config'."""
    cells = list(results)
    res = [results[c] for c in cells]
    arrays = dict(
        method=np.array([c.method for c in cells]),
        w=np.array([c.w for c in cells], float),
        n_synth=np.array([c.n_synth for c in cells], int),
        mu=np.stack([r.mu for r in res]),          # C,R,G,D
        cov=np.stack([r.cov for r in res]),        # C,R,G,D,D
        w2=np.stack([r.distance(cfg.mean, cfg.cov) for r in res]),            # C,R,G
        w2sq=np.stack([r.distance(cfg.mean, cfg.cov, squared=True) for r in res]),  # C,R,G
        seconds=np.array([r.seconds for r in res]),
        config=np.array(json.dumps({"loop": asdict(cfg), **(meta or {})})),
    )
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_results(path: str):
    """Read a file written by :func:`save_results`. Returns (LoopConfig, {cell: LoopResult}, meta)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["config"]))
        lc = meta.pop("loop")
        sims = lc.pop("sims")
        mlp = MLPConfig(**sims.pop("mlp"))
        if sims.get("interval") is not None:
            from .guidance import GuidanceInterval
            sims["interval"] = GuidanceInterval(**sims["interval"])
        cfg = LoopConfig(**{**lc, "mean": tuple(lc["mean"]), "cov": tuple(map(tuple, lc["cov"])),
                            "sims": SIMSConfig(mlp=mlp, **sims)})
        results = {}
        for i in range(len(z["w"])):
            cell = Cell(int(z["n_synth"][i]), float(z["w"][i]), str(z["method"][i]))
            results[cell] = LoopResult(cell, z["mu"][i], z["cov"][i], float(z["seconds"][i]))
    return cfg, results, meta


def with_sims(cfg: LoopConfig, **changes) -> LoopConfig:
    """A copy of ``cfg`` with some SIMSConfig fields changed."""
    return replace(cfg, sims=replace(cfg.sims, **changes))


__all__ = ["LOOPS", "LoopConfig", "Cell", "LoopResult", "run_loop_chunk", "generation_one",
           "sweep", "InlineExecutor", "auto_chunk_size", "chunk_sizes", "ratio_curve",
           "converged_ratio", "save_results", "load_results", "rng_for", "with_sims"]
