"""The Dagster UI in a real (headless) Chromium: the lineage of the `adhoc` dataflow, from the AEP datasets to their
exports, as a person opens it. The screenshot is what the README shows (docs/lineage.png)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from ajo_exports_tests.servers.dagster_web import (  # noqa: F401 - dagster_web is a fixture
    ADHOC_DATASETS,
    FEEDBACK,
    REPO,
    DagsterWeb,
    dagster_web,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
ARTIFACTS = REPO / "test-artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "lineage.png"
TIMEOUT_MS = 60_000


def lineage_route(selection: str, expanded_groups: list[str]) -> str:
    """The global asset lineage (Dagster 1.13: /asset-groups~<selection>/), filtered and with groups expanded."""
    expanded = ",".join(f"global@global:{group}" for group in expanded_groups)
    return f"/asset-groups~{quote(selection, safe='')}/?expanded={quote(expanded, safe='')}"


@pytest.fixture
def page(tmp_path: Path, dagster_web: DagsterWeb) -> Iterator[object]:  # noqa: F811
    """A page of a fresh headless Chromium profile that may reach only the webserver on 127.0.0.1."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: install the test extra (pip install -e '.[test]')", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium`", pytrace=False)
    allowed = urlsplit(dagster_web.url).netloc
    outside: list[str] = []

    def guard(route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == allowed:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport=VIEWPORT, locale="en-US", timezone_id="UTC",
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", guard)
            yield context.new_page()
        finally:
            context.close()
    assert not outside, f"the UI tried to leave 127.0.0.1: {outside}"


def dismiss_dialogs(page) -> None:
    """Close a first-run/community dialog if one shows (nux is off in dagster.yaml, so normally none does)."""
    for name in ("Dismiss", "Close", "Skip", "Got it", "Not now"):
        button = page.get_by_role("dialog").get_by_role("button", name=name)
        if button.count() and button.first.is_visible():
            button.first.click()


def ensure_one_export(web: DagsterWeb) -> None:
    """The picture shows one delivered export: launch it (with its delivery check) unless a test already did."""
    key = ["export", "adhoc", FEEDBACK]
    asset = web.graphql(
        "query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset { "
        "assetMaterializations(limit: 1) { runId } } } }", {"key": {"path": key}}
    )["assetOrError"]
    if not asset.get("assetMaterializations"):
        web.assert_success(web.launch_run("export_adhoc", asset_keys=[key]))


def test_lineage_graph_of_the_adhoc_dataflow(page, dagster_web: DagsterWeb) -> None:  # noqa: F811
    ensure_one_export(dagster_web)
    route = lineage_route('+group:"export_adhoc"', ["aep_datasets", "export_adhoc"])
    page.goto(dagster_web.url + route)
    page.wait_for_load_state("domcontentloaded")
    dismiss_dialogs(page)
    page.get_by_text("Global asset lineage").first.wait_for(state="visible")

    # Both groups expanded: the dataset (source asset) nodes on the left, the export nodes on the right.
    for slug in ADHOC_DATASETS:
        named = page.locator(f'[data-tooltip="{slug}"]')
        named.first.wait_for(state="visible")
        page.locator(f'a[href="/assets/export/adhoc/{slug}?view=checks"]').wait_for(state="visible")
        assert named.count() == 2, f"expected the dataset node and the export node of {slug}, found {named.count()}"
    assert page.get_by_role("img", name="source_asset").count() == len(ADHOC_DATASETS)
    dismiss_dialogs(page)
    assert page.get_by_text("export_adhoc").first.is_visible() and page.get_by_text("aep_datasets").first.is_visible()
    # Nothing of the other dataflow: the selection is the adhoc group plus its upstream datasets.
    assert page.locator('a[href^="/assets/export/daily/"]').count() == 0
    page.wait_for_timeout(1500)  # let the graph finish its zoom-to-fit animation

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "lineage.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000, "the screenshot looks empty"
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, DOCS_SCREENSHOT)
    assert page.locator(f'[data-tooltip="{FEEDBACK}"]').first.is_visible()
