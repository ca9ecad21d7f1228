"""The contouring page at / in a real browser: `samfast serve` (the real LiteMedSAM) on loopback,
Debian's headless Chromium with networking off but for 127.0.0.1 (tests/test_serve_docs_offline.py),
driven as a person would: key, open a DICOM series by path, box on a slice, one correcting click,
propagate, undo, redo, export the RTSTRUCT. The download must pass dciodvfy and plastimatch must
rasterise it back to exactly the server's mask; a screenshot must show the overlay inside the box;
bad input must show the server's one line and leave the page working; no request may leave 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import io
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import TUMOUR_CORE
from dicom_fixtures import build_series, dciodvfy_errors, plastimatch_masks, tumour_crop
from serve_fixtures import serve_process
from test_serve_docs_offline import _away, _browser, _requests, needs_chromium

from samfast.eval.metrics import bounding_box, dice

KEY = "page-key-0123456789abcdef"
H = {"X-API-Key": KEY}
SLICES, SIZE = 8, 112
ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"  # runs/ is gitignored


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("page").resolve()
    data = base / "data"
    image, label = tumour_crop("BraTS20_Demo_002", slices=SLICES, size=SIZE)
    series = build_series(image, data / "series")
    (data / "junk.nii.gz").write_bytes(b"not a volume at all")
    core = np.isin(sitk.GetArrayFromImage(label), TUMOUR_CORE)
    options = ["--allow-root", str(data), "--backend", "onnxruntime", "--prefetch", "2"]
    with serve_process(base, KEY, *options) as server:
        yield {"url": server["url"], "base": base, "data": data, "series": series, "core": core}


def test_page_and_its_files_are_served_without_the_key_and_the_image_route_with_it(served):
    url = served["url"]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "https://" not in page.text and "http://" not in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        reply = httpx.get(f"{url}/page/{name}")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind)
        assert "https://" not in reply.text and "http://" not in reply.text  # no CDN, nothing remote
    assert "localStorage" not in httpx.get(f"{url}/page/app.js").text  # the key: sessionStorage only
    assert httpx.get(f"{url}/page/index.html").status_code == 401  # only the listed files are open
    sid = httpx.post(f"{url}/sessions", json={"path": str(served["series"])}, headers=H).json()["session"]
    info = httpx.get(f"{url}/sessions/{sid}", headers=H).json()
    assert info["description"] == str(pydicom.dcmread(next(served["series"].iterdir())).SeriesDescription)
    volume = sitk.GetArrayFromImage(
        sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(served["series"])))
    )
    for plane, axis in (("axial", 0), ("coronal", 1), ("sagittal", 2)):
        reply = httpx.get(
            f"{url}/sessions/{sid}/image", params={"plane": plane, "index": 5}, headers=H
        ).json()
        dtype = "<i2" if reply["dtype"] == "int16" else "<f4"
        values = np.frombuffer(base64.b64decode(reply["data"]), dtype).reshape(reply["shape"])
        assert np.array_equal(values, np.take(volume, 5, axis=axis).astype(values.dtype))
    outside = httpx.get(f"{url}/sessions/{sid}/image", params={"index": SLICES}, headers=H)
    assert (
        outside.status_code == 400
        and outside.json()["detail"] == f"axial index {SLICES} is out of range (0 to {SLICES - 1})"
    )
    assert httpx.get(f"{url}/sessions/{sid}/image", params={"index": 0}).status_code == 401
    httpx.delete(f"{url}/sessions/{sid}", headers=H)


def _volume_bits(payload: dict) -> np.ndarray:
    mask = np.zeros(payload["shape"], bool)
    if payload["data"]:
        size = int(np.prod(payload["box_shape"]))
        bits = np.unpackbits(np.frombuffer(gzip.decompress(base64.b64decode(payload["data"])), np.uint8))
        z, y, x = payload["offset"]
        dz, dy, dx = payload["box_shape"]
        mask[z : z + dz, y : y + dy, x : x + dx] = bits[:size].reshape(dz, dy, dx).astype(bool)
    return mask


class Page:
    """The page in the browser, driven through its controls, the mouse and the keyboard."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url, self.By, self.Actions = driver, url, By, ActionChains
        self.wait = WebDriverWait(driver, 120)

    def find(self, element_id: str):
        return self.driver.find_element(self.By.ID, element_id)

    def text(self, element_id: str) -> str:
        return self.find(element_id).text

    def type_into(self, element_id: str, text: str) -> None:
        field = self.find(element_id)
        field.clear()
        field.send_keys(text)

    def error_after(self, action) -> str:
        """Clear the error line, act, and return the line the page shows (waits for it)."""
        self.driver.execute_script("document.getElementById('error').textContent = ''")
        action()
        self.wait.until(lambda d: self.text("error"))
        return self.text("error")

    def open(self, path: str) -> None:
        self.type_into("path", path)
        self.driver.execute_script("document.getElementById('info').textContent = ''")
        self.find("open").click()
        self.wait.until(lambda d: "session" in self.text("info") or self.text("error"))
        assert not self.text("error"), self.text("error")
        self.wait.until(lambda d: d.execute_script("return !!(axialLayer && state.images.size)"))

    def screen(self, x: float, y: float) -> tuple[float, float]:
        """Canvas pixel of voxel centre (x, y) on the axial view."""
        g = self.driver.execute_script("return axialGeometry()")
        return g["ox"] + (x + 0.5) * g["px"], g["oy"] + (y + 0.5) * g["py"]

    def _offset(self, x: float, y: float) -> tuple[int, int]:  # Selenium: offsets from the centre
        canvas = self.find("axial")
        width, height = canvas.size["width"], canvas.size["height"]
        px, py = self.screen(x, y)
        return round(px - width / 2), round(py - height / 2)

    def timings(self) -> list[dict]:
        return self.driver.execute_script("return window.samfastTimings")

    def drag_box(self, box) -> None:
        count = len(self.timings())
        start, end = self._offset(box[0], box[1]), self._offset(box[2], box[3])
        canvas = self.find("axial")
        (
            self.Actions(self.driver).move_to_element_with_offset(canvas, *start).click_and_hold()
            .move_by_offset(end[0] - start[0], end[1] - start[1]).release().perform()
        )  # fmt: skip
        self.wait.until(lambda d: len(self.timings()) > count or self.text("error"))

    def click(self, x: float, y: float, background: bool = False) -> None:
        from selenium.webdriver.common.keys import Keys

        count = len(self.timings())
        chain = self.Actions(self.driver).move_to_element_with_offset(self.find("axial"), *self._offset(x, y))
        if background:
            chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
        else:
            chain = chain.click()
        chain.perform()
        self.wait.until(lambda d: len(self.timings()) > count or self.text("error"))

    def keys(self, *keys) -> None:
        self.Actions(self.driver).send_keys(*keys).perform()

    def chord(self, key: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self.Actions(self.driver).key_down(Keys.CONTROL).send_keys(key).key_up(Keys.CONTROL).perform()

    def page_mask(self) -> np.ndarray:
        flat = self.driver.execute_script("return Array.from(state.mask)")
        x, y, z = self.driver.execute_script("return state.dims")
        return np.array(flat, bool).reshape(z, y, x)


def _server_mask(url: str, sid: str) -> np.ndarray:
    return _volume_bits(httpx.get(f"{url}/sessions/{sid}/mask/bits", headers=H, timeout=60).json())


def _percentiles(values: list[float]) -> str:
    return f"p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms (n={len(values)})"


@needs_chromium
def test_contouring_in_headless_chromium_box_click_propagate_undo_redo_export(served, tmp_path):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.keys import Keys

    url, core, series = served["url"], served["core"], served["series"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        driver = _browser()
    except WebDriverException as error:
        pytest.skip(f"Chromium cannot start here: {str(error).splitlines()[0]}")
    seen: list[str] = []
    try:
        driver.set_window_size(1400, 1000)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        page = Page(driver, url)
        driver.get(f"{url}/")
        assert driver.title == "samfast contouring"

        # A wrong key: the server's line, as it says it.
        wrong = httpx.get(f"{url}/health", headers={"X-API-Key": "wrong"}).json()["detail"]
        page.type_into("key", "wrong")
        assert page.error_after(lambda: page.find("key-save").click()) == wrong
        page.type_into("key", KEY)
        page.find("key-save").click()
        page.wait.until(lambda d: "Connected" in page.text("info"))
        assert not page.text("error")
        assert driver.execute_script("return sessionStorage.getItem('samfast-api-key')") == KEY
        assert KEY not in driver.current_url

        # Unreadable files: a missing one and one that is not a volume; the server's line each time.
        for path in (served["data"] / "missing.nii.gz", served["data"] / "junk.nii.gz"):
            expected = httpx.post(f"{url}/sessions", json={"path": str(path)}, headers=H).json()["detail"]
            page.type_into("path", str(path))
            assert page.error_after(lambda: page.find("open").click()) == expected

        page.open(str(series))
        info = page.text("info")
        description = str(pydicom.dcmread(next(series.iterdir())).SeriesDescription)
        assert description in info and f"{SIZE}×{SIZE}×{SLICES}" in info
        sid = driver.execute_script("return state.info.session")
        z = driver.execute_script("return state.z")
        assert z == SLICES // 2 and page.text("slice-label") == f"{z + 1} / {SLICES}"

        # Box on the slice (the tumour core's box, 3 voxels wider), then one correcting click.
        x0, y0, x1, y1 = (int(v) for v in bounding_box(core[z]))
        box = [max(x0 - 3, 0), max(y0 - 3, 0), min(x1 + 3, SIZE - 1), min(y1 + 3, SIZE - 1)]
        page.drag_box(box)
        assert not page.text("error"), page.text("error")
        prompt = driver.execute_script("return state.prompts[state.z]")
        assert prompt["box"] == box, prompt  # the drag landed on the voxels meant
        ys, xs = np.nonzero(core[z])
        inside = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))  # a core voxel near its middle
        page.keys("c")
        page.click(int(xs[inside]), int(ys[inside]))
        assert not page.text("error"), page.text("error")
        one_slice = _server_mask(url, sid)
        assert one_slice[z].any() and not np.delete(one_slice, z, axis=0).any()
        assert np.array_equal(page.page_mask(), one_slice)

        # Propagate (G): slices stream in, the progress bar fills, the IoU table lists them.
        page.keys("g")
        page.wait.until(lambda d: page.text("walk-status").startswith(("complete", "error", "cancelled")))
        assert page.text("walk-status").startswith("complete"), page.text("walk-status") + page.text("error")
        propagated = _server_mask(url, sid)
        walked = [z for z in range(SLICES) if propagated[z].any()]
        assert len(walked) > 1 and np.array_equal(page.page_mask(), propagated)
        rows = driver.find_elements(page.By.CSS_SELECTOR, "#slices tbody tr")
        assert len(rows) >= len(walked)
        assert "stops:" in page.text("stops")
        progress = driver.execute_script(
            "const p = document.getElementById('progress'); return [p.value, p.max]"
        )
        assert progress[0] == progress[1] > 1

        # Undo once (Ctrl+Z): back to the one slice; redo (Ctrl+Y): the propagation again.
        page.chord("z")
        page.wait.until(lambda d: page.text("walk-status").startswith("undo"))
        assert np.array_equal(_server_mask(url, sid), one_slice)
        assert np.array_equal(page.page_mask(), one_slice)
        page.chord("y")
        page.wait.until(lambda d: page.text("walk-status").startswith("redo"))
        held = _server_mask(url, sid)
        assert np.array_equal(held, propagated) and np.array_equal(page.page_mask(), held)

        # Export the RTSTRUCT: downloaded by the browser.
        page.type_into("roi-name", "GTV_page")
        page.find("export-rt").click()
        deadline = time.monotonic() + 60
        while not list(downloads.glob("*.dcm")) and time.monotonic() < deadline:
            time.sleep(0.2)
        files = list(downloads.glob("*.dcm"))
        assert len(files) == 1, (list(downloads.iterdir()), page.text("error"))
        rtstruct = files[0]
        assert rtstruct.name == "RS_GTV_page.dcm" and pydicom.dcmread(rtstruct).Modality == "RTSTRUCT"

        # The screenshot: the overlay inside the box, nothing mask-coloured far outside it.
        driver.execute_script("return showSlice(arguments[0])", z)
        shot = page.find("axial").screenshot_as_png
        full = tmp_path / "page.png"
        driver.save_screenshot(str(full))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(full, ARTIFACTS / "page.png")
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
        # the mask's red over grey: red well above green and blue (boxes are yellow, the crosshair cyan)
        red = (pixels[..., 0] - pixels[..., 1] > 60) & (pixels[..., 0] - pixels[..., 2] > 60)
        scale = pixels.shape[1] / page.find("axial").size["width"]  # device pixels per CSS pixel
        (ax, ay), (bx, by) = page.screen(box[0], box[1]), page.screen(box[2], box[3])
        ax, ay, bx, by = (int(v * scale) for v in (ax, ay, bx, by))
        assert (
            red[ay:by, ax:bx].sum() > 0.3 * held[z].sum() * (page.screen(1, 0)[0] - page.screen(0, 0)[0]) ** 2
        )
        margin = int(40 * scale)  # 8 voxels at 5 CSS pixels a voxel
        far = red.copy()
        far[max(ay - margin, 0) : by + margin, max(ax - margin, 0) : bx + margin] = False
        assert not far.any(), f"{far.sum()} mask-coloured pixels far outside the box"

        # A prompt outside the image, then a closed session: the server's line, and the page goes on.
        page.keys("-", "-", "-")  # zoomed out: black margin round the image
        expected_outside = httpx.post(
            f"{url}/sessions/{sid}/prompt", json={"slice": z, "points": [[-20, 5, 1]]}, headers=H
        ).json()["detail"]
        driver.execute_script("state.prompts = {}")  # the click alone is sent: the same body as above
        count = len(page.timings())
        g = driver.execute_script("return axialGeometry()")
        assert g["ox"] > 20 * g["px"]
        assert page.error_after(lambda: page.click(-20, 5)) == expected_outside
        assert len(page.timings()) == count
        page.keys("0")
        httpx.delete(f"{url}/sessions/{sid}", headers=H)
        closed = httpx.post(f"{url}/sessions/{sid}/undo", headers=H).json()["detail"]
        assert page.error_after(lambda: page.keys("u")) == closed
        page.open(str(series))
        assert driver.execute_script("return state.info.session") != sid

        # Timings on an encoded slice, once prefetch is done (a click that lands while prefetch runs
        # an encoder call waits for it: the samples above show that), then the first box on a
        # slice prefetched meanwhile.
        sid = driver.execute_script("return state.info.session")
        before = len(page.timings())
        page.keys("b")
        page.drag_box(box)  # encodes the slice
        deadline = time.monotonic() + 90
        while httpx.get(f"{url}/sessions/{sid}", headers=H).json()["cached_slices"] < 5:  # z and z ± 2
            assert time.monotonic() < deadline, "prefetch did not encode the neighbours"
            time.sleep(0.2)
        for k in range(10):
            page.drag_box([box[0] + k % 3, box[1] + k % 2, box[2] - k % 3, box[3] - k % 2])
        page.keys("c")
        for k in range(10):
            page.click(int(xs[(7 * k) % len(xs)]), int(ys[(7 * k) % len(ys)]), background=False)
        assert not page.text("error"), page.text("error")
        page.keys("b", Keys.ARROW_DOWN)
        page.wait.until(lambda d: d.execute_script("return state.z") == z + 1)
        page.drag_box(box)
        timings = page.timings()
        assert timings[-1]["kind"] == "prompt"  # cached: prefetched while the page was idle
        encoded = [t["ms"] for t in timings[before:-1] if t["kind"] == "prompt"]
        served_ms = [t["server_ms"] for t in timings[before:-1] if t["kind"] == "prompt"]
        earlier = [round(t["ms"]) for t in timings[:before] if t["kind"].startswith("prompt")]
        print(
            f"\nclick -> overlay drawn on an encoded slice: {_percentiles(encoded)}; the server's part: "
            f"{_percentiles(served_ms)}; first box on a prefetched slice {timings[-1]['ms']:.1f} ms; "
            f"first box on a new slice (encoder) "
            f"{[round(t['ms']) for t in timings if t['kind'] == 'prompt-encode']} ms; "
            f"the first session's prompts, prefetch running meanwhile: {earlier} ms"
        )
        seen += _requests(driver)
    finally:
        driver.quit()

    # The RTSTRUCT is a valid IOD, and plastimatch draws exactly the server's mask from it.
    assert dciodvfy_errors(rtstruct) == []
    masks = plastimatch_masks(rtstruct, series, tmp_path / "plastimatch")
    assert list(masks) == ["GTV_page"]
    drawn = sitk.GetArrayFromImage(masks["GTV_page"]).astype(bool)
    assert dice(drawn, held) == 1.0 and np.array_equal(drawn, held)

    assert seen and any(u.endswith("/page/app.js") for u in seen)
    assert not _away(seen), f"requests that left 127.0.0.1: {_away(seen)}"
