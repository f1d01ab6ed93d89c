import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlnce.workers import spawn_pool

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")

REPO = Path(__file__).resolve().parents[1]


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_mark = None


def _set_mark(value: str) -> None:
    global _mark
    _mark = value


def _get_mark(_=None) -> str | None:
    return _mark


def _square(x: int) -> int:
    return x * x


def test_spawn_pool_runs_jobs_and_initializers():
    with spawn_pool(2, _set_mark, ("set in the worker",), poll_s=0.1) as pool:
        assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]
        assert set(pool.map(_get_mark, range(4))) == {"set in the worker"}
    assert _mark is None  # the initializer ran in the workers only


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    # a parent killed with SIGKILL runs no clean-up; a plain multiprocessing pool's worker would
    # sleep on for two minutes here
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, time
        from vlnce.workers import spawn_pool

        if __name__ == "__main__":
            pool = spawn_pool(1, poll_s=0.2)
            print(pool.apply(os.getpid), flush=True)
            pool.apply_async(time.sleep, (120,))
            time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # the killed parent's resource tracker reports its pool's semaphores on the parent's stderr, late
    err = (tmp_path / "parent.err").open("w")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        worker = int(parent.stdout.readline())
        assert _running(worker)
    finally:
        parent.kill()
        parent.wait()
        err.close()
    deadline = time.monotonic() + 15
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    running = _running(worker)
    if running:
        os.kill(worker, 9)
    assert not running, "the pool worker outlived its killed parent"
