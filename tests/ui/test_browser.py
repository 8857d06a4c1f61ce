"""The dashboard's pages driven in a real headless Chromium (Debian's chromium + chromedriver).

Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver and never downloads a
driver. Each page visited is saved as a screenshot under tests/ui/screenshots/ (git-ignored),
and every test fails on any JavaScript console error (the browser log's SEVERE entries) or
an error box shown by the page. Without Chromium the tests skip, or fail under
METALAB_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import EXPERIMENT_ID, SIZES, Server

import metalab
from services import services_required

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
E = EXPERIMENT_ID


def _require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"{missing} not installed (apt-get install -y chromium chromium-driver)"
        if services_required():
            pytest.fail(f"{message} (METALAB_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """A headless Chromium driven through chromedriver, with the console log captured."""
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-gpu",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


class Page:
    """Visit pages of one dashboard, wait for their data, screenshot, check the console."""

    def __init__(self, driver: Any, server: Server) -> None:
        self.driver = driver
        self.server = server
        driver.get_log("browser")  # drop what earlier tests left

    def visit(self, path: str) -> None:
        self.driver.get(self.server.base + path)

    def wait(self, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def done(self, name: str) -> None:
        """Screenshot the page as ``name``.png; fail on console errors or an error box."""
        SCREENSHOTS.mkdir(exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        severe = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"JavaScript console errors on {name}: {severe}"
        shown = self.driver.execute_script(
            "return [...document.querySelectorAll('.error')].filter(e => !e.hidden)"
            ".map(e => e.textContent)"
        )
        assert not shown, f"{name} shows an error: {shown}"


@pytest.fixture
def page(driver: Any, server: Server) -> Page:
    return Page(driver, server)


def test_experiments_page_lists_counts(page: Page) -> None:
    page.visit("/")
    page.wait(lambda d: page.count("#experiments tbody tr") == 1)
    row = f"#experiments tr[data-experiment='{E}']"
    assert page.text(f"{row} td.total") == "12"
    assert page.text(f"{row} td.success") == "9"
    assert page.text(f"{row} td.failed") == "3"
    assert page.text(f"{row} td.metadata") == "author, notes"  # folded; opens to the JSON
    page.done("experiments")


def test_runs_table_shows_the_count_and_a_filter_narrows_it(page: Page) -> None:
    from selenium.webdriver.common.by import By

    page.visit(f"/experiment?experiment={E}")
    page.wait(lambda d: page.text("#run-count") == "12")
    assert page.count("#runs-table tbody tr") == 12
    assert page.text("#run-total") == "12"
    page.done("runs")
    where = page.driver.find_element(By.ID, "where")
    where.send_keys("n_samples>=1000")
    page.driver.find_element(By.ID, "apply").click()
    page.wait(lambda d: page.text("#run-count") == "6")
    assert page.count("#runs-table tbody tr") == 6
    assert "where=n_samples%3E%3D1000" in page.driver.current_url  # shareable view
    page.done("runs-filtered")
    where.clear()
    page.driver.find_element(By.CSS_SELECTOR, "input[name=status][value=failed]").click()
    page.driver.find_element(By.ID, "apply").click()
    page.wait(lambda d: page.text("#run-count") == "3")
    assert page.count("#runs-table tbody tr.status-failed") == 3
    assert "ValueError" in page.text("#runs-table tbody")
    page.done("runs-failed")


def test_run_page_shows_log_figure_series_and_arrays(page: Page, pi_store: Path) -> None:
    run = next(r for r in metalab.load_results(pi_store).successful)
    page.visit(f"/run/{run.run_id}")
    page.wait(lambda d: "estimating pi" in page.text("#log"))
    assert f"estimating pi with n={run.params['n_samples']}" in page.text("#log")
    loaded = "const i = document.querySelector('img.figure'); return i && i.naturalWidth;"
    page.wait(lambda d: d.execute_script(loaded))
    width = page.driver.execute_script("return document.querySelector('img.figure').naturalWidth")
    png = bytes(run.figure("samples"))
    assert width == int.from_bytes(png[16:20], "big")  # the stored PNG, decoded by the browser
    assert "shape=(100,)" in page.text("figure[data-artifact=inside] pre")
    page.wait(lambda d: page.count("#series .js-plotly-plot") == 1)
    steps = page.driver.execute_script(
        "return document.querySelector('#series .js-plotly-plot').data[0].x"
    )
    assert steps == [0, 1, 2, 3]
    assert page.text("#params") == f"n_samples {run.params['n_samples']}"
    page.done("run")


def test_failed_run_page_shows_error_and_traceback(page: Page, pi_store: Path) -> None:
    failed = metalab.load_results(pi_store).failed[0]
    page.visit(f"/run/{failed.run_id}")
    page.wait(lambda d: "unlucky" in page.text("#run-error"))
    assert "ValueError" in page.text("#run-error") and "Traceback" in page.text("#run-error")
    page.done("run-failed")


def test_plot_builder_draws_points_with_error_bars(page: Page, pi_store: Path) -> None:
    page.visit(f"/plot?experiment={E}&x=param_n_samples&y=pi_estimate&errorbar=sd")
    page.wait(lambda d: page.count("#plots .js-plotly-plot") == 1)
    page.wait(lambda d: page.count("#plots .scatterlayer .point") == len(SIZES))
    assert page.count("#plots .errorbar") == len(SIZES)
    drawn = page.driver.execute_script(
        "const t = document.querySelector('#plots .js-plotly-plot').data[0];"
        "return {x: t.x, y: t.y, err: t.error_y.array, visible: t.error_y.visible}"
    )
    frame = metalab.load_results(pi_store).successful.to_dataframe()
    stats = frame.groupby("param_n_samples")["pi_estimate"].agg(["mean", "std"])
    assert drawn["x"] == SIZES and drawn["visible"] is True
    assert drawn["y"] == pytest.approx(stats["mean"].tolist())
    assert drawn["err"] == pytest.approx(stats["std"].tolist())
    assert "3 points from 9 successful runs" in page.text("#plot-info")
    assert "mean ± sd, n=3" in page.text("#plot-info")
    page.done("plot")


def test_compare_two_runs_from_the_table_highlights_differences(page: Page) -> None:
    from selenium.webdriver.common.by import By

    page.visit(f"/experiment?experiment={E}&sort=param_n_samples")
    page.wait(lambda d: page.text("#run-count") == "12")
    picks = page.driver.find_elements(By.CSS_SELECTOR, "#runs-table input.pick")
    picks[0].click()  # n_samples=13, replicate 0
    picks[-1].click()  # n_samples=10000, replicate 2
    page.driver.find_element(By.ID, "compare").click()
    page.wait(lambda d: page.count("#compare-table tr.differs") > 0)
    assert page.count("#compare-table thead th") == 3
    differing = page.driver.execute_script(
        "return [...document.querySelectorAll('#compare-table tr.differs')]"
        ".map(r => r.dataset.field)"
    )
    assert {"params.n_samples", "record.status", "record.replicate"} <= set(differing)
    assert "record.experiment_id" not in differing
    page.done("compare")


def test_markup_in_params_and_logs_is_shown_as_text(driver: Any, tmp_path: Path) -> None:
    from dashboard_helpers import HOSTILE, hostile_experiment

    store = tmp_path / "hostile"
    [run] = metalab.run(hostile_experiment(), store=store, progress=False).result()
    with Server(store) as server:
        page = Page(driver, server)
        page.visit("/experiment?experiment=hostile:1")
        page.wait(lambda d: page.text("#run-count") == "1")
        assert HOSTILE in page.text("#runs-table tbody")
        assert page.count("#runs-table img") == 0
        page.visit(f"/run/{run.run_id}")
        page.wait(lambda d: "label is" in page.text("#log"))
        assert f"label is {HOSTILE}" in page.text("#log")
        assert page.count("main img") == 0  # no figure: nothing may have become an image
        assert driver.title != "pwned"
        page.done("hostile")


def test_token_once_in_the_url_lets_the_pages_call_the_api(driver: Any, pi_store: Path) -> None:
    token = "browser-token-123"
    with Server(pi_store, token=token) as server:
        page = Page(driver, server)
        driver.delete_all_cookies()
        page.visit("/")
        assert "missing or wrong token" in driver.page_source  # no page without it
        driver.get_log("browser")  # the refused page load's 401 is expected here
        page.visit(f"/?token={token}")
        page.wait(lambda d: page.count("#experiments tbody tr") == 1)  # fetches used the cookie
        page.visit(f"/experiment?experiment={E}")
        page.wait(lambda d: page.text("#run-count") == "12")
        page.done("token")
        driver.delete_all_cookies()
