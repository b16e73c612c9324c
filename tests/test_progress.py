"""Progress (minisims.progress): a bar on a terminal, a plain line now and then in a log."""
import io
import subprocess
import sys
from pathlib import Path

from minisims import progress
from minisims.progress import LOG_PERCENT, LOG_SECONDS, LogLines

ROOT = Path(__file__).parent.parent


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_log_gets_a_line_only_after_enough_time_and_enough_work():
    out, clock = io.StringIO(), Clock()
    bar = LogLines(total=1000, desc="train", unit="step", file=out, clock=clock)
    for i in range(1000):  # 1000 steps, 0.1 s each: 100 s
        clock.t = (i + 1) / 10
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    bar.close()  # a second close writes nothing
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # a line each LOG_SECONDS (10% of the work passes in that time too), then the last one with
    # the postfix set after it
    assert len(lines) == int(100 / LOG_SECONDS) + 1, lines
    assert lines[0] == "train: 10% (100/1000 step), 10 s"
    assert lines[-1] == "train: 100% (1000/1000 step), 100 s, loss=0.5"


def test_fast_progress_waits_for_the_time_and_slow_progress_for_the_work():
    out, clock = io.StringIO(), Clock()
    bar = LogLines(total=100, desc="d", file=out, clock=clock)
    bar.update(90)  # most of the work at once, no time passed: no line
    assert out.getvalue() == ""
    clock.t = 1000.0
    bar.update(1)  # plenty of time but 1% of the work (since no line yet: 91%): a line
    assert out.getvalue().count("\n") == 1
    clock.t = 2000.0
    bar.update(1)  # plenty of time, 1% more work since that line: no line
    assert out.getvalue().count("\n") == 1 and LOG_PERCENT > 1


def test_work_cut_short_adds_no_last_line():
    out = io.StringIO()
    bar = LogLines(total=10, desc="d", file=out, clock=Clock())
    bar.update(3)
    bar.close()  # Ctrl-C or an error: the reason is the log's last line, not a bar
    assert out.getvalue() == ""


def test_an_iterable_is_counted_and_closed():
    out = io.StringIO()
    assert list(LogLines(range(5), desc="sampling", file=out, clock=Clock())) == [0, 1, 2, 3, 4]
    assert out.getvalue() == "sampling: 100% (5/5 it), 0 s\n"


def test_a_terminal_gets_tqdm_and_a_file_gets_lines(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress.watched(Tty()) and not progress.watched(io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress.bar(total=3), LogLines)
    monkeypatch.setattr(sys, "stderr", Tty())
    from tqdm import tqdm
    b = progress.bar(total=3, leave=False)
    assert isinstance(b, tqdm)
    b.close()


def test_the_toy_logs_plain_lines_when_stderr_is_a_file(tmp_path):
    args = [sys.executable, "-m", "minisims.toy", "--runs", "2", "--base-epochs", "3",
            "--aux-epochs", "2", "--n-real", "60", "--n-synth", "50", "--n-eval", "80",
            "--no-plot", "--outdir", str(tmp_path)]
    err = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stderr
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert lines[0].startswith("base: 100% (3/3 step)") and any(ln.startswith("aux: 100%") for ln in lines)
    quiet = subprocess.run(args + ["--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                           check=True).stderr
    assert quiet == ""
