"""Sweeps on a Dask cluster, resumable sweeps, one progress bar (issue 10).

A local cluster of two worker processes gives the in-process executor's numbers bit for bit (the
library's sweep and map_chunks, and the figure 4 command); a figure 4 sweep killed with SIGKILL
resumes where it stopped and ends with the uninterrupted run's table; the new options fail in
one line. Dask is optional: the tests that need it are skipped without it.
"""
import importlib.util
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from minisims import executors
from minisims.autoguidance import bad_model_factory
from minisims.figures import autoguidance, figure4, figure5, figure6
from minisims.figures.common import generation_one_runs
from minisims.loops import sweeps as sweep_module
from minisims.loops.loop import Cell, LoopConfig
from minisims.loops.results import load_results
from minisims.loops.sweeps import sweep
from minisims.nn.mlp import MLPConfig
from minisims.polluted import polluted_experiment
from minisims.sims import SIMSConfig

ROOT = Path(__file__).parent.parent
needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask[distributed] is not installed")
TINY = ["--preset", "tiny", "--quiet"]  # figure 4: 4 cells of about a second each
CELLS = [Cell(10, 0.0, "standard"), Cell(10, 2.0, "sims")]


def micro(generations=2):
    sims = SIMSConfig(mlp=MLPConfig(hidden=8, depth=2), base_epochs=3, aux_epochs=2, n_synth=30,
                      ddpm_T=6, num_steps=3)
    return LoopConfig(generations=generations, n_real=40, n_eval=20, sims=sims)


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def cell_files(folder: Path) -> dict:
    """{name: mtime} of the finished cell files (not the atomic writer's temporaries)."""
    return {f.name: f.stat().st_mtime_ns for f in folder.glob("*.npz") if not f.name.startswith(".")}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  **executors.NO_DASHBOARD) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    import distributed
    with distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A tiny figure 4 sweep in this process, the default executor: the reference."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert figure4.main(TINY + ["--outdir", str(out)]) == 0
    return out


# ---------------------------------------------------------------- 1. the same numbers on a cluster

@needs_dask
def test_a_sweep_on_a_local_cluster_equals_inline_bit_for_bit(client):
    cfg = micro()
    inline = sweep(cfg, CELLS, runs=3, seed=2, chunk_size=2)
    seen = []
    dask = sweep(cfg, CELLS, runs=3, seed=2, chunk_size=2, executor=client.get_executor(pure=False),
                 blas_threads=1, on_cell=lambda c, r: seen.append(c))
    assert sorted(seen, key=CELLS.index) == CELLS and list(dask) == CELLS  # each cell saved once
    for c in CELLS:
        assert np.array_equal(dask[c].mu, inline[c].mu) and np.array_equal(dask[c].cov, inline[c].cov)


@needs_dask
def test_chunk_functions_on_a_local_cluster_equal_inline_bit_for_bit(client):
    """map_chunks: generation 1 with autoguidance's bad model (it must pickle), and Figure 5."""
    cfg, ex = micro(), client.get_executor(pure=False)
    bad = bad_model_factory(cfg.sims, hidden=4)
    a = generation_one_runs(cfg, [0.0, 2.0], 3, 1, seed=1, aux_factory=bad)
    b = generation_one_runs(cfg, [0.0, 2.0], 3, 1, seed=1, aux_factory=bad, executor=ex, blas_threads=1)
    assert all(np.array_equal(a[w][k], b[w][k]) for w in a for k in (0, 1))
    p = polluted_experiment(cfg, [10], [2.0], runs=3, seed=4, chunk_size=2)
    q = polluted_experiment(cfg, [10], [2.0], runs=3, seed=4, chunk_size=2, executor=ex, blas_threads=1)
    assert np.array_equal(p["I"], q["I"]) and np.array_equal(p["P"], q["P"])


