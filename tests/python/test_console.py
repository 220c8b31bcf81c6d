"""The admin console in a real headless Chromium (Debian's chromium + chromedriver,
driven by Selenium), and `/metrics` read with the Prometheus client's own parser.

Screenshots go to test-output/console/ in the checkout.
"""

import json
import os
import pathlib
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import start_lakehouse, stop

SHOTS = pathlib.Path(__file__).resolve().parents[2] / "test-output" / "console"
CHROMIUM = os.environ.get("LAKEHOUSE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LAKEHOUSE_CHROMEDRIVER", "/usr/bin/chromedriver")
ANSWER = "Rotate them with logrotate, weekly [1]."

HANDBOOK = [
    {"id": "logs", "text": "Log files are rotated weekly by logrotate; old logs are compressed with gzip."},
    {"id": "backup", "text": "Backups run nightly with restic to the object store and are kept for thirty days."},
    {"id": "deploy", "text": "Deploys go through the blue green pipeline after the canary passes its checks."},
    {"id": "oncall", "text": "The on-call engineer answers pages within fifteen minutes, day and night."},
]


@pytest.fixture(scope="module")
def console(fake_upstream):
    r = httpx.post(f"{fake_upstream}/_fake/canned", json={"model": "console-model", "reply": ANSWER})
    r.raise_for_status()
    proc, url = start_lakehouse(
        fake_upstream,
        """
[plugins.matrix]
min_similarity = -1.0
[[rag_models]]
name = "rag/console"
model = "kimi/console-model"
corpora = ["handbook"]
k = 2
plugins = ["matrix", "playbook"]
""",
    )
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"the console test needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30):
    # A row the page re-renders between two lookups is stale, not a failure: look again.
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def shot(driver, name):
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000


def attribute_is(element_id, name, value):
    return lambda d: d.find_element(By.ID, element_id).get_attribute(name) == value


def open_tab(driver, name):
    driver.find_element(By.CSS_SELECTOR, f'#tabs a[data-tab="{name}"]').click()
    wait(driver, lambda d: d.find_element(By.ID, name).is_displayed())


def test_console_ingest_search_chat_rate(console, browser, tmp_path):
    driver = browser
    driver.get(f"{console}/admin")
    assert driver.title == "Lakehouse console"

    # Providers: all five listed, registered by their key files.
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#providers-rows tr")) >= 5)
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
        for r in driver.find_elements(By.CSS_SELECTOR, "#providers-rows tr")
    }
    assert rows["kimi"] == "yes" and rows["openrouter"] == "yes", rows
    shot(driver, "1-providers")

    # Corpora: upload a JSONL file and watch it ingest.
    data = tmp_path / "handbook.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in HANDBOOK))
    open_tab(driver, "corpora")
    driver.find_element(By.ID, "ingest-name").send_keys("handbook")
    driver.find_element(By.ID, "ingest-file").send_keys(str(data))
    driver.find_element(By.CSS_SELECTOR, "#ingest-form button[type=submit]").click()
    wait(driver, attribute_is("ingest-status", "data-done", "true"))
    assert driver.find_element(By.ID, "ingest-status").text == "ingested 4 rows into handbook"
    assert driver.find_element(By.ID, "ingest-progress").get_attribute("value") == "100"
    row = driver.find_element(By.CSS_SELECTOR, '#corpora-rows tr[data-corpus="handbook"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == ["handbook", "4", "4"], cells
    shot(driver, "2-ingested")

    # Search: the logrotate document comes first, with its score and boost.
    Select(driver.find_element(By.ID, "search-corpus")).select_by_value("handbook")
    driver.find_element(By.ID, "search-query").send_keys("how are old log files rotated and compressed")
    driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    wait(driver, attribute_is("search-results", "data-renders", "1"))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#search-results tr.hit")) == 4
    first = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#search-results tr.hit")[0].find_elements(By.TAG_NAME, "td")]
    assert first[1] == "logs", first
    assert 0.0 < float(first[2]) <= 1.0
    assert float(first[3]) == 0.0  # nothing rated yet
    shot(driver, "3-search")

    # Playground: stream a rag chat, see the answer and its sources, rate it.
    open_tab(driver, "playground")
    driver.find_element(By.ID, "chat-model").send_keys("rag/console")
    driver.find_element(By.ID, "chat-prompt").send_keys("How are the logs rotated?")
    driver.find_element(By.ID, "chat-send").click()
    wait(driver, attribute_is("chat-status", "data-state", "done"))
    assert driver.find_element(By.ID, "chat-answer").text == ANSWER
    sources = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#chat-sources li.source")]
    assert len(sources) == 2 and sources[0].startswith("handbook / logs"), sources
    assert "in /" in driver.find_element(By.ID, "chat-status").text  # usage shown
    chat_id = driver.find_element(By.ID, "chat-id").text
    assert chat_id.startswith("chatcmpl-")
    shot(driver, "4-chat")
    driver.find_element(By.ID, "rate-up").click()
    wait(driver, attribute_is("rate-status", "data-done", "true"))
    assert driver.find_element(By.ID, "rate-status").text == "rated good (2 sources)"
    outcomes = httpx.get(f"{console}/admin/playbook/outcomes").json()["data"]
    assert [o["id"] for o in outcomes] == [chat_id]
    assert outcomes[0]["rating"] == 1.0

    # The rating now boosts the same need in search.
    open_tab(driver, "corpora")
    driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    wait(driver, attribute_is("search-results", "data-renders", "2"))
    boosted = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#search-results tr.hit")[0].find_elements(By.TAG_NAME, "td")]
    assert boosted[1] == "logs" and float(boosted[3]) > 0, boosted
    shot(driver, "5-boosted-search")

    # Playbook: the outcome is listed.
    open_tab(driver, "playbook")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#playbook-rows tr")) == 1)
    assert chat_id in driver.find_element(By.ID, "playbook-rows").text

    # Requests: the chat is there with its provider and outcome.
    open_tab(driver, "requests")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#requests-rows tr")) >= 1)
    cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#requests-rows tr")[0].find_elements(By.TAG_NAME, "td")]
    assert cells[2:6] == ["rag/console", "kimi", "yes", "ok"], cells
    assert cells[9] == "2"  # sources
    assert cells[11] == "1"  # the rating given above
    shot(driver, "6-requests")


def test_console_memory_and_fanout(console, browser):
    driver = browser
    trace = httpx.post(
        f"{console}/admin/memory/traces",
        json={"namespace": "ops", "text": "The staging database was moved to the new cluster in May."},
    ).json()
    revised = httpx.post(
        f"{console}/admin/memory/traces/{trace['id']}/revise",
        json={"text": "The staging database was moved to the new cluster in June."},
    ).json()
    driver.get(f"{console}/admin#memory")
    wait(driver, lambda d: d.find_element(By.ID, "memory").is_displayed())
    ns = driver.find_element(By.ID, "memory-namespace")
    ns.clear()
    ns.send_keys("ops")
    driver.find_element(By.ID, "memory-query").send_keys("where is the staging database")
    driver.find_element(By.CSS_SELECTOR, "#memory-form button[type=submit]").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#memory-results tr")) == 1)
    row = driver.find_element(By.CSS_SELECTOR, "#memory-results tr")
    assert revised["id"] in row.text and "June" in row.text
    row.find_element(By.XPATH, ".//button[text()='History']").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#memory-history li")) == 2)
    history = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#memory-history li")]
    assert history[0].startswith("v2") and history[1].startswith("v1"), history
    shot(driver, "7-memory")
    driver.find_element(By.XPATH, "//tbody[@id='memory-results']//button[text()='Retire']").click()
    wait(driver, lambda d: "retired" in d.find_element(By.ID, "flash").text)
    assert httpx.get(f"{console}/admin/memory/traces/{revised['id']}").json()["retired"] is True

    # Fan-out: two models side by side, each streamed into its own column.
    open_tab(driver, "fanout")
    driver.find_element(By.ID, "fanout-models").send_keys("kimi/console-model, ollama/console-model")
    driver.find_element(By.ID, "fanout-prompt").send_keys("How are the logs rotated?")
    driver.find_element(By.CSS_SELECTOR, "#fanout-form button[type=submit]").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, '#fanout-columns .column[data-state="done"]')) == 2)
    columns = driver.find_elements(By.CSS_SELECTOR, "#fanout-columns .column")
    assert [c.find_element(By.TAG_NAME, "h3").text for c in columns] == ["kimi/console-model", "ollama/console-model"]
    for c in columns:
        assert c.find_element(By.CSS_SELECTOR, "pre.answer").text == ANSWER
    assert columns[0].find_element(By.CSS_SELECTOR, ".meta").text.startswith("kimi · ")
    shot(driver, "8-fanout")


