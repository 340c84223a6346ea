"""Background processes of the stack: pid files, telling our processes from others, start and stop.

A pid file alone proves nothing: the process may have died and its pid been reused. A process is
ours when it is alive (not a zombie), its command line carries the spec's marker and, where the
system lets us read it, its environment carries this stack's id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from .config import STACK_ID_ENV, ProcessSpec, StackConfig


def read_pid(path: Path) -> int | None:
    """The pid in `path`, or None when the file is missing, empty or not a plausible pid."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    # 0 and 1 are never a process we started, and signalling them would be a disaster.
    return pid if pid > 1 else None


def write_pid(path: Path, pid: int) -> None:
    """Write `pid` to `path` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(path)


def remove_pid(path: Path) -> None:
    """Remove a pid file if it is there."""
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ProcInfo:
    """What the system says about a live pid."""

    cmdline: tuple[str, ...]
    environ: Mapping[str, str] | None  # None when it cannot be read (not Linux, other user)
    zombie: bool


class ProcessTable(Protocol):
    """Looks processes up; the real one reads /proc, tests pass a dict-backed fake."""

    def info(self, pid: int) -> ProcInfo | None: ...


class SystemProcessTable:
    """The live process table (/proc on Linux, `ps` elsewhere)."""

    def info(self, pid: int) -> ProcInfo | None:
        """What the system knows of `pid`, or None when there is no such process."""
        proc = Path("/proc") / str(pid)
        if Path("/proc/self").exists():
            try:
                raw_cmd = (proc / "cmdline").read_bytes()
                stat = (proc / "stat").read_text(errors="replace")
            except OSError:
                return None
            try:
                raw_env: bytes | None = (proc / "environ").read_bytes()
            except OSError:
                raw_env = None
            # The state field follows the parenthesised command name, which may itself hold ')'.
            state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
            return ProcInfo(
                cmdline=split_nul(raw_cmd),
                environ=parse_environ(raw_env) if raw_env is not None else None,
                zombie=state in ("Z", "X"),
            )
        return self._info_from_ps(pid)

    @staticmethod
    def _info_from_ps(pid: int) -> ProcInfo | None:
        try:
            out = subprocess.run(  # noqa: S603  # fixed argv, pid is an int
                ["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)],  # noqa: S607  # ps from PATH is the point
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        except OSError:
            return None
        if not out:
            return None
        state, _, command = out.partition(" ")
        return ProcInfo(cmdline=tuple(command.split()), environ=None, zombie=state.startswith("Z"))


def split_nul(raw: bytes) -> tuple[str, ...]:
    """/proc/<pid>/cmdline: NUL-separated arguments."""
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/<pid>/environ: NUL-separated NAME=value pairs."""
    env: dict[str, str] = {}
    for part in split_nul(raw):
        name, sep, value = part.partition("=")
        if sep:
            env[name] = value
    return env


def is_ours(info: ProcInfo | None, *, marker: str, stack_id: str) -> bool:
    """True when `info` is a live process started by this stack for the spec with `marker`."""
    if info is None or info.zombie:
        return False
    if not any(marker in arg for arg in info.cmdline):
        return False
    return info.environ is None or info.environ.get(STACK_ID_ENV) == stack_id


def running_pid(cfg: StackConfig, spec: ProcessSpec, table: ProcessTable) -> int | None:
    """The pid of our running `spec.name`, or None (a stale pid file is left for the caller)."""
    pid = read_pid(cfg.pid_file(spec.name))
    if pid is None:
        return None
    return pid if is_ours(table.info(pid), marker=spec.marker, stack_id=cfg.stack_id) else None


class StartError(RuntimeError):
    """A process could not be started or prepared."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start(cfg: StackConfig, spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start `spec` in its own session (a terminal's Ctrl-C does not reach it), log to .run/<name>.log."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    for path, text in spec.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in spec.dirs:
        directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    log_path = cfg.log_file(spec.name)
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {spec.name} starting at {stamp} ---\n".encode())
        log.flush()
        if spec.prepare and not (spec.prepare_unless_exists and spec.prepare_unless_exists.exists()):
            code = _spawn(spec, spec.prepare, log, env).wait()
            if code != 0:
                raise StartError(f"{spec.name}: preparing failed (exit {code}):\n{log_tail(log_path)}")
        # Its own session: a terminal's Ctrl-C does not reach it, and `stop` signals its whole group.
        proc = _spawn(spec, spec.argv, log, env, cwd=cfg.root, new_session=True)
    write_pid(cfg.pid_file(spec.name), proc.pid)
    return proc


def _spawn(
    spec: ProcessSpec,
    argv: Sequence[str],
    log: BinaryIO,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Run `argv` (one of `spec`'s, no shell) with no stdin and both outputs into `log`."""
    try:
        return subprocess.Popen(  # noqa: S603  # argv built by config.py, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=new_session,
        )
    except OSError as exc:
        raise StartError(f"{spec.name}: cannot run {argv[0]}: {exc}") from exc


def signal_process(pid: int, sig: signal.Signals) -> None:
    """Signal the process group we gave `pid` at start (children included), else `pid` alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class StopOutcome:
    """What `stop_all` did to one process."""

    name: str
    pid: int | None
    result: str  # "stopped", "killed", "not running", "stale pid file"


def stop_all(
    cfg: StackConfig,
    specs: Sequence[ProcessSpec],
    table: ProcessTable,
    *,
    send: Callable[[int, signal.Signals], None] = signal_process,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[StopOutcome]:
    """SIGTERM every running spec at once, wait for each up to its timeout, SIGKILL what is left.

    Pid files are removed in every case; a pid that is not ours is never signalled.
    """
    outcomes: dict[str, StopOutcome] = {}
    waiting: dict[str, tuple[int, float, ProcessSpec]] = {}
    start_time = clock()
    for spec in specs:
        pid_path = cfg.pid_file(spec.name)
        pid = read_pid(pid_path)
        if pid is None:
            outcomes[spec.name] = StopOutcome(spec.name, None, "not running")
            remove_pid(pid_path)
        elif not is_ours(table.info(pid), marker=spec.marker, stack_id=cfg.stack_id):
            outcomes[spec.name] = StopOutcome(spec.name, pid, "stale pid file")
            remove_pid(pid_path)
        else:
            send(pid, signal.SIGTERM)
            waiting[spec.name] = (pid, start_time + spec.stop_timeout_seconds, spec)

    killed: dict[str, float] = {}
    while waiting:
        now = clock()
        for name, (pid, deadline, spec) in list(waiting.items()):
            if not _alive(table, pid, spec.marker, cfg.stack_id):
                outcomes[name] = StopOutcome(name, pid, "killed" if name in killed else "stopped")
                remove_pid(cfg.pid_file(name))
                del waiting[name]
            elif name not in killed and now >= deadline:
                send(pid, signal.SIGKILL)
                killed[name] = now
            elif name in killed and now >= killed[name] + 10.0:
                # Unkillable (D state): report it rather than hang `make down` forever.
                outcomes[name] = StopOutcome(name, pid, "did not exit after SIGKILL")
                del waiting[name]
        if waiting:
            sleep(0.1)
    return [outcomes[spec.name] for spec in specs]


def _alive(table: ProcessTable, pid: int, marker: str, stack_id: str) -> bool:
    return is_ours(table.info(pid), marker=marker, stack_id=stack_id)


def pid_files(run_dir: Path) -> Iterable[Path]:
    """Every pid file in a run dir."""
    return sorted(run_dir.glob("*.pid")) if run_dir.is_dir() else []
