"""The dashboard in a real headless Chromium, on a real ``meterline run`` with real traffic.

Events go through the gateway (two tenants, a realistic mix from the demo:
tokens, images, pages, charges, an unpriced model, retried duplicates). The test
logs in as a person would, reads the numbers off the page and compares them with
SQL over ``usage_events`` (the raw rows: an independent path from the meters the
dashboard reads), exercises the filters and the customer view, and saves
screenshots to test-artifacts/dashboard/.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.auth import hash_key
from meterline.demo import make_event
from tests.conftest import MeterlineFactory
from tests.dashboard.conftest import chromium_missing
from tests.support.stack import MeterlineProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or ""),
]

SECRET = "dashboard-test-portal-secret-0123456789abcdef"


def _send(stack: MeterlineProcess, key: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 100):
        reply = httpx.post(
            f"{stack.url}/v1/events",
            json=events[start : start + 100],
            headers={"content-type": "application/cloudevents-batch+json", "x-api-key": key},
            timeout=30,
        )
        assert reply.status_code == 202, reply.text


def _cells(driver: Any, panel: str, column: str) -> list[str]:
    # One script call reads the column at once: panels are swapped by htmx every 5 s,
    # and element-by-element reads could straddle a swap (stale or mixed rows).
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.getAttribute('data-value'))"
    )
    return list(driver.execute_script(script, f"#{panel} td[data-col='{column}']"))


def _submit(driver: Any, button: Any, expect_id: str) -> None:
    """Click a submit button and wait for the next page (the click returns before it loads)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    button.click()

    def left(_driver: Any) -> bool:
        """The page before the click is gone (``staleness_of``, plus chromedriver's other word)."""
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Asked about a node of the old document while the new one loads, chromedriver
            # may answer "unknown error: ... Node with given id does not belong to the
            # document" instead of a stale reference (seen once in CI): the same fact.
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    wait = WebDriverWait(driver, 30)
    wait.until(left)
    wait.until(ready.presence_of_element_located((By.ID, expect_id)))


def _text(driver: Any, css: str) -> str:
    script = "return document.querySelector(arguments[0]).textContent.trim()"
    return str(driver.execute_script(script, css))


def _value(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(
        "return document.getElementById(arguments[0]).getAttribute('data-value')", element_id
    ))  # fmt: skip


def _table(driver: Any, panel: str, key: str, value: str) -> dict[str, Decimal]:
    return dict(
        zip(_cells(driver, panel, key), map(Decimal, _cells(driver, panel, value)), strict=True)
    )


def _cents(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01'), ROUND_HALF_EVEN):,.2f}"


@pytest.fixture
def stack(meterline_factory: MeterlineFactory, tmp_path: Path) -> MeterlineProcess:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"{hash_key('key-a')}: tenant-a\n"
        f"{hash_key('key-b')}: tenant-b\n"
        f"{hash_key('key-a-ingest')}: {{tenant: tenant-a, scopes: [ingest]}}\n"
    )
    return meterline_factory(
        METERLINE_API_KEYS_FILE=str(keys),
        METERLINE_OPEN_MODE="false",
        METERLINE_PARTITIONS="2",
        METERLINE_PORTAL_TOKEN_SECRET=SECRET,
    )


