"""Screenshot of the web page with a real model's answer, for docs/img/page.png.

    .venv/bin/python scripts/page_screenshot.py                     # default model, the post below
    .venv/bin/python scripts/page_screenshot.py --model qwen2.5-coder-0.5b-instruct-q4 --out /tmp/page.png

Starts the app on a free loopback port, pastes --post into the page in headless Chromium (Debian's package,
driven by Playwright), waits for the analysis and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from mentalglm.llm.registry import DEFAULT_MODEL, open_backend
from mentalglm.serve import BackgroundServer, ServeSettings, create_app

# Written for this screenshot (not from any data set).
POST = "最近真的撑不下去了，每天都觉得自己是个累赘，大家没有我会过得更好。我已经想好怎么结束这一切了。"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--post", default=POST)
    ap.add_argument("--out", default="docs/img/page.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    backend, style = open_backend(args.model)
    app = create_app(backend, style, ServeSettings(request_timeout=900))
    with BackgroundServer(app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS, headless=True)
        # Tall enough for the whole page without scrolling, so the sticky disclaimer is shown where users see it.
        page = browser.new_page(viewport={"width": 1100, "height": 1700}, device_scale_factor=1)
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#post", args.post)
        page.click("#analyze")
        page.wait_for_selector(".result", timeout=900_000)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out)
        browser.close()
    backend.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
