"""End to end in a real browser: ``fundus-vlp serve`` on a tiny saved model, driven by headless Chromium.

Uploads ``skimage.data.retina()`` with a file over the size limit and a file that is not an image, replaces
the label list, reads the probabilities the page shows and compares them with ``model.classify`` on the
same image, with and without knowledge descriptions. Skipped only when no Chromium can be found (``make
test`` installs the OS package when it runs as root with apt-get).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import free_port, make_image_dataset
from fundus_vlp.app.analysis import DEFAULT_LABELS
from fundus_vlp.cli.main import main
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.factory import create_model

LABELS = ["normal", "glaucoma", "drusen", "cataract"]  # not the defaults: the page must use what was typed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BOOT_TIMEOUT_S = 180  # a loaded 2-core machine needs a minute to import torch + gradio; an idle one ~10 s


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fundus-vlp serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"fundus-vlp serve did not answer on {url} within {BOOT_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served_model(tiny_overrides, tmp_path):
    """A tiny model with a caption decoder and an elite index, saved and served on a free port."""
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **{"decoder.enabled": True}).eval()
    model_dir = model.save_pretrained(tmp_path / "model")
    ds = make_image_dataset(tmp_path / "data", n_per_class=1, n_elite=4)
    assert main(["index", "--model", str(model_dir), "--elite", str(ds["elite_csv"]), "--image-root",
                 str(ds["root"]), "--thumbnail-size", "32"]) == 0
    port = free_port()
    log = tmp_path / "serve.log"
    server_tmp = tmp_path / "server_tmp"  # the server's temp folder: where its uploads land
    server_tmp.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(server_tmp))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fundus_vlp", "serve", "--model", str(model_dir), "--port",
                                 str(port), "--max-upload-mb", "2"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield model, f"http://127.0.0.1:{port}/", proc, log
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server we started (and only it), SIGKILL if it does not stop."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def chromium() -> str:
    """The system Chromium, checked before anything is built or served."""
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (`apt-get install chromium`; `make test` installs it when run as "
                    "root with apt-get): the web app's browser test cannot run")
    return path


def _narrow_window(page, image: Path, screenshot: Path) -> dict:
    """At 800 px wide, with the six default (long) labels: can every column of the table be scrolled into view,
    and are the gallery captions whole? Saves a screenshot for a person to look at."""
    page.set_viewport_size({"width": 800, "height": 1000})
    page.locator("#uploads input[type=file]").set_input_files([str(image)])
    page.locator("#uploads").get_by_text("retina").wait_for()
    page.locator("#labels textarea").fill("\n".join(DEFAULT_LABELS))
    page.locator("#classify").click()
    page.locator("#probabilities th", has_text="pathologic myopia").wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot), full_page=True)
    return page.evaluate("""() => {
        const box = document.querySelector('#probabilities-scroll');
        const heads = [...document.querySelectorAll('#probabilities th')];
        let reachable = 0;
        for (const th of heads.slice(2)) {
            box.scrollLeft = th.offsetLeft;  // scroll the box, not the page, to the column
            const r = th.getBoundingClientRect(), b = box.getBoundingClientRect();
            if (r.left >= b.left - 1 && r.right <= b.right + 1) reachable += 1;
        }
        const captions = [...document.querySelectorAll('#neighbours .caption-label')];
        return {columns: heads.length, box_right: box ? box.getBoundingClientRect().right : 1e9,
                overflow: box ? getComputedStyle(box).overflowX : '', reachable,
                gallery_captions: captions.length,
                cut_captions: captions.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent)};
    }""")


def test_upload_relabel_and_read_probabilities(chromium, served_model, tmp_path):
    from playwright import sync_api
    from skimage import data

    model, url, proc, log = served_model
    retina = tmp_path / "retina.png"
    Image.fromarray(data.retina()).save(retina)
    big = tmp_path / "big.png"  # incompressible noise: over the 2 MB limit given to serve
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1100, 1100, 3), np.uint8)).save(big)
    notes = tmp_path / "notes.png"
    notes.write_text("referral letter, not a picture")
    # the reference, computed while the server boots
    expected = {key: model.classify([retina], LABELS, domain_knowledge=kb).iloc[0]
                for key, kb in (("with knowledge", True), ("names only", False))}
    ids = model.generate(build_transform(model.cfg.preprocess)(load_image(retina))[None], num_beams=1)
    expected_caption = model.tokenizer.batch_decode(ids)[0].strip() or "(empty)"
    _wait_until_serving(proc, url, log)
    assert "http://127.0.0.1:" in log.read_text()  # local only by default

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            labels_box = page.locator("#labels textarea")
            assert labels_box.input_value().splitlines()[:2] == ["normal", "diabetic retinopathy"]  # the defaults
            page.locator("#uploads input[type=file]").set_input_files([str(retina), str(big), str(notes)])
            page.locator("#uploads").get_by_text("notes").wait_for()  # the name shows as "notes" + ".png"
            labels_box.fill(", ".join(LABELS))
            page.locator("#classify").click()
            page.locator("#probabilities td[data-label]").first.wait_for(timeout=120_000)
            cells = page.eval_on_selector_all(
                "#probabilities td[data-label]",
                "els => els.map(e => [e.dataset.image, e.dataset.prompts, e.dataset.label, e.textContent])")
            status = page.locator("#status").inner_text()
            caption = page.locator("#captions li").inner_text()
            neighbours = page.locator("#neighbour-captions li").all_inner_texts()
            uploaded = {"retina.png", "big.png", "notes.png"}
            left = [p for p in (tmp_path / "server_tmp").rglob("*") if p.name in uploaded]
            layout = _narrow_window(page, retina, tmp_path / "800px.png")
        finally:
            browser.close()
    _stop(proc)
    assert not list((tmp_path / "server_tmp").glob("fundus-vlp-uploads-*"))  # removed at exit
    assert left == []  # accepted and rejected uploads deleted after the analysis
    assert layout["columns"] == 2 + len(DEFAULT_LABELS)
    assert layout["box_right"] <= 800 and layout["overflow"] == "auto"  # the table box stays in the window ...
    assert layout["reachable"] == len(DEFAULT_LABELS)  # ... and scrolls to every label column
    assert layout["cut_captions"] == [] and layout["gallery_captions"] > 0

    shown = {(prompts, label): float(text) for image, prompts, label, text in cells}
    assert {image for image, *_ in cells} == {"retina.png"}
    assert sorted(shown) == sorted((key, label) for key in expected for label in LABELS)
    for (prompts, label), value in shown.items():
        assert value == pytest.approx(expected[prompts][label], abs=5e-4 + 1e-6), (prompts, label)
    assert "big.png was not analysed" in status and "over the upload limit of 2 MB" in status
    assert "notes.png was not analysed: not an image file" in status
    # an untrained decoder's caption does not rest on the image: shown, but marked as no finding
    assert caption.startswith(f"retina.png: caption (low confidence): {expected_caption} (the decoder writes")
    assert len(neighbours) == 3 and all(n.startswith("retina.png #") for n in neighbours)

