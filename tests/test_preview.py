"""The map preview (issue 13): `index.html` beside the outputs, served by `preview` with Range
requests, drawn by a real headless browser (Debian's chromium, driven by Playwright).

The browser tests skip only where no chromium is installed (`.ci/run` installs it with apt)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
#: Germany (a point inside it), and the attribute its feature carries
BERLIN = (10.0, 51.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from click.testing import CliRunner

    from cng_datasets.cli import cli
    from cng_datasets.preview.server import start

    root = tmp_path_factory.mktemp("preview")
    src = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"
    args = ["run", "-q", "--dataset", "countries", "--source-url", str(src), "--bucket", str(root)]
    result = CliRunner().invoke(cli, [*args, "--h3-resolution", "2"])
    assert result.exit_code == 0, result.output
    server, base = start(str(root))
    yield root, base
    server.shutdown()
    server.server_close()


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the connection
            return exc.code, dict(exc.headers), b""


def test_the_server_answers_range_requests(served: Any) -> None:
    root, base = served
    whole = (root / "countries.pmtiles").read_bytes()
    status, headers, body = _get(f"{base}/countries.pmtiles", Range="bytes=7-126")
    assert status == 206 and body == whole[7:127]
    assert headers["Content-Range"] == f"bytes 7-126/{len(whole)}"
    assert _get(f"{base}/countries.pmtiles", Range="bytes=-10")[2] == whole[-10:]
    assert _get(f"{base}/countries.pmtiles", Range=f"bytes={len(whole)}-")[0] == 416
    assert _get(f"{base}/countries.pmtiles")[2] == whole
    assert _get(f"{base}/../etc/passwd")[0] == 404 and _get(f"{base}/nothing.json")[0] == 404


def test_the_page_is_one_file_with_the_libraries_inlined(served: Any) -> None:
    root, base = served
    page = (root / "countries" / "index.html").read_text()
    assert "maplibregl" in page and "pmtiles.Protocol" in page and "../countries.pmtiles" in page
    assert "<script src=" not in page  # nothing fetched from the network


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_a_browser_draws_the_data_and_shows_a_clicked_feature(served: Any, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, base = served
    page_url = f"{base}/countries/index.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        )
        try:
            drawn = _open(browser, f"{page_url}?click={BERLIN[0]},{BERLIN[1]}", tmp_path / "map.png")
            empty = _open(browser, f"{page_url}?empty", tmp_path / "empty.png")
        finally:
            browser.close()
    assert drawn["errors"] == [] and empty["errors"] == []
    # the data's pixels: a world of polygons covers much of the map; the empty map is background
    assert drawn["covered"] > 0.2 and empty["covered"] < 0.001, (drawn["covered"], empty["covered"])
    assert '"name": "Germany"' in drawn["info"] and '"continent": "Europe"' in drawn["info"]


#: share of the map's pixels that are not the white background
_COVERED = """() => {
  const c = map.getCanvas(), t = document.createElement("canvas");
  t.width = c.width; t.height = c.height;
  const ctx = t.getContext("2d"); ctx.drawImage(c, 0, 0);
  const d = ctx.getImageData(0, 0, t.width, t.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) n++;
  return n / (d.length / 4);
}"""


def _open(browser: Any, url: str, shot: Path) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 900, "height": 600})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.title === 'ready'", timeout=60_000)
    page.screenshot(path=str(shot))
    result = {"covered": page.evaluate(_COVERED), "info": page.inner_text("#info"), "errors": errors}
    page.close()
    return result


def test_preview_without_a_page_is_one_line(tmp_path: Path, cli_run) -> None:
    done = cli_run("preview", tmp_path, "--dataset", "nothing", "--no-open", timeout=60)
    assert done.returncode == 65 and done.stderr.count("\n") == 1, done.stderr
    assert "no map page; write it with `cng-datasets catalog" in done.stderr


@pytest.mark.s3
def test_cors_rule_is_added_once_and_keeps_the_buckets_rules(s3: str) -> None:
    from cng_datasets import storage

    client = storage.s3_client()
    bucket = storage.parse(s3).bucket
    theirs = {"ID": "theirs", "AllowedMethods": ["PUT"], "AllowedOrigins": ["https://example.org"]}
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [theirs]})
    assert storage.allow_browser_reads(f"{s3}/prefix") is True
    assert storage.allow_browser_reads(f"{s3}/prefix") is False  # a second run changes nothing
    rules = {r["ID"]: r for r in client.get_bucket_cors(Bucket=bucket)["CORSRules"]}
    assert set(rules) == {"theirs", "cng-datasets-read-ranges"}
    ours = rules["cng-datasets-read-ranges"]
    assert ours["AllowedMethods"] == ["GET", "HEAD"] and "Range" in ours["AllowedHeaders"]
    # (moto's server answers the preflight OPTIONS of a browser with 403 whatever the rules, so the
    # rule itself is what is checked here)


def test_cors_needs_an_s3_destination(tmp_path: Path, cli_run) -> None:
    src = DATA / "earthquakes.json"
    done = cli_run("run", "--dataset", "q", "--source-url", src, "--bucket", tmp_path / "out", "--cors")
    assert done.returncode == 65 and done.stderr.count("\n") == 1, done.stderr
    assert "--cors applies to an s3:// --bucket" in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.s3
def test_run_with_cors_into_s3_sets_the_rule_and_writes_the_page(s3: str, cli_run) -> None:
    from cng_datasets import storage

    src = DATA / "earthquakes.json"
    done = cli_run("run", "-q", "--dataset", "q", "--source-url", src, "--bucket", f"{s3}/out", "--cors")
    assert done.returncode == 0, done.stderr
    rules = storage.s3_client().get_bucket_cors(Bucket=storage.parse(s3).bucket)["CORSRules"]
    assert [r["ID"] for r in rules] == ["cng-datasets-read-ranges"]
    assert storage.exists(f"{s3}/out/q/index.html") and storage.exists(f"{s3}/out/q/collection.json")
