"""Shared pieces of the reliability-campaign scripts (not a test module).

Children: every reader, damage trial and CLI call runs in its own process with a wall
clock limit, so a crash (a signal), an abnormal exit or a hang is counted, not fatal.
A child runs ``python SCRIPT --_role ROLE ...`` (the script itself, in another role).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# -- child processes ---------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """How a child process ended. kind: "exit" (with rc), "signal" (with sig) or "hang"."""

    kind: str
    rc: int | None
    sig: str | None
    wall: float
    stdout: str
    stderr: str

    @property
    def label(self) -> str:
        if self.kind == "signal":
            return self.sig
        if self.kind == "hang":
            return "hang"
        return f"exit {self.rc}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Child:
    """A child process started by ``run_child_async``; ``wait_child`` ends it."""

    def __init__(self, argv: list[str], cwd: str | None = None, env: dict | None = None):
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL, cwd=cwd,
                                     env=env, start_new_session=True)


def run_child_async(argv: list[str], cwd: str | None = None, env: dict | None = None) -> Child:
    return Child(argv, cwd, env)


def wait_child(child: Child, timeout: float, capture_limit: int = 20000) -> Outcome:
    """Wait until ``timeout`` seconds after the child started; past that kill its whole
    process group (a hang)."""
    try:
        child.proc.wait(timeout=max(0.0, child.t0 + timeout - time.monotonic()))
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
        kill_group(child.proc)
    wall = time.monotonic() - child.t0
    texts = []
    for f in (child.out, child.err):
        f.seek(0)
        texts.append(f.read()[-capture_limit:].decode("utf-8", "replace"))
        f.close()
    rc = child.proc.returncode
    if hung:
        return Outcome("hang", None, None, wall, *texts)
    if rc < 0:
        return Outcome("signal", None, signal_name(-rc), wall, *texts)
    return Outcome("exit", rc, None, wall, *texts)


def run_child(argv: list[str], timeout: float, cwd: str | None = None, env: dict | None = None) -> Outcome:
    """Run argv in a new session and wait for it, at most ``timeout`` seconds."""
    return wait_child(run_child_async(argv, cwd, env), timeout)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that ``proc`` leads (it was started in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def self_argv(script: str, role: str, **options) -> list[str]:
    argv = [sys.executable, os.path.abspath(script), "--_role", role]
    for key, value in options.items():
        argv += [f"--_{key}", str(value)]
    return argv


def limit_memory(mb: int) -> None:
    """Cap this process's data segment (heap, anonymous maps; not LMDB's file map), so
    that a damaged length asking for a huge allocation fails with MemoryError instead
    of pushing the machine into swap. 0: no cap."""
    if mb > 0:
        import resource

        limit = mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


# -- the command line of steplog ---------------------------------------------------------

def steplog_cli(args: list[str], timeout: float) -> Outcome:
    """``python -m steplog ARGS``, run from a neutral directory: the steplog it imports is
    the one this interpreter imports, not a folder that happens to be the working one."""
    return run_child([sys.executable, "-m", "steplog", *args], timeout, cwd=tempfile.gettempdir())


_REPAIR: bool | None = None


def has_repair() -> bool:
    """Whether ``python -m steplog repair`` exists (its --help exits 0)."""
    global _REPAIR
    if _REPAIR is None:
        out = steplog_cli(["repair", "--help"], 60)
        _REPAIR = out.kind == "exit" and out.rc == 0
    return _REPAIR


@dataclasses.dataclass
class VerifyResult:
    """``steplog verify``: clean (exit 0), damage (exit 1 with DAMAGED lines), or broken
    (a traceback, a signal, a hang, another exit code)."""

    outcome: Outcome
    damaged: list[str]

    @property
    def traceback(self) -> str | None:
        if "Traceback (most recent call last)" in self.outcome.stderr:
            last = [line for line in self.outcome.stderr.strip().splitlines() if line.strip()]
            return last[-1] if last else "Traceback"
        return None

    @property
    def verdict(self) -> str:
        o = self.outcome
        if o.kind != "exit":
            return o.label
        if self.traceback:
            return "traceback"
        if o.rc == 0:
            return "clean"
        if o.rc == 1:
            return "damage"
        return f"exit {o.rc}"


def verify_verdict(result: VerifyResult, baseline: VerifyResult | None) -> str:
    """The verdict, with "as-pristine" for exit 1 with exactly the damage lines that
    verify also prints for the undamaged store (it reports nothing new)."""
    verdict = result.verdict
    if verdict == "damage" and baseline is not None and baseline.verdict == "damage" \
            and result.damaged == baseline.damaged:
        return "as-pristine"
    return verdict


def run_verify(store: str, timeout: float) -> VerifyResult:
    out = steplog_cli(["verify", store], timeout)
    damaged = [line.replace(store, "STORE") for line in out.stdout.splitlines() if line.startswith("DAMAGED")]
    return VerifyResult(out, damaged)


# -- deterministic data ------------------------------------------------------------------

_M52 = np.uint64((1 << 52) - 1)
_ONE_EXP = np.uint64(0x3FF << 52)
_SIGN = np.uint64(1 << 63)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def det_values(a: int, b: int, salt: int, ks: np.ndarray) -> np.ndarray:
    """float64 values in +-[1, 2) that depend only on (a, b, salt, k) for each k: a wrong
    or misplaced value is told apart from the right one bit for bit."""
    with np.errstate(over="ignore"):
        seed = _splitmix(np.array([a], np.uint64))[0] ^ _splitmix(np.array([b * 7919 + salt], np.uint64))[0]
        h = _splitmix(np.asarray(ks, np.int64).astype(np.uint64) ^ seed)
    return ((h & _M52) | _ONE_EXP | (h & _SIGN)).view(np.float64)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.itemsize == b.dtype.itemsize and \
        bool(np.array_equal(a.view(np.uint8), b.view(np.uint8)))


def flatten(mapping: dict, prefix: str) -> dict:
    """{"model": {"depth": 50}} -> {"params.model.depth": 50}, as the runs table names columns."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def canonical_context(context: dict | None) -> str | None:
    """The context as steplog.Store.metrics/read_many show it (None for no context)."""
    if not context:
        return None
    return json.dumps(context, sort_keys=True, separators=(",", ":"))


