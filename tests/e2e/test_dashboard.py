"""The dashboard at ``/ui`` in a real headless browser (Debian's chromium and chromedriver,
driven by selenium) against one embedded ``noisefa serve``.

Screenshots of every page go to ``$NOISEFA_ARTIFACTS_DIR/dashboard`` (a temporary folder
when unset); page load time and curve update latency are printed (``pytest -s``) and
written beside them as ``timings.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from noisefa.client import Client
from noisefa.commands.processes import stop_process
from noisefa.engine.contract.states import TERMINAL_STATES, JobKind, JobState
from noisefa.testing.embedded import Server, start_server
from noisefa.testing.specs import TINY_METRICS, cpu_pretrain_spec, experiment_spec
from noisefa.testing.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UI_DIR = Path(__file__).resolve().parents[2] / "service" / "ui"
PAGE_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 240.0

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dashboard")
    server = start_server(root / "home", root / "serve.log")
    try:
        yield server
    finally:
        stop_process(server.process, sig=signal.SIGINT, timeout_s=30)


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return (server.home / "api_key").read_text().strip()


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> Iterator[Client]:
    with Client(server.url, key, retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and timings are kept (not deleted after the run)."""
    base = os.environ.get("NOISEFA_ARTIFACTS_DIR")
    folder = Path(base) / "dashboard" if base else tmp_path_factory.mktemp("screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def timings(shots: Path) -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    (shots / "timings.json").write_text(json.dumps(found, indent=2))
    print("dashboard timings (ms):", json.dumps(found))


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager has nothing to look up or download.
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_page(driver, what: str, condition) -> object:
    return wait_for(lambda: condition(driver), PAGE_TIMEOUT_S, what, poll_s=0.1)


def find(driver, css: str):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def loaded(driver, page: str) -> bool:
    body = find(driver, "body")
    return body.get_attribute("data-page") == page and body.get_attribute("data-loaded-at")


def open_signed_in(driver, server: Server, key: str, hash_: str, page: str) -> None:
    page_errors(driver)  # forget those of earlier tests (reading the log empties it)
    driver.get(f"{server.url}/ui/#key={key}")
    wait_page(driver, "the jobs page", lambda d: loaded(d, "jobs"))
    driver.get("about:blank")  # then a whole page load (the tab keeps its session storage)
    driver.get(f"{server.url}/ui/{hash_}")
    wait_page(driver, f"the {page} page", lambda d: loaded(d, page))


def page_errors(driver) -> list[str]:
    """Errors the page's scripts logged (exceptions, CSP violations), less the browser's own
    note of each 4xx answer (the pages show those)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def points(driver, chart: str) -> int:
    figure = find(driver, f'figure[data-chart="{chart}"]')
    return int(figure.get_attribute("data-points")) if figure else 0


def test_ui_files_carry_a_strict_content_security_policy(server: Server):
    for path in ("/ui/", "/ui/app.js", "/ui/vendor/uPlot.iife.min.js", "/ui/vendor/LICENSE"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert (
        httpx.get(server.url + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    )
    assert httpx.get(server.url + "/ui/../pyproject.toml").status_code == 404
    assert httpx.get(server.url + "/ui/api.py").status_code == 404
    redirect = httpx.get(server.url + "/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"


def test_the_pages_name_the_api_s_kinds_and_states():
    text = (UI_DIR / "vocabulary.js").read_text()

    def listed(name: str) -> list[str]:
        return re.findall(r'"(\w+)"', re.search(rf"{name} = (.*?);", text, re.S).group(1))

    assert listed("JOB_KINDS") == [k.value for k in JobKind]
    assert listed("JOB_STATES") == [s.value for s in JobState]
    assert set(listed("TERMINAL_STATES")) == {s.value for s in TERMINAL_STATES}


def test_a_bad_key_shows_a_clear_message(browser, server: Server, shots: Path):
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    field = wait_page(browser, "the sign-in form", lambda d: find(d, "#api-key"))
    field.send_keys("nfa_not-a-key")
    find(browser, "#signin button[type=submit]").click()
    message = wait_page(browser, "the refusal", lambda d: find(d, "#signin-message").text or None)
    assert "refused" in message and "401" in message
    assert find(browser, "#api-key") is not None  # still asking for a key
    browser.save_screenshot(str(shots / "signin-bad-key.png"))


def test_sign_in_with_the_form(browser, server: Server, key: str):
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_page(browser, "the sign-in form", lambda d: find(d, "#api-key")).send_keys(key)
    find(browser, "#signin button[type=submit]").click()
    wait_page(browser, "the jobs page", lambda d: loaded(d, "jobs"))
    assert browser.execute_script("return sessionStorage.getItem('noisefa.apiKey')") == key


def test_a_key_link_signs_in_and_leaves_the_address_bar(
    browser, server: Server, key: str, timings: dict
):
    browser.get(f"{server.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui#key={key}")  # /ui redirects to /ui/, keeping the fragment
    wait_page(browser, "the jobs page", lambda d: loaded(d, "jobs"))
    assert key not in browser.current_url and "key=" not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('noisefa.apiKey')") == key
    # From navigation start to the jobs page drawn with its first page of jobs.
    timings["page_load_jobs_ms"] = round(
        float(find(browser, "body").get_attribute("data-loaded-at")), 1
    )


def test_the_jobs_list_shows_a_submitted_job(
    browser, server: Server, key: str, client: Client, shots: Path
):
    job = client.submit(cpu_pretrain_spec(samples=64))
    open_signed_in(browser, server, key, "#/jobs", "jobs")
    row = wait_page(browser, "the job's row", lambda d: find(d, f'tr[data-job-id="{job["id"]}"]'))
    assert "pretrain" in row.text
    client.wait(job["id"], timeout=JOB_TIMEOUT_S)
    # The list is read again every few seconds: the row turns to the final state by itself.
    wait_page(
        browser,
        "the row in state succeeded",
        lambda d: find(d, f'tr[data-job-id="{job["id"]}"][data-state="succeeded"]'),
    )
    browser.save_screenshot(str(shots / "jobs.png"))
    assert not page_errors(browser)


def test_a_running_job_s_curves_grow_live_and_cancel_ends_it(
    browser, server: Server, key: str, client: Client, shots: Path, timings: dict
):
    spec = cpu_pretrain_spec(epochs=400, samples=4096, hidden=32)
    job = client.submit(spec)
    open_signed_in(browser, server, key, f"#/job/{job['id']}", "job")
    timings["page_load_job_ms"] = round(
        float(find(browser, "body").get_attribute("data-loaded-at")), 1
    )
    first = wait_page(browser, "accuracy points", lambda d: points(d, "accuracy"))
    wait_page(browser, "more accuracy points", lambda d: points(d, "accuracy") > first + 1)
    latencies = []
    for _ in range(5):
        seen = points(browser, "accuracy")
        wait_page(browser, "a new point", lambda d, seen=seen: points(d, "accuracy") > seen)
        figure = find(browser, 'figure[data-chart="accuracy"]')
        latencies.append(float(figure.get_attribute("data-update-latency-ms")))
    timings["curve_update_latency_ms_median"] = sorted(latencies)[len(latencies) // 2]
    timings["curve_update_latency_ms_max"] = max(latencies)
    assert points(browser, "alignment") > 0 and points(browser, "eff_dim") > 0
    assert "ETA" in find(browser, "#job-progress-text").text
    browser.save_screenshot(str(shots / "job-running.png"))

    find(browser, "#cancel-job").click()
    final = client.wait(job["id"], timeout=JOB_TIMEOUT_S)
    assert final["state"] == JobState.CANCELLED
    wait_page(browser, "the cancelled state", lambda d: "cancelled" in find(d, "#job-state").text)
    wait_page(browser, "its artifacts", lambda d: "Download" in find(d, "#artifacts").text)
    browser.save_screenshot(str(shots / "job-cancelled.png"))
    assert not page_errors(browser)


def test_an_experiment_page_shows_its_table_children_bands_and_plots(
    browser, server: Server, key: str, client: Client, shots: Path
):
    base = {
        "kind": "train",
        "model": {"hidden": [16]},
        "train": {"dataset": "digits", "epochs": 2},
        "device": "cpu",
        "metrics": dict(TINY_METRICS),
    }
    experiment = client.submit(experiment_spec(base))
    done = client.wait(experiment["id"], timeout=JOB_TIMEOUT_S)
    assert done["state"] == JobState.SUCCEEDED, done.get("error")
    runs = [run for ids in done["result"]["runs"].values() for run in ids]

    open_signed_in(browser, server, key, f"#/experiment/{experiment['id']}", "experiment")
    table = wait_page(browser, "the report table", lambda d: find(d, "#report-table"))
    assert "bp" in table.text and "fa" in table.text
    for run in runs:
        row = find(browser, f'#children-body tr[data-job-id="{run}"]')
        assert row is not None and "succeeded" in row.text
    assert points(browser, "band-test_accuracy") > 0
    wait_page(browser, "the plots", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#plots img")))
    wait_page(
        browser,
        "the plots drawn",
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#plots img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        ),
    )
    browser.save_screenshot(str(shots / "experiment.png"))

    find(browser, f'#children-body a[href="#/job/{runs[0]}"]').click()
    wait_page(browser, "the run's page", lambda d: loaded(d, "job"))
    wait_page(browser, "the run's curves", lambda d: points(d, "accuracy") > 0)

    browser.get(f"{server.url}/ui/#/compare?ids={runs[0]},{runs[-1]}")
    wait_page(browser, "the compare chart", lambda d: points(d, "compare") > 0)
    browser.save_screenshot(str(shots / "compare.png"))
    assert not page_errors(browser)


def test_the_submit_page_shows_a_field_error_and_submits(
    browser, server: Server, key: str, client: Client, shots: Path
):
    open_signed_in(browser, server, key, "#/submit", "submit")
    body = find(browser, "#job-body")
    assert json.loads(body.get_attribute("value"))["kind"] == "experiment"  # a preset
    bad = cpu_pretrain_spec()
    bad["pretrain"]["epochs"] = 0
    browser.execute_script("arguments[0].value = arguments[1]", body, json.dumps(bad, indent=2))
    find(browser, "#submit-job").click()
    error = wait_page(
        browser, "the field error", lambda d: find(d, 'li[data-field="pretrain.epochs"]')
    )
    assert "pretrain.epochs" in error.text
    browser.save_screenshot(str(shots / "submit-error.png"))

    browser.execute_script(
        "arguments[0].value = arguments[1]", body, json.dumps(cpu_pretrain_spec())
    )
    find(browser, "#submit-job").click()
    wait_page(browser, "the new job's page", lambda d: loaded(d, "job"))
    job_id = browser.current_url.rsplit("/", 1)[-1]
    assert client.get(job_id)["kind"] == "pretrain"
    assert not page_errors(browser)


def test_the_key_never_reaches_a_url_or_the_log(server: Server, key: str):
    log = server.log.read_text()
    assert log.count(key) == 1  # the first start's one print of it, nothing since
    assert "#key=" not in log and "?key=" not in log
    requests = [line for line in log.splitlines() if '"GET /' in line or '"POST /' in line]
    assert any("/ui/" in line for line in requests) and any("/events" in line for line in requests)
    assert "Dashboard: http://127.0.0.1:" in log
