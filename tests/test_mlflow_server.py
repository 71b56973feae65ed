"""A real ``mlflow server`` on a store: several client processes, the UI's REST calls, the UI.

One server per backend (uvicorn, 2 workers, 127.0.0.1 only) serves the whole module.
The backend is steplog; ``STEPLOG_MLFLOW_SERVER_BACKENDS=sqlite`` (or ``sqlite,steplog``)
runs the same tests against MLflow's own SQLite store, the reference they were written
against. Four client processes write at once and every point is counted back; after
each log-batch a ``runs/get`` on a new connection (so on either worker) must see it.
"""

from __future__ import annotations

import html
import os
import re

import pytest

pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install steplog[mlflow])")

from mlflow import MlflowClient  # noqa: E402

import _mlflow_server as ms  # noqa: E402

BACKENDS = os.environ.get("STEPLOG_MLFLOW_SERVER_BACKENDS", "steplog").split(",")
CLIENTS = 4
CHART_POINTS = 320            # what the UI asks get-history-bulk-interval for


@pytest.fixture(scope="module", autouse=True)
def client_env():
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ms.QUIET_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    if request.param == "steplog" and not ms.steplog_registered():
        pytest.fail("no 'steplog' entry point in group mlflow.tracking_store: install the project (pip install -e .)")
    directory = tmp_path_factory.mktemp(f"mlflow-server-{request.param}")
    uri = ms.backend_uri(request.param, directory)
    prefilled = ms.prefill(uri, directory)
    server = ms.start_server(uri, directory)
    server.backend, server.prefilled = request.param, prefilled
    failed_before = request.session.testsfailed
    yield server
    server.stop()
    if request.session.testsfailed > failed_before:
        terminal = request.config.pluginmanager.get_plugin("terminalreporter")
        terminal.write_line(f"\n--- mlflow server ({request.param}) stderr, last lines ---\n{server.stderr_tail()}")


@pytest.fixture(scope="module")
def client(server):
    return MlflowClient(server.url)


@pytest.fixture(scope="module")
def client_runs(server, client):
    """Four client processes writing at once; their reports and each worker's CPU use."""
    experiment_id = client.create_experiment("concurrent-clients")
    workers = server.worker_pids()
    assert len(workers) == 2, f"expected 2 uvicorn workers, found {workers}"
    ticks_before = {pid: ms.cpu_ticks(pid) for pid in workers}
    log_start = server.access_log_size()
    reports = sorted(ms.run_clients(server.url, experiment_id, CLIENTS), key=lambda r: r["index"])
    ticks_used = {pid: ms.cpu_ticks(pid) - ticks_before[pid] for pid in workers}
    return {"experiment_id": experiment_id, "reports": reports, "ticks_used": ticks_used,
            "requests": ms.requests_in(server.access_log(log_start))}


def run_ids(client_runs) -> list[str]:
    return [report["run_id"] for report in client_runs["reports"]]


def test_every_point_of_concurrent_clients_is_stored(client, client_runs):
    for index, run_id in enumerate(run_ids(client_runs)):
        loss = client.get_metric_history(run_id, "loss")
        assert sorted((m.step, m.value, m.timestamp) for m in loss) == [
            (s, ms.loss_value(index, s), ms.BASE_TIMESTAMP_MS + s) for s in range(ms.BATCHES * ms.BATCH_METRICS)]
        acc = client.get_metric_history(run_id, "acc")
        assert sorted((m.step, m.value) for m in acc) == [(s, s / ms.SINGLE_METRICS) for s in range(ms.SINGLE_METRICS)]


def test_finished_runs_show_params_tags_and_latest_metrics(client, client_runs):
    last = ms.BATCHES * ms.BATCH_METRICS - 1
    for index, run_id in enumerate(run_ids(client_runs)):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == f"client-{index}"
        assert run.data.params == {"p0": "0", "p1": "1", "p2": "2", "lr": "0.01"}
        assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == {
            "client": str(index), "t0": "v0", "t1": "v1", "t2": "v2", "phase": "done"}
        assert run.data.metrics == {"loss": ms.loss_value(index, last), "acc": (ms.SINGLE_METRICS - 1) / ms.SINGLE_METRICS}