@needs_dask
def test_figure4_on_a_local_dask_cluster_writes_the_inline_table(cluster, uninterrupted, tmp_path, capsys):
    """The command on the cluster (--scheduler; tests/test_cli_reliability.py starts one with
    --dask-local in a subprocess and interrupts it)."""
    out = tmp_path / "dask"
    assert figure4.main(TINY + ["--scheduler", cluster.scheduler_address, "--outdir", str(out)]) == 0
    assert capsys.readouterr().err == ""  # Dask's own log lines are silenced
    table = (out / "figure4_table.md").read_text().splitlines()
    assert table[1:] == (uninterrupted / "figure4_table.md").read_text().splitlines()[1:]  # [0]: the time
    _, mine, _ = load_results(str(out / "figure4_loops.npz"))
    _, ref, _ = load_results(str(uninterrupted / "figure4_loops.npz"))
    assert list(mine) == list(ref)
    assert all(np.array_equal(mine[c].mu, ref[c].mu) and np.array_equal(mine[c].cov, ref[c].cov) for c in ref)
    with np.load(out / "figure4_gen1.npz") as a, np.load(uninterrupted / "figure4_gen1.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)  # panel 1 ran on the cluster too


# ---------------------------------------------------------------- 2. resumable sweeps

def test_a_killed_sweep_resumes_and_ends_with_the_uninterrupted_table(uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    cells = out / "figure4_cells"
    p = subprocess.Popen([sys.executable, "toy/figure4.py", *TINY, "--outdir", str(out)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not cell_files(cells):
            time.sleep(0.02)
        assert p.poll() is None, "the sweep finished before it could be killed"
        p.kill()  # SIGKILL: nothing of the process runs any more
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    finished = cell_files(cells)
    assert 1 <= len(finished) < 4 and not (out / "figure4_table.md").exists()

    # an interrupted folder is neither started over by mistake nor resumed under other settings
    with pytest.raises(SystemExit) as e:
        figure4.main(TINY + ["--outdir", str(out)])
    assert e.value.code == 2 and "holds an interrupted sweep: --resume" in one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        figure4.main(TINY + ["--seed", "1", "--resume", str(out)])
    assert e.value.code == 2 and "seed: 0 there, 1 here" in one_line(capsys.readouterr().err)
    assert cell_files(cells) == finished

    assert figure4.main(TINY + ["--resume", str(out)]) == 0
    table = (out / "figure4_table.md").read_text().splitlines()
    assert table[1:] == (uninterrupted / "figure4_table.md").read_text().splitlines()[1:]
    assert f"resumed: {len(finished)} cells from an earlier run" in table[0]
    assert {f: cell_files(cells)[f] for f in finished} == finished  # finished cells were not rerun
    _, mine, meta = load_results(str(out / "figure4_loops.npz"))
    _, ref, _ = load_results(str(uninterrupted / "figure4_loops.npz"))
    assert all(np.array_equal(mine[c].mu, ref[c].mu) for c in ref) and meta["resumed_cells"] == len(finished)
    capsys.readouterr()


def test_resume_needs_a_sweep_to_resume(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        figure4.main(TINY + ["--resume", str(tmp_path / "never")])
    assert e.value.code == 2 and "nothing to resume" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------- 3. one bar over the sweep

class Bar:
    def __init__(self, total, desc, unit):
        self.total, self.desc, self.updates = total, desc, []

    def update(self, n):
        if n:
            self.updates.append(n)

    def close(self):
        pass


@pytest.mark.parametrize("kind", ["inline", "threads", "processes",
                                  pytest.param("dask", marks=needs_dask)])
def test_one_bar_counts_every_generation_on_every_executor(kind, monkeypatch, request):
    bars = []
    monkeypatch.setattr(sweep_module, "_bar", lambda *a: bars.append(Bar(*a)) or bars[-1])
    cfg = micro(generations=2)
    pools = {"inline": lambda: None, "threads": lambda: ThreadPoolExecutor(2),
             "processes": lambda: ProcessPoolExecutor(2),
             "dask": lambda: request.getfixturevalue("client").get_executor(pure=False)}
    ex = pools[kind]()
    sweep(cfg, CELLS, runs=3, seed=2, chunk_size=2, executor=ex, blas_threads=1, progress=True)
    if ex is not None:
        ex.shutdown()
    (bar,) = bars
    assert bar.desc == "2 cells x 2 chunks x 2 generations" and bar.total == 8
    assert sum(bar.updates) == 8
    # in this process the bar moves each generation; from another process, as each task ends
    assert bar.updates == ([1] * 8 if kind in ("inline", "threads") else [2] * 4)


# ---------------------------------------------------------------- 4. options fail in one line

@needs_dask
def test_a_wrong_scheduler_address_fails_in_one_line_within_seconds(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1)  # the test's patience, not a user's
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        figure4.main(TINY + ["--scheduler", "tcp://127.0.0.1:1", "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and time.perf_counter() - t0 < executors.CONNECT_TIMEOUT_S + 5
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@needs_dask
def test_gpu_tasks_need_a_worker_with_the_gpu_resource(cluster, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        figure4.main(TINY + ["--device", "gpu", "--scheduler", cluster.scheduler_address,
                             "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and "--resources GPU=1" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("module", [figure4, figure5, figure6, autoguidance], ids=lambda m: m.__name__)
def test_without_dask_the_dask_options_are_one_line_and_exit_2(module, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    with pytest.raises(SystemExit) as e:
        module.main(["--preset", "tiny", "--dask-local", "2", "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and "need Dask: pip install" in one_line(capsys.readouterr().err)


def test_the_commands_do_not_import_dask():
    code = ("import sys\nimport minisims.figures.figure4, minisims.figures.figure5, "
            "minisims.figures.figure6, minisims.figures.autoguidance\n"
            "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