def _samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_move(console):
    def scrape():
        r = httpx.get(f"{console}/metrics")
        assert r.status_code == 200
        return _samples(r.text)

    chat_ok = ("lakehouse_chat_requests_total", (("model", "kimi/console-model"), ("outcome", "ok"), ("provider", "kimi"), ("stream", "false")))
    ttft = ("lakehouse_time_to_first_token_seconds_count", (("model", "kimi/console-model"), ("provider", "kimi")))
    r = httpx.post(f"{console}/admin/corpora", json={"name": "metricsdocs", "text_columns": ["text"]})
    assert r.status_code == 201, r.text
    r = httpx.post(f"{console}/admin/corpora/metricsdocs/ingest?format=jsonl", content="".join(json.dumps(d) + "\n" for d in HANDBOOK[:3]))
    assert r.status_code == 200, r.text
    before = scrape()
    for _ in range(3):
        r = httpx.post(f"{console}/v1/chat/completions", json={"model": "kimi/console-model", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
    r = httpx.post(f"{console}/v1/chat/completions", json={"model": "kimi/x", "messages": [{"role": "user", "content": "#fault=429"}]})
    assert r.status_code == 429
    after = scrape()
    assert after[chat_ok] - before.get(chat_ok, 0) == 3
    assert after[ttft] - before.get(ttft, 0) == 3
    limited = ("lakehouse_upstream_errors_total", (("kind", "rate_limited"), ("provider", "kimi")))
    assert after[limited] - before.get(limited, 0) == 1
    tokens_in = ("lakehouse_tokens_total", (("direction", "in"), ("model", "kimi/console-model"), ("provider", "kimi")))
    assert after[tokens_in] > before.get(tokens_in, 0)
    route = ("lakehouse_http_requests_total", (("method", "POST"), ("route", "/v1/chat/completions"), ("status", "200")))
    assert after[route] - before.get(route, 0) == 3
    # Store gauges and the embedding cache.
    assert after[("lakehouse_store_corpus_rows", (("corpus", "metricsdocs"),))] == 3
    assert after[("lakehouse_store_corpus_vectors", (("corpus", "metricsdocs"),))] == 3
    assert after[("lakehouse_embedder_cache_requests_total", (("result", "miss"),))] >= 3
    assert any(name == "lakehouse_embedder_cache_requests_total" for name, _ in after)