def test_a_log_batch_is_visible_at_once_on_any_worker(client_runs):
    stale = {report["index"]: report["stale"] for report in client_runs["reports"] if report["stale"]}
    assert stale == {}, f"runs/get right after log-batch did not show the batch's last point: {stale}"
    # Both workers served the clients, so some of those reads crossed from one worker to the other.
    assert all(ticks > 10 for ticks in client_runs["ticks_used"].values()), client_runs["ticks_used"]


def test_no_server_errors_under_concurrent_clients(server, client_runs):
    writes = [r for r in client_runs["requests"] if r[1].startswith("/api/2.0/mlflow/runs/log-batch")]
    assert len(writes) >= CLIENTS * ms.BATCHES
    failed = [r for r in client_runs["requests"] if r[2] >= 400]
    assert failed == []
    stderr = server.stderr_tail(200_000)
    assert not re.search(r"database is locked|Traceback|LockError|MlflowException", stderr), stderr[-6000:]


def post_json(server, path: str, body: dict) -> dict:
    response = ms.requests.post(f"{server.url}{path}", json=body, timeout=ms.REQUEST_TIMEOUT)
    assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text[:2000]}"
    return response.json()


def test_ui_experiment_and_run_search(server, client_runs):
    experiments = post_json(server, "/ajax-api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]
    assert {(e["name"], e["experiment_id"]) for e in experiments} >= {
        ("Default", "0"), ("concurrent-clients", client_runs["experiment_id"])}

    search = {"experiment_ids": [client_runs["experiment_id"]]}
    found = post_json(server, "/ajax-api/2.0/mlflow/runs/search", {
        **search, "filter": "metrics.loss >= 2000000 and params.lr = '0.01' and tags.phase = 'done'",
        "order_by": ["metrics.loss DESC"]})
    assert [r["info"]["run_name"] for r in found["runs"]] == ["client-3", "client-2"]

    first = post_json(server, "/ajax-api/2.0/mlflow/runs/search", {**search, "max_results": 3, "order_by": ["metrics.loss ASC"]})
    rest = post_json(server, "/ajax-api/2.0/mlflow/runs/search", {
        **search, "max_results": 3, "order_by": ["metrics.loss ASC"], "page_token": first["next_page_token"]})
    assert [r["info"]["run_name"] for r in first["runs"] + rest["runs"]] == [f"client-{i}" for i in range(CLIENTS)]
    assert not rest.get("next_page_token")


def test_ui_metric_history_in_pages(server, client_runs):
    run_id = run_ids(client_runs)[1]
    path, points, token = "/ajax-api/2.0/mlflow/metrics/get-history", [], None
    for _ in range(10):
        page = ms.fresh_get(server.url, path, run_id=run_id, metric_key="loss", max_results=1000,
                            **({"page_token": token} if token else {}))
        points += page["metrics"]
        token = page.get("next_page_token")
        if not token:
            break
    expected = [(s, ms.loss_value(1, s)) for s in range(ms.BATCHES * ms.BATCH_METRICS)]
    assert sorted((int(p["step"]), p["value"]) for p in points) == expected
    whole = ms.fresh_get(server.url, path, run_id=run_id, metric_key="loss")["metrics"]
    assert sorted((int(p["step"]), p["value"]) for p in whole) == expected


def bulk_interval(server, run_id_list: list[str], metric_key: str) -> dict[str, list[tuple[int, float, int]]]:
    answer = ms.fresh_get(server.url, "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                          run_ids=run_id_list, metric_key=metric_key, max_results=CHART_POINTS)
    by_run = {run_id: [] for run_id in run_id_list}
    for point in answer.get("metrics", []):
        assert point["key"] == metric_key
        by_run[point["run_id"]].append((int(point["step"]), point["value"], int(point["timestamp"])))
    return by_run


def test_ui_chart_points_are_few_and_real(server, client_runs):
    ids = run_ids(client_runs)[:2]
    last = ms.BATCHES * ms.BATCH_METRICS - 1
    for index, points in enumerate(bulk_interval(server, ids, "loss").values()):
        assert 2 <= len(points) <= CHART_POINTS
        assert [p[0] for p in points] == sorted({p[0] for p in points})
        assert all(p == (p[0], ms.loss_value(index, p[0]), ms.BASE_TIMESTAMP_MS + p[0]) for p in points)
        assert points[0][0] == 0 and points[-1][0] == last


def only_steplog_keeps_spikes(request, server) -> None:
    if server.backend != "steplog":
        request.applymarker(pytest.mark.xfail(strict=True, reason="MLflow's stores sample steps evenly and drop spikes"))


def test_ui_chart_keeps_a_one_step_spike(request, server):
    only_steplog_keeps_spikes(request, server)
    run_id = server.prefilled["run_id"]
    points = bulk_interval(server, [run_id], "loss")[run_id]
    assert 2 <= len(points) <= CHART_POINTS
    assert all(p == (p[0], ms.spike_series_value(p[0]), ms.BASE_TIMESTAMP_MS + p[0]) for p in points)
    assert points[0][0] == 0 and points[-1][0] == ms.SPIKE_POINTS - 1
    assert (ms.SPIKE_STEP, ms.SPIKE_VALUE) in [(p[0], p[1]) for p in points]


ERROR_SIGNS = re.compile(r"error-view-link|Page Not Found|Something went wrong|does not exist|Can.t load|"
                         r'du-bois-light-alert|notification-notice|role="alert"', re.I)
# Requests the UI makes that a server without an auth plugin answers 404 on purpose.
EXPECTED_404 = ("/ajax-api/2.0/mlflow/users/current",)


# The run page is done when a chart card has drawn its line, or when it shows an error.
PAGE_SETTLED_JS = """(() => {
  const text = document.body ? document.body.innerText : "";
  return /Can.t load|Page Not Found|Something went wrong|does not exist/i.test(text)
      || document.querySelector('[data-testid="experiment-view-compare-runs-card"] path.js-line') !== null;
})()"""


def page_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.fixture(scope="module")
def spike_run_page(server, tmp_path_factory):
    """The spike run's metric charts rendered by headless Chromium: DOM, requests, screenshot."""
    if ms.chromium_binary() is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    directory = tmp_path_factory.mktemp("mlflow-ui")
    run = server.prefilled
    url = f"{server.url}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}/model-metrics"
    screenshot, log_start = directory / "run-page.png", server.access_log_size()
    dom = ms.render_page(url, PAGE_SETTLED_JS, screenshot, directory / "profile")
    print(f"screenshot of {url}: {screenshot}")
    return {"dom": dom, "requests": ms.requests_in(server.access_log(log_start)), "screenshot": screenshot}


def chart_cards(dom: str, metric_key: str) -> list[str]:
    cards = dom.split('data-testid="experiment-view-compare-runs-card"')[1:]
    return [card for card in cards if re.search(rf">\s*{re.escape(metric_key)}\s*<", card)]


def test_ui_run_page_draws_the_metric_chart(server, spike_run_page):
    dom, page_requests = spike_run_page["dom"], spike_run_page["requests"]
    failed = [r for r in page_requests if r[2] >= 400 and not (r[2] == 404 and r[1].startswith(EXPECTED_404))]
    sign = ERROR_SIGNS.search(dom)
    assert sign is None, f"error on the page ({sign and sign[0]}): {page_text(dom)[:1500]}; failed requests {failed}"
    assert failed == []
    assert "spike-run" in page_text(dom)
    loss_cards = chart_cards(dom, "loss")
    assert loss_cards, "no chart card for 'loss'"
    assert re.search(r'class="js-line"[^>]*d="M[\d.,-]+L', loss_cards[0]), "the loss card has no drawn line"
    assert spike_run_page["screenshot"].stat().st_size > 10_000
    chart_reads = [r for r in page_requests if "get-history-bulk-interval" in r[1]
                   and server.prefilled["run_id"] in r[1] and "metric_key=loss" in r[1]]
    assert chart_reads and all(r[2] == 200 for r in chart_reads), page_requests


def test_ui_chart_shows_the_spike(request, server, spike_run_page):
    only_steplog_keeps_spikes(request, server)
    loss_cards = chart_cards(spike_run_page["dom"], "loss")
    assert loss_cards, "no chart card for 'loss'"
    y_ticks = [float(v) for v in re.findall(r'class="ytick"><text[^>]*data-unformatted="([-\d.e+]+)"', loss_cards[0])]
    # The rest of the series lies in [0, 1): only a drawn spike stretches the y axis towards 1000.
    assert y_ticks and max(y_ticks) >= ms.SPIKE_VALUE / 2, y_ticks
