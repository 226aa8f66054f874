"""A group timed in several worker processes (``bench/ --processes N``), its samples pooled.

Some kernels run at a speed that belongs to their process: on `znver4-2c-simd16-t2` four copies of a
MetaSchedule kernel built in one process read within 1-3% of each other, and the same kernel read up to
1.3-1.4x apart from one process to the next (its best time over `rule_based`'s in the same rounds), the level
drawn anew for every shape and reset by nothing tried within a process (``evidence/znver4-2c-simd16-t2/
processes/``). A run of one process reads one draw, and two runs disagree. pyperf spreads its samples over
processes for this reason; :class:`Workers` does it for the grid's groups, and
:func:`~matmul.measure.grid.assemble` pools what they measured.

The protocol is pickle over pipes: the parent writes :func:`~matmul.measure.grid.measure_group`'s arguments to
a worker's stdin and reads ``("ok", Measured)`` or ``("error", message)`` from a pipe that only the replies use.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import subprocess
import sys
import traceback

from .grid import Measured, measure_group
from .interleave import MIN_ROUNDS, RoundSettings


class Workers:
    """Worker processes that each time every group in turn, so that a group's samples come from several.

    Each worker builds the group anew and times its share of the rounds and the budget (:meth:`share`), its
    rounds' rotation continuing where the previous worker's began; :func:`~matmul.measure.grid.assemble` pools
    the samples, so the best time comes from the fastest draws, and each case saves how far the processes lay
    apart (``process_spread``). A worker is started once and serves every group, one worker at a time (the
    others sleep). Only the first reads the cases' assembly for ``describe``; NumPy alone is timed by the first
    before its rounds and by the last after its own, bracketing them all.
    """

    def __init__(self, processes: int):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
            raise ValueError(f"Workers need an integer number of processes >= 2, got {processes!r}")
        self.processes = processes
        self._procs: list[subprocess.Popen] = []

    def __len__(self) -> int:
        return self.processes

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def share(self, settings: RoundSettings) -> RoundSettings:
        """One worker's part of ``settings``: its share of the minimum rounds (whole mirrored pairs, at least
        two) and of the budget; the interval width stays, so each worker stops on its own once it is tight."""
        pairs = max(MIN_ROUNDS // 2, math.ceil(settings.min_rounds / 2 / self.processes))
        return dataclasses.replace(settings, min_rounds=2 * pairs, budget_s=settings.budget_s / self.processes,
                                   max_rounds=max(2 * pairs, settings.max_rounds // (2 * self.processes) * 2))

    def measure(self, spec: dict, settings: RoundSettings) -> list[Measured]:
        """Each worker's :class:`Measured` of the group ``spec`` (:func:`measure_group`'s arguments).

        A worker found dead is replaced by a fresh one; one that dies or answers garbage while it times the
        group is ended (the next group starts a fresh one) and its group fails with a RuntimeError naming it.
        """
        share = self.share(settings)
        parts = []
        for n in range(self.processes):
            if n == len(self._procs):
                self._procs.append(self._spawn())
            elif self._procs[n].poll() is not None:
                self._end(n)
                self._procs[n] = self._spawn()
            proc = self._procs[n]
            assert proc.stdin is not None and proc.stdout is not None
            what = f"timing worker {n + 1} of {self.processes} ({spec['shape']}, {spec['layout']})"
            job = dict(spec, settings=share, describe=n == 0, alone_before=n == 0,
                       alone_after=n == self.processes - 1, first_pair=n * share.min_rounds // 2)
            try:
                pickle.dump(job, proc.stdin)
                proc.stdin.flush()
                status, payload = pickle.load(proc.stdout)
            except Exception as err:  # noqa: BLE001 - dead, or out of step with its replies: either way, done
                raise RuntimeError(f"{what} died or sent an unreadable reply ({self._end(n)}): {err!r}") from None
            if status != "ok":
                raise RuntimeError(f"{what} failed: {payload}")
            parts.append(payload)
        return parts

    @staticmethod
    def _spawn() -> subprocess.Popen:
        # The replies get stdout's pipe to themselves: fd 1 points at stderr before anything is imported, so no
        # print of a library, Python's or C's, can land among them.
        start = f"import os; out = os.dup(1); os.dup2(2, 1); from {__name__} import _serve; _serve(out)"
        return subprocess.Popen([sys.executable, "-c", start], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _end(self, n: int) -> str:
        """End worker ``n`` (killed if it still runs) and say how it ended."""
        proc = self._procs[n]
        try:
            code = proc.wait(timeout=2)  # a worker that is on its way out: its own exit code
        except subprocess.TimeoutExpired:
            code = None
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:  # unflushed input for a dead worker
                pass
        return "still running, killed" if code is None else f"exit code {code}"

    def close(self) -> None:
        """End the workers (they exit when their input closes; one that hangs is killed)."""
        for proc in self._procs:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:  # a worker that died: nothing to flush to
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs = []


def _sendable(err: BaseException) -> BaseException:
    """``err`` itself where it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any exception can fail to pickle
        return RuntimeError(f"{type(err).__name__}: {err}")


def _serve(out_fd: int) -> None:
    """A worker's loop: read :func:`measure_group`'s arguments, measure the group, write ("ok", Measured) or
    ("error", message) to ``out_fd``, until the input closes."""
    out = os.fdopen(out_fd, "wb")
    while True:
        try:
            job = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        try:
            got = measure_group(**job)
            got.errors = {n: _sendable(e) for n, e in got.errors.items()}
            reply = pickle.dumps(("ok", got))
        except Exception as err:  # noqa: BLE001 - sent back to the parent, which raises it with the worker named
            reply = pickle.dumps(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
        out.write(reply)
        out.flush()


__all__ = ["Workers"]
