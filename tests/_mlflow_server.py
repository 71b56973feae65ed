"""A real ``mlflow server`` on a loopback port, its client processes, and headless Chromium.

Imported by tests/test_mlflow_server.py. Run as a script it is either one client process
(``python _mlflow_server.py URL EXPERIMENT_ID INDEX``: it imports mlflow, prints
``ready``, waits for a line on stdin so that all clients write at the same time, runs
its workload and prints one JSON line with what it saw), or
(``python _mlflow_server.py prefill BACKEND_URI``) the process that writes the long
series with a spike straight into the backend before the server starts: 200 log-batch
round trips through the server cost ~25 s here, in-process logging a few.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

START_TIMEOUT = 90        # the server's start-up imports take 8-25 s on a loaded 2-core box
STOP_TIMEOUT = 15
REQUEST_TIMEOUT = 60
CHROMIUM_TIMEOUT = 90

# What every process of a test talks to: nothing beyond 127.0.0.1, and no retries that
# would turn a server error into a slow success.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
    # The GenAI job runner starts seven consumer processes (seconds of CPU each) and
    # is unrelated to tracking; a non-database store has none anyway.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "NO_PROXY": "127.0.0.1,localhost",
}

BATCHES = 3
BATCH_METRICS = 1000
SINGLE_METRICS = 20
BASE_TIMESTAMP_MS = 1_700_000_000_000


SPIKE_POINTS = 200_000
SPIKE_STEP = 123_457          # not on MLflow's even sampling grid (multiples of 625 here)
SPIKE_VALUE = 1000.0


def loss_value(client_index: int, step: int) -> float:
    return client_index * 1e6 + step


def spike_series_value(step: int) -> float:
    return SPIKE_VALUE if step == SPIKE_STEP else (step * 7919 % 1000) / 1000


def backend_uri(kind: str, directory: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{directory / 'mlflow.db'}"
    if kind == "steplog":
        return f"steplog://{directory / 'store.steplog'}"
    raise ValueError(f"unknown backend {kind!r}: expected sqlite or steplog")


def steplog_registered() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "steplog" for ep in entry_points(group="mlflow.tracking_store"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    backend: str = ""
    prefilled: dict = field(default_factory=dict)
    stopped: bool = False

    def stderr_tail(self, chars: int = 6000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def access_log(self, start: int = 0) -> str:
        """uvicorn's access log (it goes to stdout), from byte ``start`` on."""
        with open(self.stdout_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def access_log_size(self) -> int:
        return self.stdout_path.stat().st_size

    def worker_pids(self) -> list[int]:
        """The uvicorn workers: spawned children, not the resource tracker."""
        return [pid for pid, cmdline in group_processes(self.proc.pid) if "spawn_main" in cmdline]

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        stop_process_group(self.proc)


def group_processes(pgid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(entry.name)) == pgid:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmdline))
    return found


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of one process, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def stop_process_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    # The CLI process may be gone while a worker still shuts down; none may outlive the test.
    deadline = time.monotonic() + STOP_TIMEOUT
    while group_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


def quiet_env() -> dict:
    env = {**os.environ, **QUIET_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def prefill(uri: str, directory: Path, timeout: float = 300) -> dict:
    """Writes the spike run into the store at ``uri`` (no server yet); its ids."""
    result = subprocess.run([sys.executable, __file__, "prefill", uri], env=quiet_env(), capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=directory)
    assert result.returncode == 0, f"prefill exited {result.returncode}:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def prefill_main(uri: str) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    experiment_id = client.create_experiment("spike")
    run_id = client.create_run(experiment_id, run_name="spike-run").info.run_id
    client.log_batch(run_id, metrics=[Metric("loss", spike_series_value(s), BASE_TIMESTAMP_MS + s, s)
                                      for s in range(SPIKE_POINTS)])
    client.set_terminated(run_id)
    print(json.dumps({"experiment_id": experiment_id, "run_id": run_id}), flush=True)


def start_server(uri: str, directory: Path, workers: int = 2) -> Server:
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = quiet_env()
    stdout_path, stderr_path = directory / "server.stdout", directory / "server.stderr"
    command = [str(mlflow_cli), "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(directory / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(command, cwd=directory, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, stdout_path, stderr_path)
    try:
        wait_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.proc.returncode}:\n{server.stderr_tail()}")
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(f"{server.url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"mlflow server not healthy after {START_TIMEOUT} s:\n{server.stderr_tail()}")


# -- client processes -----------------------------------------------------------------


def start_clients(url: str, experiment_id: str, count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, __file__, url, experiment_id, str(index)], env=quiet_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for index in range(count)]


def run_clients(url: str, experiment_id: str, count: int, timeout: float = 120) -> list[dict]:
    """Starts ``count`` clients, lets them all write at once, and returns their reports."""
    clients = start_clients(url, experiment_id, count)
    try:
        for client in clients:
            line = client.stdout.readline().strip()
            assert line == "ready", f"client died before starting: {line}\n{client.stderr.read()[-4000:]}"
        for client in clients:
            client.stdin.write("go\n")
            client.stdin.flush()
        reports = []
        for client in clients:
            out, err = client.communicate(timeout=timeout)
            assert client.returncode == 0, f"client exited {client.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for client in clients:
            if not client.stdout.closed:   # not collected above: a failure cut the run short
                client.kill()
                client.communicate(timeout=STOP_TIMEOUT)


def fresh_get(url: str, path: str, **params) -> dict:
    """A GET on a new connection, so that it may land on any worker, not the writer's."""
    response = requests.get(f"{url}{path}", params=params, timeout=REQUEST_TIMEOUT,
                            headers={"Connection": "close"})
    assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:2000]}"
    return response.json()


