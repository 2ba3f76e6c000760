"""Start and stop the processes of one bench run, isolated from every other ROS 2 graph on the host.

ROS-free: it only spawns processes (``python -m s2r_bench.recorder_node --ros-args ...`` or any argv) and
signals them, so it works the same for ROS nodes, simulators and plain scripts.

Isolation of a run:

- **Domain.** Every process of the run gets the same ``ROS_DOMAIN_ID``, picked at random from
  ``DOMAIN_IDS`` (100-200) and held for the whole run by an exclusive ``flock`` on
  ``<tmp>/sim2real-ros-domains/<id>.lock``. Concurrent runs on one host (parallel tests, two benches) therefore
  never share a domain; the kernel drops the lock when the holder exits, even on SIGKILL, so no stale lock
  survives a crash. Only runs that go through this module honour the locks.
- **Discovery.** ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (Kilted ignores ``ROS_LOCALHOST_ONLY``) and no
  ``ROS_STATIC_PEERS``, so nothing joins a multicast group or talks to another host.
- **Processes.** Each process is the leader of its own session and process group (``start_new_session``), so
  a signal reaches it and everything it spawned, and a Ctrl-C in the caller's terminal does not reach it
  uncontrolled. Each starts with SIGINT at its default action even when the caller ignores it (a shell starts a
  background job, ``cmd &`` in a script, with SIGINT ignored, and a child inherits that). stdout and stderr go to
  ``<out_dir>/logs/<name>.log`` (after a header naming argv and domain), with ``PYTHONUNBUFFERED=1`` so a Python
  process's log is live.

Stopping escalates per process group: SIGINT, then SIGTERM, then SIGKILL, each with its own timeout, until the
group's leader (the process started) has exited; then the rest of its group, if any is left (a child that ignored
the signals), gets SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

DOMAIN_IDS = range(100, 201)
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "sim2real-ros-domains"
LOG_TAIL_LINES = 20
POLL_PERIOD_S = 0.02
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class ProcessDiedError(RuntimeError):
    """A bench process exited while the run still needed it.

    Attributes:
        name: the process's name in the run.
        returncode: its exit status (negative: killed by that signal number).
        log_path: its combined stdout/stderr log.
    """

    def __init__(self, name: str, returncode: int, log_path: Path) -> None:
        self.name, self.returncode, self.log_path = name, returncode, log_path
        super().__init__(
            f"bench process {name!r} exited early with code {returncode}; its log is {log_path}\n"
            f"--- last lines of {log_path.name} ---\n{log_tail(log_path)}"
        )


@dataclass(frozen=True)
class ProcessSpec:
    """One process of a bench run.

    Args:
        name: unique in the run; names the log file ``logs/<name>.log`` (letters, digits, ``_.-``).
        argv: the command, e.g. ``[sys.executable, "-m", "s2r_bench.recorder_node", "--ros-args", ...]``.
        env: extra environment variables on top of the caller's environment. The run's isolation variables
            (``ROS_DOMAIN_ID``, ``ROS_AUTOMATIC_DISCOVERY_RANGE``) always win.
        cwd: working directory (default: the caller's).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ProcessExit:
    """How one process of a run ended.

    Attributes:
        name: the process's name in the run.
        returncode: exit status of the group leader (negative: killed by that signal number).
        stopped_by: ``"exited"`` if it ended on its own (before ``stop()``), else the last signal sent to its
            group before it exited (``"SIGINT"``, ``"SIGTERM"`` or ``"SIGKILL"``).
        log_path: its combined stdout/stderr log.
        cpu_percent: the group leader's CPU time (user + system) over its run time, in % of one core, read just
            before ``stop()`` signalled it (None when it had already exited, or without Linux ``/proc``).
    """

    name: str
    returncode: int
    stopped_by: str
    log_path: Path
    cpu_percent: float | None = None


class DomainLease:
    """A ``ROS_DOMAIN_ID`` held by this process through an exclusive lock on ``<lock_dir>/<id>.lock``."""

    def __init__(self, domain_id: int, lock_file: IO[bytes]) -> None:
        self.domain_id = domain_id
        self._lock_file: IO[bytes] | None = lock_file

    def release(self) -> None:
        """Give the domain back (idempotent)."""
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor drops the flock
            self._lock_file = None


def reserve_domain_id(domain_ids: Iterable[int] = DOMAIN_IDS, lock_dir: Path = DOMAIN_LOCK_DIR) -> DomainLease:
    """Lock a random free ROS domain id from ``domain_ids`` for the caller's lifetime or until released.

    Raises:
        RuntimeError: every id in ``domain_ids`` is held by another run.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    candidates = list(domain_ids)
    random.shuffle(candidates)
    for domain_id in candidates:
        lock_file = open(lock_dir / f"{domain_id}.lock", "wb")  # stays open in the lease: the lock lives with it
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            continue
        return DomainLease(domain_id, lock_file)
    raise RuntimeError(f"all {len(candidates)} candidate ROS domain ids are held by other runs (locks in {lock_dir})")


def isolation_env(domain_id: int) -> dict[str, str]:
    """The environment variables that confine a ROS 2 process to ``domain_id`` on the loopback interface."""
    return {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _default_sigint() -> None:
    """Run in each child between fork and exec: SIGINT back to its default action, so that the SIGINT of
    :meth:`BenchLauncher.stop` reaches a process whose caller ignored it (a background job inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class _Running:
    spec: ProcessSpec
    popen: subprocess.Popen
    log_path: Path
    output_offset: int  # bytes of the launcher's header at the top of the log
    started: float = field(default_factory=time.monotonic)
    cpu_percent: float | None = None

    def measure_cpu(self) -> None:
        """Keep the leader's CPU use so far (``/proc/PID/stat`` utime + stime over the time since it started)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        self.cpu_percent = round(100.0 * cpu_s / max(time.monotonic() - self.started, 1e-9), 1)

    def signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


class BenchLauncher:
    """The processes of one bench run, in one private ROS domain; a context manager that always tears down.

    Usage::

        with BenchLauncher(out_dir) as bench:
            bench.start(ProcessSpec("recorder", [sys.executable, "-m", "s2r_bench.recorder_node", ...]))
            bench.wait_for_output("recorder", "recording", timeout_s=15)
            bench.run_for(10.0)          # raises ProcessDiedError if any process dies meanwhile
        print(bench.exits)              # name -> ProcessExit, also returned by stop()

    Leaving the ``with`` block, normally or through an exception, stops every process and releases the domain.

    Args:
        out_dir: run directory; logs go to ``out_dir/logs/<name>.log``.
        domain_id: use this ``ROS_DOMAIN_ID`` instead of reserving a free one from ``DOMAIN_IDS``.
        sigint_timeout_s, sigterm_timeout_s, sigkill_timeout_s: how long ``stop()`` waits after each signal
            before escalating (seconds).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        domain_id: int | None = None,
        sigint_timeout_s: float = 5.0,
        sigterm_timeout_s: float = 3.0,
        sigkill_timeout_s: float = 2.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.log_dir = self.out_dir / "logs"
        self._fixed_domain_id = domain_id
        self._lease: DomainLease | None = None
        self._escalation = (
            (signal.SIGINT, sigint_timeout_s),
            (signal.SIGTERM, sigterm_timeout_s),
            (signal.SIGKILL, sigkill_timeout_s),
        )
        self._running: dict[str, _Running] = {}
        self.exits: dict[str, ProcessExit] = {}

    def __enter__(self) -> BenchLauncher:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def domain_id(self) -> int:
        """The run's ``ROS_DOMAIN_ID``."""
        if self._fixed_domain_id is not None:
            return self._fixed_domain_id
        if self._lease is None:
            raise RuntimeError("the launcher is not open; use it as a context manager or call open()")
        return self._lease.domain_id

    def open(self) -> None:
        """Reserve the domain (unless one was given) and create the log directory."""
        if self._fixed_domain_id is None and self._lease is None:
            self._lease = reserve_domain_id()
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, spec: ProcessSpec) -> None:
        """Start one process in its own session and process group, logging to ``logs/<name>.log``."""
        if not _NAME.fullmatch(spec.name):
            raise ValueError(f"process name {spec.name!r} must match {_NAME.pattern}")
        if spec.name in self._running or spec.name in self.exits:
            raise ValueError(f"a process named {spec.name!r} is already part of this run")
        env = dict(os.environ)
        env.pop("ROS_STATIC_PEERS", None)
        env.update(spec.env)
        env.update(isolation_env(self.domain_id))
        env["PYTHONUNBUFFERED"] = "1"
        log_path = self.log_dir / f"{spec.name}.log"
        with open(log_path, "wb") as log:
            output_offset = log.write(f"# argv: {shlex.join(spec.argv)}\n# ROS_DOMAIN_ID={self.domain_id}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(spec.argv),
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )
        self._running[spec.name] = _Running(spec, popen, log_path, output_offset)

    def output(self, name: str) -> str:
        """What a running process has written to stdout and stderr so far (its log without the header)."""
        proc = self._running[name]
        return proc.log_path.read_bytes()[proc.output_offset :].decode(errors="replace")

    def pid(self, name: str) -> int:
        """Process id (and process group id) of a running process."""
        return self._running[name].popen.pid

    def check_alive(self) -> None:
        """Raise ProcessDiedError for the first started process that has exited."""
        for name, proc in self._running.items():
            returncode = proc.popen.poll()
            if returncode is not None:
                raise ProcessDiedError(name, returncode, proc.log_path)

    def wait_for_exit(self, name: str, timeout_s: float) -> ProcessExit:
        """Wait until a process that is meant to finish on its own (a one-shot script) has exited.

        Raises:
            TimeoutError: it still runs after ``timeout_s`` seconds.
        """
        proc = self._running[name]
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{name!r} still runs after {timeout_s} s; its log is {proc.log_path}") from None
        return self._record_exit(proc, "exited")

    def run_for(self, duration_s: float) -> None:
        """Let the run go on for ``duration_s`` seconds, checking every process is still alive."""
        deadline = time.monotonic() + duration_s
        while True:
            self.check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def wait_for_output(self, name: str, text: str, timeout_s: float) -> None:
        """Wait until ``text`` appears in a process's output (e.g. a node's "ready" line).

        Raises:
            ProcessDiedError: any process of the run died meanwhile.
            TimeoutError: ``text`` did not appear within ``timeout_s`` seconds.
        """
        log_path = self._running[name].log_path
        deadline = time.monotonic() + timeout_s
        while text not in self.output(name):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name!r} did not print {text!r} within {timeout_s} s; its log is {log_path}\n"
                    f"--- last lines of {log_path.name} ---\n{log_tail(log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> dict[str, ProcessExit]:
        """Stop every process (SIGINT, then SIGTERM, then SIGKILL to its group) and release the domain.

        Idempotent. Returns every process's ``ProcessExit`` by name (also kept in ``self.exits``).

        Raises:
            RuntimeError: a process survived SIGKILL (stuck in the kernel).
        """
        for proc in list(self._running.values()):
            if proc.popen.poll() is not None:
                self._record_exit(proc, "exited")
            else:
                proc.measure_cpu()
        pending = list(self._running.values())
        for sig, timeout_s in self._escalation:
            for proc in pending:
                proc.signal_group(sig)
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                time.sleep(POLL_PERIOD_S)
                for proc in [proc for proc in pending if proc.popen.poll() is not None]:
                    self._record_exit(proc, sig.name)
                    pending.remove(proc)
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if pending:
            names = ", ".join(proc.spec.name for proc in pending)
            raise RuntimeError(f"bench processes survived SIGKILL: {names}")
        return dict(self.exits)

    def _record_exit(self, proc: _Running, stopped_by: str) -> ProcessExit:
        """Book an exited leader and kill whatever is left of its process group."""
        proc.signal_group(signal.SIGKILL)
        name = proc.spec.name
        self.exits[name] = ProcessExit(name, proc.popen.wait(), stopped_by, proc.log_path, proc.cpu_percent)
        del self._running[name]
        return self.exits[name]