def test_numbers_on_every_view_equal_sql_and_filters_narrow_them(
    stack: MeterlineProcess, browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rng = random.Random(16)
    a_events = [make_event(rng) for _ in range(400)]
    # Retried copies (same source and id): the page must count them once, like the SQL.
    a_events += a_events[:20]
    b_events = [make_event(rng) for _ in range(60)]
    _send(stack, "key-a", a_events)
    _send(stack, "key-b", b_events)
    stack.wait_stored(460)

    def sql(query: str) -> list[dict[str, Any]]:
        return stack.sql(query)

    def totals(group: str, where: str = "") -> dict[str, Decimal]:
        rows = sql(
            f"SELECT {group} AS k, toString(sum(price_usd)) AS p FROM usage_events "
            f"WHERE tenant = 'tenant-a' {where} GROUP BY k"
        )
        return {r["k"]: Decimal(r["p"]) for r in rows}

    # An API key without the read scope cannot open the dashboard.
    driver = browser
    driver.get(f"{stack.url}/ui")
    assert driver.current_url.endswith("/ui/login")
    driver.find_element(By.ID, "credential").send_keys("key-a-ingest")
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form button"), "login-error")
    assert "no read scope" in driver.find_element(By.ID, "login-error").text

    driver.find_element(By.ID, "credential").send_keys("key-a")
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form button"), "who")
    assert "tenant-a" in driver.find_element(By.ID, "who").text
    cookie = driver.get_cookie("meterline_ui")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "key-a" not in cookie["value"]  # the session names the viewer, not the key
    driver.save_screenshot(str(artifacts / "overview-laptop.png"))
    # The chart drew (uPlot ran under the page's Content-Security-Policy), and nothing
    # on the page was refused by it.
    assert driver.find_elements(By.CSS_SELECTOR, "#spend .chart canvas")
    refused = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not refused, refused

    # Top customers and the spend total: exact to the last digit, and rounded on screen.
    by_subject = totals("subject")
    assert _table(driver, "customers", "subject", "price_usd") == by_subject
    whole = sum(by_subject.values(), Decimal(0))
    assert Decimal(_value(driver, "spend-total")) == whole
    assert _text(driver, "#spend-total") == _cents(whole)
    events = {r["k"]: int(r["n"]) for r in sql(
        "SELECT subject AS k, count() AS n FROM usage_events WHERE tenant = 'tenant-a' GROUP BY k"
    )}  # fmt: skip
    assert _table(driver, "customers", "subject", "events") == events
    assert sum(events.values()) == 400  # the 20 retried copies were counted once

    # By feature, and cost vs price per customer and model.
    assert _table(driver, "features", "feature", "price_usd") == totals("feature")
    margin_rows = sql(
        "SELECT subject, model, toString(sum(cost_usd)) AS c, toString(sum(price_usd)) AS p "
        "FROM usage_events WHERE tenant = 'tenant-a' GROUP BY subject, model"
    )
    subjects, models = _cells(driver, "margin", "subject"), _cells(driver, "margin", "model")
    costs = map(Decimal, _cells(driver, "margin", "cost_usd"))
    prices = map(Decimal, _cells(driver, "margin", "price_usd"))
    assert {(s, m): (c, p) for s, m, c, p in zip(subjects, models, costs, prices, strict=True)} == {
        (r["subject"], r["model"]): (Decimal(r["c"]), Decimal(r["p"])) for r in margin_rows
    }

    # Unpriced events: the self-hosted model has no price, and the page says how many.
    unpriced = sql(
        "SELECT model, count() AS n FROM usage_events WHERE tenant = 'tenant-a' AND priced = 0 "
        "GROUP BY model"
    )
    assert unpriced, "the demo mix always has unpriced events"
    assert _table(driver, "unpriced", "model", "unpriced_events") == {
        r["model"]: int(r["n"]) for r in unpriced
    }
    # Lag: the events just stored are counted in the last 15 minutes.
    assert int(_cells(driver, "lag", "events")[0]) == 400

    # Every panel shows the query behind its numbers.
    api = _text(driver, "#customers code.api")
    assert api.startswith("GET /v1/usage?") and "group_by=subject" in api
    via_api = httpx.get(f"{stack.url}{api.removeprefix('GET ')}", headers={"x-api-key": "key-a"})
    assert {r["subject"]: Decimal(r["price_usd"]) for r in via_api.json()["rows"]} == by_subject

    # Filter: one customer, one feature.
    subject = max(by_subject, key=lambda s: by_subject[s])
    form = driver.find_element(By.ID, "filters")
    form.find_element(By.NAME, "subject").send_keys(subject)
    form.find_element(By.NAME, "feature").send_keys("chat")
    Select(form.find_element(By.NAME, "stack")).select_by_visible_text("provider")
    Select(form.find_element(By.NAME, "window")).select_by_visible_text("hour")
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"), "filters")
    where = f"AND subject = '{subject}' AND feature = 'chat'"
    assert _cells(driver, "customers", "subject") == [subject]
    assert _table(driver, "spend", "provider", "price_usd") == totals("provider", where)
    assert Decimal(_value(driver, "spend-total")) == sum(
        totals("subject", where).values(), Decimal(0)
    )
    driver.save_screenshot(str(artifacts / "filtered-customer-feature.png"))

    # A phone: one column, nothing wider than the screen but the tables' own scroll boxes.
    driver.set_window_size(390, 844)
    driver.get(f"{stack.url}/ui")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390
    driver.save_screenshot(str(artifacts / "overview-phone.png"))


def test_a_portal_token_login_shows_one_customer_only(
    stack: MeterlineProcess, browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By

    rng = random.Random(17)
    events = [make_event(rng) for _ in range(200)]
    _send(stack, "key-a", events)
    stack.wait_stored(200)
    subject = "globex"
    minted = httpx.post(
        f"{stack.url}/v1/portal/tokens",
        json={"subject": subject},
        headers={"x-api-key": "key-a"},
        timeout=10,
    )
    assert minted.status_code == 201, minted.text
    driver = browser
    driver.get(f"{stack.url}/ui/login")
    driver.find_element(By.ID, "credential").send_keys(minted.json()["token"])
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form button"), "who")
    assert f"customer {subject}" in driver.find_element(By.ID, "who").text
    assert _cells(driver, "customers", "subject") == [subject]
    assert set(_cells(driver, "margin", "subject")) == {subject}
    price = stack.sql(
        "SELECT toString(sum(price_usd)) AS p FROM usage_events "
        f"WHERE tenant = 'tenant-a' AND subject = '{subject}'"
    )[0]["p"]
    assert Decimal(_value(driver, "spend-total")) == Decimal(price)
    # No customer field to change, and a crafted URL for another customer is refused.
    assert not driver.find_elements(By.CSS_SELECTOR, "#filters input[name=subject]")
    driver.get(f"{stack.url}/ui?subject=acme")
    assert "only its own subject" in driver.page_source
    driver.get(f"{stack.url}/ui")
    driver.save_screenshot(str(artifacts / "customer-view.png"))

    # Revoking the token ends the session.
    revoked = httpx.post(
        f"{stack.url}/v1/portal/tokens/revoke",
        json={"id": minted.json()["id"]},
        headers={"x-api-key": "key-a"},
        timeout=10,
    )
    assert revoked.status_code == 204
    driver.get(f"{stack.url}/ui")
    assert driver.current_url.endswith("/ui/login")


def test_budgets_alerts_and_invoices_views_show_what_the_api_stored(
    stack: MeterlineProcess, browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By

    rng = random.Random(18)
    today = datetime.now(UTC).date()
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    # Last month's events: within the 35-day dedupe horizon only near the month's end.
    late = datetime.combine(today.replace(day=1) - timedelta(days=1), datetime.min.time(), UTC)
    now_events = [{**make_event(rng), "subject": "acme"} for _ in range(60)]
    old_events = [
        {**make_event(rng), "time": (late + timedelta(hours=12)).isoformat().replace("+00:00", "Z")}
        for _ in range(60)
    ]
    _send(stack, "key-a", now_events + old_events)
    stack.wait_stored(120)
    api = httpx.Client(base_url=stack.url, headers={"x-api-key": "key-a"}, timeout=30)
    budget = api.post(
        "/v1/budgets",
        json={"subject": "acme", "period": "month", "amount": "0.000001", "thresholds": [50, 100]},
    )
    assert budget.status_code == 201, budget.text
    period = last_month.strftime("%Y-%m")
    closed = api.post("/v1/invoices/close", json={"period": period})
    assert closed.status_code in (200, 201), closed.text
    stack.wait_until(lambda: bool(api.get("/v1/alerts").json()["alerts"]), 60, "a budget alert")

    driver = browser
    driver.get(f"{stack.url}/ui/login")
    driver.find_element(By.ID, "credential").send_keys("key-a")
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form button"), "who")
    driver.get(f"{stack.url}/ui?from={last_month.isoformat()}")

    # The budget: what this month used (the meters), and its state.
    used = stack.sql(
        "SELECT toString(sum(price_usd)) AS p FROM usage_events WHERE tenant = 'tenant-a' "
        f"AND subject = 'acme' AND time >= toDateTime('{today.replace(day=1)}', 'UTC')"
    )[0]["p"]
    assert _cells(driver, "budgets", "id") == [budget.json()["id"]]
    assert Decimal(_cells(driver, "budgets", "used")[0]) == Decimal(used)
    assert _text(driver, "#budgets td[data-col='state']") == "over"
    # The alerts the alerter sent, as the API lists them.
    alerts = api.get("/v1/alerts").json()["alerts"]
    assert sorted(_cells(driver, "alerts", "threshold")) == sorted(
        str(a["threshold"]) for a in alerts
    )
    # Last month's invoices, as frozen: one per customer, the API's amounts.
    invoices = api.get("/v1/invoices", params={"period": period}).json()["invoices"]
    assert invoices
    assert _table(driver, "invoices", "subject", "amount") == {
        i["subject"]: Decimal(i["totals"][0]["amount"]) for i in invoices
    }
    driver.execute_script("document.getElementById('budgets').scrollIntoView()")
    driver.save_screenshot(str(artifacts / "budgets-alerts-invoices.png"))