def latest_metrics(url: str, run_id: str) -> dict[str, dict]:
    run = fresh_get(url, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    return {m["key"]: m for m in run["data"].get("metrics", [])}


def client_workload(url: str, experiment_id: str, index: int) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(url)
    run_id = client.create_run(experiment_id, run_name=f"client-{index}", tags={"client": str(index)}).info.run_id
    stale = []   # (batch, what runs/get showed) whenever it did not show the batch's last point
    for batch in range(BATCHES):
        steps = range(batch * BATCH_METRICS, (batch + 1) * BATCH_METRICS)
        client.log_batch(run_id,
                         metrics=[Metric("loss", loss_value(index, s), BASE_TIMESTAMP_MS + s, s) for s in steps],
                         params=[Param(f"p{batch}", str(batch))], tags=[RunTag(f"t{batch}", f"v{batch}")])
        seen = latest_metrics(url, run_id).get("loss")
        last = steps[-1]
        if seen is None or (int(seen["step"]), float(seen["value"])) != (last, loss_value(index, last)):
            stale.append([batch, seen])
    for step in range(SINGLE_METRICS):
        client.log_metric(run_id, "acc", step / SINGLE_METRICS, timestamp=BASE_TIMESTAMP_MS + step, step=step)
    client.log_param(run_id, "lr", "0.01")
    client.set_tag(run_id, "phase", "done")
    client.set_terminated(run_id)
    return {"index": index, "run_id": run_id, "stale": stale}


def client_main(argv: list[str]) -> None:
    url, experiment_id, index = argv
    import mlflow  # noqa: F401  (the import is the slow part; it happens before "ready")

    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(client_workload(url, experiment_id, int(index))), flush=True)


# -- the UI in headless Chromium ----------------------------------------------------------


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps",
    # Every name but loopback fails to resolve: the page cannot reach beyond 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


class DevTools:
    """Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-framed JSON).

    A fixed --virtual-time-budget raced the UI's lazily loaded charts (drawn in 2 of 6
    loads here), so the page is polled until a condition holds instead."""

    def __init__(self, url: str, profile: Path):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # Above fd 4, so that "3<&N 4>&M" cannot overwrite one end with the other (bash: dash takes fds <= 9 only).
        to_browser_r, from_browser_w = (high_fd(fd) for fd in (to_browser_r, from_browser_w))
        command = " ".join(["exec", *map(shlex.quote, [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                                        "--remote-debugging-pipe", url]),
                            f"3<&{to_browser_r}", f"4>&{from_browser_w}"])
        self.proc = subprocess.Popen(["bash", "-c", command], pass_fds=(to_browser_r, from_browser_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer, self.last_id, self.session = b"", 0, None
        page = self._first_page()
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _first_page(self) -> dict:
        for _ in range(40):
            pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages:
                return pages[0]
            time.sleep(0.25)
        raise AssertionError("chromium opened no page")

    def call(self, method: str, timeout: float = 30, **params):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.last_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.from_browser], [], [], max(0.0, remaining))
            chunk = os.read(self.from_browser, 1 << 20) if ready else b""
            if not chunk:
                self.proc.kill()
                raise AssertionError(("chromium closed its pipe" if ready else "chromium did not answer in time")
                                     + f":\n{self.proc.stderr.read().decode(errors='replace')[-3000:]}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.to_browser)
        with contextlib.suppress(OSError):
            os.close(self.from_browser)
        stop_process_group(self.proc)
        self.proc.stderr.close()


def high_fd(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def render_page(url: str, ready_js: str, screenshot: Path, profile: Path, timeout: float = CHROMIUM_TIMEOUT) -> str:
    """The DOM of ``url`` once ``ready_js`` is true (or ``timeout`` passed), and a screenshot."""
    browser = DevTools(url, profile)
    try:
        deadline = time.monotonic() + timeout
        while not browser.evaluate(ready_js) and time.monotonic() < deadline:
            time.sleep(0.5)
        png = browser.call("Page.captureScreenshot", format="png")["data"]
        screenshot.write_bytes(base64.b64decode(png))
        return browser.evaluate("document.documentElement.outerHTML")
    finally:
        browser.close()


ACCESS_LINE = re.compile(r'"(GET|POST|PATCH|DELETE|PUT) (\S+) HTTP/[\d.]+" (\d{3})')


def requests_in(access_log: str) -> list[tuple[str, str, int]]:
    """(method, path with query, status) of each request in an access log excerpt."""
    return [(m[1], m[2], int(m[3])) for m in ACCESS_LINE.finditer(access_log)]


if __name__ == "__main__":
    if sys.argv[1] == "prefill":
        prefill_main(sys.argv[2])
    else:
        client_main(sys.argv[1:])
