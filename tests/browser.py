"""Open a report the CLI wrote in headless Chromium (Debian's package, through Playwright) and check that it works:
no JavaScript error, every plotly figure written has rendered, every circuitsvis view has mounted. Screenshots of
the page and of each figure go to ``out/test-artifacts/<name>/``.

Run on any report: ``python tests/browser.py out/demo/report.html docs/demo.png`` (checks it and saves the
screenshot of the page's first screen)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ARTIFACTS = Path(os.environ.get("REASONLENS_TEST_ARTIFACTS", Path(__file__).parent.parent / "out" / "test-artifacts"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def find_chromium() -> tuple[str | None, str]:
    """The Chromium executable, installing Debian's ``chromium`` package when it is missing and this runs as root
    with apt; otherwise None and why."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found, ""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "Chromium is not installed and cannot be installed here (needs root and apt-get): apt-get " \
                     "install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(command, check=True, capture_output=True, timeout=900, env=env)
    except (subprocess.SubprocessError, OSError) as err:
        detail = getattr(err, "stderr", b"") or b""
        return None, f"installing Debian's chromium package failed: {err} {detail.decode(errors='replace')[-300:]}"
    found = shutil.which("chromium")
    return (found, "") if found else (None, "apt-get installed chromium but no chromium executable is on PATH")


def written_figures(html: str) -> int:
    """The number of plotly figures a report wrote: its ``div.rl-figure`` wrappers (checked against the page's
    ``reasonlens:figures`` meta tag)."""
    wrappers = html.count("<div class='rl-figure'>")
    meta = re.search(r"<meta name='reasonlens:figures' content='(\d+)'>", html)
    assert meta is not None, "the report has no reasonlens:figures meta tag"
    assert int(meta.group(1)) == wrappers, f"the meta tag counts {meta.group(1)} figures, the page holds {wrappers}"
    return wrappers


def check_report(chromium: str, report: Path, name: str, *, timeout_s: float = 60) -> dict[str, int]:
    """Open ``report`` and check it (see the module docstring); returns ``{"figures", "views"}`` found."""
    from playwright.sync_api import sync_playwright

    html = Path(report).read_text(encoding="utf-8")
    figures = written_figures(html)
    views = len(re.findall(r'<div id="circuits-vis-', html))
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            page.on("console", lambda message: errors.append(f"console: {message.text}")
                    if message.type == "error" else None)
            page.goto(Path(report).resolve().as_uri(), wait_until="load")
            state = """() => ({
                figures: document.querySelectorAll('div.rl-figure').length,
                rendered: Array.from(document.querySelectorAll('div.rl-figure'))
                    .filter(d => d.querySelector('.js-plotly-plot .main-svg')).length,
                views: document.querySelectorAll('div[id^="circuits-vis-"]').length,
                mounted: Array.from(document.querySelectorAll('div[id^="circuits-vis-"]'))
                    .filter(d => d.querySelector('canvas, svg, img')).length})"""
            try:
                page.wait_for_function(f"(() => {{ const s = ({state})(); return s.rendered === s.figures && "
                                       "s.mounted === s.views; })", timeout=timeout_s * 1000)
            except Exception:  # reported below with the counts
                pass
            seen = page.evaluate(state)
            page.screenshot(path=str(folder / "page.png"), full_page=True)
            for i, element in enumerate(page.locator("div.rl-figure").all()):
                element.screenshot(path=str(folder / f"figure-{i}.png"))
            for i, element in enumerate(page.locator('div[id^="circuits-vis-"]').all()):
                element.screenshot(path=str(folder / f"attention-{i}.png"))
        finally:
            browser.close()
    assert not errors, f"{report}: JavaScript errors: {errors}"
    assert seen["figures"] == figures, f"{report}: {figures} figures written, {seen['figures']} in the page"
    assert seen["rendered"] == figures, f"{report}: {seen['rendered']} of {figures} plotly figures rendered"
    assert seen["views"] == views and seen["mounted"] == views, \
        f"{report}: {seen['mounted']} of {views} circuitsvis views mounted ({seen['views']} in the page)"
    return {"figures": figures, "views": views}


def first_screen(chromium: str, report: Path, png: Path, *, width: int = 1200, height: int = 1500) -> None:
    """Save the first ``width`` x ``height`` pixels of ``report`` as ``png`` (the README's picture)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(Path(report).resolve().as_uri(), wait_until="load")
            page.wait_for_function("() => Array.from(document.querySelectorAll('div.rl-figure'))"
                                   ".every(d => d.querySelector('.main-svg'))", timeout=60_000)
            page.screenshot(path=str(png))
        finally:
            browser.close()


if __name__ == "__main__":
    chromium, why = find_chromium()
    if chromium is None:
        sys.exit(why)
    found = check_report(chromium, Path(sys.argv[1]), Path(sys.argv[1]).parent.name)
    print(f"{sys.argv[1]}: {found['figures']} figures rendered, {found['views']} attention views mounted; "
          f"screenshots in {ARTIFACTS / Path(sys.argv[1]).parent.name}")
    if len(sys.argv) > 2:
        first_screen(chromium, Path(sys.argv[1]), Path(sys.argv[2]))
        print(f"wrote {sys.argv[2]}")
