"""Take the screenshot of the web app shown in the README (docs/img/web_app.png) with headless Chromium.

    fundus-vlp serve --model MODEL_DIR --port 7860 &
    python docs/img/web_app_screenshot.py --url http://127.0.0.1:7860/ --image retina.png --image other.png \
        --labels "normal,glaucoma,cataract,pathologic myopia" --out docs/img/web_app.png

Uploads the images, replaces the labels, presses Classify, waits for the probability table and saves a
full-page screenshot. Needs Playwright (a test dependency) and the system Chromium.
"""
from __future__ import annotations

import argparse
import shutil

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def wait_for(url: str, seconds: float = 300) -> None:
    """The server may still be loading the model."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url}: no answer after {seconds:.0f} s; is `fundus-vlp serve` running?")
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--image", action="append", required=True, help="image file to upload (repeatable)")
    parser.add_argument("--labels", required=True, help="comma-separated labels typed into the page")
    parser.add_argument("--multilabel", action="store_true")
    parser.add_argument("--out", default="docs/img/web_app.png")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    wait_for(args.url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(args.url)
        page.locator("#uploads input[type=file]").set_input_files(args.image)
        page.locator("#labels textarea").fill("\n".join(x.strip() for x in args.labels.split(",")))
        if args.multilabel:
            page.locator("#multilabel input").check()
        page.locator("#classify").click()
        page.locator("#probabilities td[data-label]").first.wait_for(timeout=300_000)
        page.wait_for_timeout(1500)  # let the chart and the gallery images finish loading
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
