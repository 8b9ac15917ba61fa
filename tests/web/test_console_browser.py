"""The console in a real browser (Debian's chromium through Playwright), end to end against the
whole app and its sandbox on a loopback port: one test per flow, axe-core on every page, and
keyboard-only search and upload.

Set ROLEFERRY_SCREENSHOTS to a folder to save a PNG of each page there (`make screenshots`)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from roleferry.api_client import KEY_FILE
from roleferry.db import Database
from roleferry.sandbox.world import World
from roleferry.users import service
from roleferry.webhooks.models import WebhookEvent
from tests.conftest import REQUIRE_SERVICES
from tests.support.live_server import LiveServer, live_server
from tests.support.waiting import wait_for

playwright_api = pytest.importorskip("playwright.sync_api")
Browser, Page = playwright_api.Browser, playwright_api.Page
expect = playwright_api.expect
# A busy 2-core machine (other builds at once) can take more than expect's default 5 s for
# a page's answer; a state that never comes still fails.
expect.set_options(timeout=15_000)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SHOTS = os.environ.get("ROLEFERRY_SCREENSHOTS")
WORLD = World(7)
T = TypeVar("T")
TARGET = next(
    c
    for c in WORLD.companies
    if WORLD.apollo_knows_company(c)
    and sum(1 for p in c.people if WORLD.apollo_knows(p) and "engineer" in p.title.lower()) >= 2
)


def in_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs a coroutine on a thread of its own: sync Playwright keeps an event loop running on
    this one, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


def _create(live: LiveServer, email: str, *, admin: bool) -> str:
    async def create() -> str:
        database = Database(live.runtime.settings.database_url)
        try:
            async with database.session() as session:
                return (await service.create_user(session, email, is_admin=admin)).key.raw
        finally:
            await database.dispose()

    return in_thread(create)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app on the embedded default, with a local admin whose key `serve` would have saved."""
    with live_server(
        tmp_path_factory.mktemp("console"),
        breaker_open_s=60,
        attempt_timeout_s=1.0,
        sequence_tick_s=0.2,
        stripe_rate_limit="1000/1",
    ) as live:
        admin_key = _create(live, "local@roleferry.localhost", admin=True)
        (live.runtime.settings.data_dir / KEY_FILE).write_text(admin_key + "\n")
        yield live


@pytest.fixture(scope="module")
def browser(server: LiveServer) -> Iterator[Any]:
    """After the server: its start-up runs asyncio, which a running sync Playwright forbids.
    Without chromium the tests skip, or fail under ROLEFERRY_REQUIRE_SERVICES=1 (CI)."""
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(server.reset).result()
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def sign_in_local(page: Any) -> None:
    page.goto("/")
    page.get_by_role("button", name="Sign in as the local user").click()
    expect(page.get_by_role("heading", name="Integrations")).to_be_visible()


