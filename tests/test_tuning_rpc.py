"""Tuning across machines: TVM's own RPC tracker and server, both on 127.0.0.1.

The tracker and the server run as `python -m tvm.exec.rpc_tracker` and
`python -m tvm.exec.rpc_server`, exactly as the README tells a user to start
them on other machines. Everything started here is stopped, killed as a
process group, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from matmul import MatmulShape, host_facts
from matmul.cli import main
from matmul.core.store import profile_dir, workload_key
from matmul.schedules.metaschedule.database import read_ledger, records
from matmul.schedules.metaschedule.tune import (
    RPCSettings,
    SearchSettings,
    tune_workload,
)

SHAPE = MatmulShape(8, 16, 16)
KEY = "matmul-test"
LIMIT_S = 120  # to start the tracker and register the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _started(*args: str):
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait(condition, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {LIMIT_S} s")
        time.sleep(0.3)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _registered(port: int) -> bool:
    from tvm import rpc

    try:
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
    except Exception:  # the tracker is still starting
        return False
    return any(KEY in str(s.get("key", "")) for s in summary.get("server_info", []))


@pytest.mark.metaschedule
def test_tuning_through_an_rpc_tracker_and_server_on_localhost(tmp_path):
    tport, sport = _free_port(), _free_port()
    with _started("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport),
                  "--port-end", str(tport + 1)) as tracker:
        _wait(lambda: _accepts(tport), "RPC tracker", tracker)
        with _started("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport), "--port-end",
                      str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", KEY) as server:
            _wait(lambda: _registered(tport), "RPC server registration", server)
            search = SearchSettings(per_iter=3, population=16, seed=3, rpc=RPCSettings("127.0.0.1", tport, KEY))
            out = tune_workload(SHAPE, trials=3, root=tmp_path, search=search)
    assert out.trials_now == 3
    entry = read_ledger(profile_dir(host_facts(), tmp_path))[workload_key(SHAPE)]
    assert entry.trials == 3 and entry.best_gflops > 0
    # measured remotely and successfully: the records hold real run times
    assert records(SHAPE, root=tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--rpc-tracker", "localhost"], "is not HOST:PORT"),
    (["--rpc-tracker", "localhost:99999"], "is not HOST:PORT"),
])
def test_bad_tracker_address_is_a_usage_error(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["tune", "--shape", "8", "16", "16", *args])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_tracker_without_key_is_refused(capsys, tmp_path):
    assert main(["tune", "--shape", "8", "16", "16", "--root", str(tmp_path), "--rpc-tracker", "127.0.0.1:9190"]) == 2
    assert "--rpc-tracker and --rpc-key go together" in capsys.readouterr().err