# -- output --------------------------------------------------------------------------------

def make_out_dir(out: str | None, name: str) -> str:
    """A fresh directory for this invocation: under ``out`` when given, else a temporary one."""
    if out:
        os.makedirs(out, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=out)
    return tempfile.mkdtemp(prefix=f"steplog-{name}-")


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def tail_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def lmdb_assertion(stderr: str) -> str | None:
    """The assertion LMDB printed before it called abort() ("mdb.c:6273: Assertion
    'IS_LEAF(mp)' failed in mdb_cursor_next()"), without the build directory; else None."""
    for line in stderr.splitlines():
        m = re.search(r"([\w.]+:\d+: Assertion '.*' failed in \w+\(\))", line)
        if m:
            return m.group(1)
    return None


def crash_text(stderr: str) -> str:
    """LMDB's assertion line (if any), the fatal-error line and the innermost frames of the
    crashing thread that faulthandler printed, else the last lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    assertion = lmdb_assertion(stderr)
    for i, line in enumerate(lines):
        if line.startswith("Fatal Python error"):
            rest = lines[i + 1:]
            current = next((j for j, x in enumerate(rest) if x.startswith("Current thread")), None)
            if current is not None:
                rest = rest[current + 1:]
            frames = [x for x in rest if x.startswith("File ")][:3]
            return " | ".join(([assertion] if assertion else []) + [line] + frames)
    return " | ".join(([assertion] if assertion else []) + [tail_lines(stderr, 4)])


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def append_line(path: str, record: dict) -> None:
    """Append one JSON line and push it to the OS: it survives this process crashing next."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str) -> list[dict]:
    """The JSON lines of ``path``; a last line cut short by a crash is left out."""
    records = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    except FileNotFoundError:
        pass
    return records


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """("typed", "CorruptionError: ...") for steplog's own errors, else ("untyped", ...)."""
    import steplog

    if isinstance(exc, steplog.StepLogError):
        return "typed", f"{type(exc).__name__}: {short(exc, 400)}"
    module = type(exc).__module__
    name = type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"
    return "untyped", f"{name}: {short(exc, 400)}"