def sign_in_key(page: Any, key: str, path: str = "/search") -> None:
    page.goto(f"/signin?next={path}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"**{path}")


def check_a11y(page: Any, name: str) -> None:
    """No serious or critical axe-core violation on the page as it stands; a screenshot too."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{name}: {bad}"
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def contacts_csv(first_company: int, rows: int) -> str:
    people = [(p, c.domain) for c in WORLD.companies[first_company:] for p in c.people][:rows]
    return "first_name,last_name,domain\n" + "".join(
        f"{p.first_name},{p.last_name},{domain}\n" for p, domain in people
    )


def upload(page: Any, rows: int, name: str = "contacts.csv") -> str:
    """Drops a CSV on the drop zone (as a drag and drop does) and starts the job."""
    body = contacts_csv(0, rows)
    page.goto("/jobs")
    transfer = page.evaluate_handle(
        """([name, text]) => { const dt = new DataTransfer();
             dt.items.add(new File([text], name, {type: "text/csv"})); return dt; }""",
        [name, body],
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#chosen")).to_have_text(f"Chosen: {name}")
    page.get_by_role("button", name="Start job").click()
    page.wait_for_url("**/jobs/*?started=1")
    expect(page.get_by_text("Job started, we'll notify you")).to_be_visible()
    return str(page.url.split("/jobs/")[1].split("?")[0])


def test_sign_in_as_the_local_user_and_sign_out(page: Any, server: LiveServer) -> None:
    """The embedded default offers the local user (not through a proxy); signing out ends the
    session."""
    proxied = httpx.get(f"{server.url}/signin", headers={"X-Forwarded-For": "203.0.113.9"})
    assert "Sign in as the local user" not in proxied.text, "a proxy makes everyone look local"
    page.goto("/jobs")
    expect(page).to_have_title("Sign in · RoleFerry")
    check_a11y(page, "signin")
    page.get_by_role("button", name="Sign in as the local user").click()
    page.wait_for_url("**/jobs")
    expect(page.get_by_text("local@roleferry.localhost")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.goto("/jobs")
    expect(page).to_have_title("Sign in · RoleFerry")


def test_search_by_keyboard_shows_the_indicator_then_people_and_attempts(
    page: Any, server: LiveServer
) -> None:
    """Keyboard only: the loading indicator shows at once, then people with source,
    confidence and verification, and the attempts behind them; "Enrich" on a person answers;
    "Draft" opens the draft form filled in with the person, and "Enrol" is offered."""
    server.control("apollo", latency_ms=700)
    sign_in_local(page)
    page.goto("/search")
    for _ in range(30):
        if page.evaluate("document.activeElement && document.activeElement.id") == "domain":
            break
        page.keyboard.press("Tab")
    page.keyboard.type(TARGET.domain)
    page.keyboard.press("Tab")
    page.keyboard.type("engineer")
    page.keyboard.press("Enter")
    expect(page.locator("#searching")).to_be_visible(timeout=2_000)
    expect(page.locator("#people tbody tr").first).to_be_visible()
    expect(page.locator("#searching")).to_be_hidden()
    assert page.locator("#people tbody tr").count() >= 2
    # Apollo is slow (700 ms): it is tried first, and hedging may let the next provider win.
    expect(page.locator("#attempts")).to_contain_text("apollo")
    expect(page.locator("#people")).to_contain_text(re.compile("apollo|clay|hunter"))
    page.locator("#people tbody tr").first.get_by_role("button", name=re.compile("^Enrich")).click()
    expect(page.locator("#enrich-1")).to_contain_text(re.compile(r"@|No email found"))
    check_a11y(page, "search")
    enrol = page.locator("#people").get_by_role("link", name=re.compile("^Enrol .* in a sequence"))
    expect(enrol.first).to_be_visible()
    first = page.locator("#people tbody tr").first
    first.get_by_role("link", name=re.compile("^Draft an email to")).click()
    page.wait_for_url("**/drafts?*")
    expect(page.get_by_label("Company domain")).to_have_value(TARGET.domain)
    assert page.get_by_label("Name").input_value(), "the person's name is filled in"


def test_upload_by_drop_and_watch_progress_reach_done(page: Any, server: LiveServer) -> None:
    """A dropped CSV starts a job; the page follows it over SSE to its end, with rows."""
    sign_in_local(page)
    job_id = upload(page, 5)
    expect(page.locator("#job-status")).to_have_text(
        re.compile("^(succeeded|partially succeeded)$"), timeout=30_000
    )
    expect(page.locator("#job-done")).to_have_text("5")
    assert page.get_by_role("button", name="Cancel job").count() == 0
    page.reload()
    assert page.locator("#rows tbody tr").count() == 5
    check_a11y(page, "job")
    page.goto("/jobs")
    expect(page.locator("#jobs")).to_contain_text(job_id)
    check_a11y(page, "jobs")
    csv = httpx.get(f"{server.url}/jobs/{job_id}/results.csv", cookies=_cookies(page))
    assert csv.status_code == 200
    assert csv.text.startswith("line,first_name")


def _cookies(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_upload_by_keyboard_and_cancel_the_job(page: Any, server: LiveServer) -> None:
    """Keyboard only to start a slow job, then Cancel: the page shows it cancelled."""
    for provider in ("apollo", "clay", "hunter"):
        server.control(provider, latency_ms=900)
    sign_in_local(page)
    page.goto("/jobs")
    body = contacts_csv(50, 40)
    page.locator("#file").focus()
    page.locator("#file").set_input_files(
        {"name": "slow.csv", "mimeType": "text/csv", "buffer": body.encode()}
    )
    page.keyboard.press("Tab")  # verify_patterns
    page.keyboard.press("Tab")  # Start job
    page.keyboard.press("Enter")
    page.wait_for_url("**/jobs/*?started=1")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=10_000)


def test_open_a_notification_from_the_bell(page: Any, server: LiveServer) -> None:
    """A finished job rings the bell; opening the notification leads to the job, read."""
    key = _create(server, f"bell{time.monotonic_ns()}@example.com", admin=False)
    job = httpx.post(
        f"{server.url}/api/v1/enrichment-jobs",
        json={"contacts": [{"first_name": "Ada", "last_name": "Lovelace", "domain": "acme.com"}]},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    auth = {"Authorization": f"Bearer {key}"}
    wait_for(
        lambda: (
            httpx.get(f"{server.url}/api/v1/notifications/unread-count", headers=auth).json()[
                "unread"
            ]
            == 1
        )
    )
    sign_in_key(page, key, "/search")
    expect(page.locator("#bell [data-testid=unread]")).to_have_text("1")
    page.locator("#bell").click()
    page.wait_for_url("**/notifications")
    check_a11y(page, "notifications")
    page.get_by_role("link", name=re.compile(job["id"])).click()
    page.wait_for_url(f"**/jobs/{job['id']}")
    expect(page.locator("#bell [data-testid=unread]")).to_have_count(0)


def test_a_fault_injected_on_the_page_opens_the_breaker_there(
    page: Any, server: LiveServer
) -> None:
    """Take Apollo down from the page; after failing searches its circuit shows open, live,
    and its chart has points."""
    sign_in_local(page)
    form = page.get_by_role("form", name="Faults of apollo")
    form.get_by_label("Down (503 to everything)").check()
    form.get_by_role("button", name="Apply").click()
    expect(form.locator(".fault-result")).to_have_text("Applied.")
    expect(page.get_by_test_id("faults-apollo")).to_contain_text("down=True")
    key = (server.runtime.settings.data_dir / KEY_FILE).read_text().strip()
    for n in range(8):
        httpx.post(
            f"{server.url}/api/v1/contacts/search",
            json={"domain": f"down{n}.example.com", "titles": ["VP"]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=15,
        )
    expect(page.get_by_test_id("circuit-apollo")).to_have_text("open", timeout=10_000)
    page.reload()
    expect(page.locator('.chart[data-provider="apollo"].has-data canvas')).to_be_visible()
    check_a11y(page, "integrations")


def test_filter_the_webhook_log_and_replay_a_failed_event(page: Any, server: LiveServer) -> None:
    """Filter by status and payload text, open the event, replay it: it is applied."""

    async def store() -> int:
        database = Database(server.runtime.settings.database_url)
        try:
            async with database.write_session() as session:
                events = [
                    WebhookEvent(
                        provider="stripe",
                        event_id=f"evt_console_{i}_{time.monotonic_ns()}",
                        type="customer.created",
                        payload={"data": {"object": {"id": f"cus_{i}", "note": f"needle{i}"}}},
                        occurred_at=time.time(),
                        status="failed" if i == 1 else "applied",
                        outcome="boom" if i == 1 else "ignored",
                    )
                    for i in range(3)
                ]
                session.add_all(events)
                await session.flush()
                return events[1].id
        finally:
            await database.dispose()

    failed_id = in_thread(store)
    sign_in_local(page)
    page.goto("/admin/webhooks")
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Payload contains").fill("needle1")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#counts")).to_contain_text("failed: 1")
    expect(page.locator("#events tbody tr")).to_have_count(1)
    check_a11y(page, "webhooks")
    page.get_by_role("link", name=str(failed_id), exact=True).click()
    page.wait_for_url(f"**/admin/webhooks/{failed_id}")
    expect(page.locator("pre.payload")).to_contain_text("needle1")
    check_a11y(page, "webhook")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_text("Queued to be applied again.")).to_be_visible()

    def applied() -> bool:
        page.reload()
        return page.locator("#event-status").inner_text() == "applied"

    wait_for(applied, 15)


def test_another_users_job_url_is_not_found(page: Any, server: LiveServer) -> None:
    """A job of the local admin, opened by another user, is "not found" (404)."""
    sign_in_local(page)
    job_id = upload(page, 1, "one.csv")
    other = _create(server, f"other{time.monotonic_ns()}@example.com", admin=False)
    page.context.clear_cookies()
    sign_in_key(page, other, "/search")
    answer = page.goto(f"/jobs/{job_id}")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()


def test_a_draft_streams_in_breaks_continues_and_is_edited(page: Any, server: LiveServer) -> None:
    """The text shows as it streams (seen while the model pauses); a broken stream leaves an
    incomplete draft that "Continue" finishes; the edit is saved."""
    server.control(
        "anthropic", stream_faults=[{"kind": "stall", "after_tokens": 6, "seconds": 2.0}]
    )
    sign_in_local(page)
    page.get_by_role("link", name="Drafts").click()
    expect(page.get_by_role("heading", name="Drafts", exact=True)).to_be_visible()
    expect(page.locator("#drafts")).to_contain_text("No drafts yet")
    check_a11y(page, "drafts")
    page.get_by_label("Name").fill("Jane Doe")
    page.get_by_label("Company", exact=True).fill("Acme")
    page.get_by_label("The role you want").fill("Product Manager")
    page.get_by_role("button", name="Write draft").click()
    expect(page.locator("#draft-state")).to_contain_text("Writing")
    expect(page.locator("#draft-stream")).not_to_be_empty()
    assert int(page.locator("#draft-stream").get_attribute("data-deltas") or 0) > 1
    expect(page.locator("#draft-status")).to_have_text("incomplete", timeout=20_000)
    partial = page.locator("#draft-partial").inner_text()
    assert partial, "the text so far is kept"
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#draft-status")).to_have_text("complete", timeout=20_000)
    assert page.locator("#draft-stream").inner_text(), "the continuation streamed in"
    page.get_by_label("Body").fill("Dear Jane, my own words.")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    page.goto(page.url.split("?")[0])
    draft_link = page.locator("#drafts tbody a").first
    draft_link.click()
    expect(page.get_by_label("Body")).to_have_value("Dear Jane, my own words.")
    check_a11y(page, "draft")


def test_a_sequence_is_created_enrolled_and_its_enrolment_followed(
    page: Any, server: LiveServer
) -> None:
    """Add a sender (paused from the page) and a sequence, enrol a contact typed in, resume
    the sender and watch the enrolment's timeline reach "sent" without reloading, then pause
    the enrolment."""
    sign_in_local(page)
    page.get_by_role("link", name="Sequences").click()
    page.get_by_label("From address").fill(f"me{time.monotonic_ns()}@rf-send-01.com")
    page.get_by_label("Seconds between sends").fill("0")
    page.get_by_label("Random extra (s)").fill("0")
    page.get_by_role("button", name="Add sender").click()
    expect(page.locator("#senders")).to_contain_text("rf-send-01.com")
    # Paused, the sender holds the first step back until it is resumed while the page is open.
    page.locator("#senders").get_by_role("button", name=re.compile("^Pause ")).click()
    expect(page.locator("#senders")).to_contain_text("paused by user")
    expect(page.locator("#sequence-form")).to_be_visible()  # open while there are none
    expect(page.locator("#role_2")).to_be_hidden()
    page.locator('input[name="kind_2"][value="ai_draft"]').check()
    expect(page.locator("#role_2")).to_be_visible()  # left empty: step 3 is not sent
    expect(page.locator("#subject_2")).to_be_hidden()
    check_a11y(page, "sequences")
    page.get_by_label("Name", exact=True).fill("intro")
    page.locator("#subject_0").fill("Hi {{first_name}}")
    page.locator("#body_0").fill("Hello")
    page.locator("#subject_1").fill("Again")
    page.locator("#body_1").fill("Hello again")
    page.get_by_label("Sat").check()
    page.get_by_label("Sun").check()
    page.get_by_label("From hour").fill("0")
    page.get_by_label("Until hour").fill("24")
    page.get_by_role("button", name="Create sequence").click()
    expect(page.get_by_role("heading", name="Sequence intro")).to_be_visible()
    expect(page.locator("#enrollment-rows")).to_contain_text("Nobody enrolled")
    page.get_by_label("Contacts as CSV").fill("email,first_name\nann@example.org,Ann\n")
    page.get_by_role("button", name="Enrol").click()
    expect(page.locator("#run")).to_contain_text("Enrolled 1 contact.")
    check_a11y(page, "sequence")
    page.get_by_role("link", name="ann@example.org").click()
    expect(page.locator("#timeline")).to_contain_text("scheduled")
    expect(page.locator("#steps")).to_contain_text("scheduled")
    key = (server.runtime.settings.data_dir / KEY_FILE).read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    senders = httpx.get(f"{server.url}/api/v1/senders", headers=auth).json()
    for sender in senders:
        httpx.post(f"{server.url}/api/v1/senders/{sender['id']}/resume", headers=auth)
    expect(page.locator("#steps")).to_contain_text("sent", timeout=20_000)
    expect(page.locator("#timeline")).to_contain_text("sent")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#enrollment-status")).to_have_text("paused")
    check_a11y(page, "enrollment")


def test_buy_credits_through_the_hosted_checkout(page: Any, server: LiveServer) -> None:
    """Buy a pack: Stripe's hosted page (the sandbox's), pay, back on Credits with the
    credits added and the purchase in the ledger."""
    sign_in_local(page)
    page.get_by_role("link", name="Credits").click()
    available = int(page.locator("#available").inner_text())
    check_a11y(page, "credits")
    page.get_by_role("button", name="Buy 100 credits (small)").click()
    page.wait_for_url("**/sandbox/stripe/pay/cs_*")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url("**/credits?checkout=cs_*")
    expect(page.locator("#checkout-outcome")).to_contain_text("Payment received: 100 credits")
    expect(page.locator("#available")).to_have_text(str(available + 100))
    expect(page.locator("#ledger")).to_contain_text("purchase")
