"""The HTML report of a SerialED run (crystalscope.serial.report).

A small run is made once per module the way ``crystalscope demo`` makes it (simulated
lysozyme movies, pre-processing, indexing, integration, merging, plus a dose series), with
one raw frame spoilt so that pre-processing skips it.  The report's numbers are compared
with the tables the steps wrote and with what the steps returned; the page is opened in
headless Chromium through the Chrome DevTools Protocol (over ``--remote-debugging-pipe``:
no extra package, no network) to check that it loads without errors and that every image
decodes.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the frames' compression filter for writing)
import numpy as np
import pandas as pd
import pytest

from crystalscope.dataset import Dataset
from crystalscope.demo import demo_config
from crystalscope.merge.config import MergeConfig
from crystalscope.merge.run import run_merge
from crystalscope.merge.series import merge_series
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.index_config import IndexConfig
from crystalscope.serial.index_output import run_index
from crystalscope.serial.integrate_config import IntegrateConfig
from crystalscope.serial.integrate_output import run_integrate
from crystalscope.serial.output import run_preprocess
from crystalscope.serial.report import NOT_AVAILABLE, SECTIONS, ReportInputs, write_report
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

N_CRYSTALS = 16
ESCAPE_LINE = '# escaping: <script>alert("x")</script> & &amp; </pre>\n'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the run


def _spoil_frame(path: Path) -> None:
    """Set the first raw frame of the first shot without a crystal to NaN (a miss, so that
    the hits, and with them the fitted ellipticity and the indexing, stay the same)."""
    with h5py.File(path, "r+") as fh:
        index = int(np.flatnonzero(~fh["entry/shots/hit"][()].astype(bool))[0])
        frame = fh["entry/data/data"][index]
        fh["entry/data/data"][index] = np.full_like(frame, np.nan)


def _run_chain(out: Path) -> SimpleNamespace:
    """The chain of ``crystalscope demo`` (same settings), plus a dose series."""
    config = demo_config(N_CRYSTALS)
    simulate_serial(config, out / "sim")
    _spoil_frame(out / "sim" / "frames.h5")
    quiet = {"progress": False}
    run_preprocess(
        PreprocessConfig.model_validate(
            {
                "input": {"files": [str(out / "sim" / "frames.h5")]},
                "aggregate": {"enabled": True, "by": ["shot"]}, "compute": quiet,
                "output": {"directory": str(out / "preprocessed")},
            }
        )
    )  # fmt: skip
    cell = SerialSimulation.build(config).base.cell
    run_index(
        IndexConfig.model_validate(
            {
                "input": str(out / "preprocessed" / "preprocessed.h5"),
                "cell": {"parameters": list(cell.parameters), "space_group": "P 43 21 2"},
                "compute": quiet, "output": {"directory": str(out / "indexed")},
            }
        )
    )  # fmt: skip
    run_integrate(
        IntegrateConfig.model_validate(
            {"indexed": str(out / "indexed"), "compute": quiet,
             "output": {"directory": str(out / "integrated")}}
        )
    )  # fmt: skip
    merge = run_merge(
        MergeConfig.model_validate(
            {"input": str(out / "integrated" / "observations.h5"),
             "output": {"directory": str(out / "merged")}}
        )
    )  # fmt: skip
    run_integrate(
        IntegrateConfig.model_validate(
            {
                "indexed": str(out / "indexed"), "compute": quiet,
                "dose": {"enabled": True, "input": str(out / "sim" / "frames.h5"),
                         "exposures": [1, 2, 3], "by": ["shot"]},
                "output": {"directory": str(out / "dose_integrated")},
            }
        )
    )  # fmt: skip
    series = merge_series(
        out / "dose_integrated" / "dose",
        MergeConfig.model_validate({"output": {"directory": str(out / "dose_merged")}}),
    )
    configs = [out / d / "config.resolved.yaml" for d in ("preprocessed", "indexed", "merged")]
    config_yaml = "".join(p.read_text() for p in configs) + ESCAPE_LINE
    return SimpleNamespace(out=out, merge=merge, series=series, config_yaml=config_yaml)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return _run_chain(tmp_path_factory.mktemp("report-run"))


def _inputs(run: SimpleNamespace, copies: int = 1, **changes: Any) -> ReportInputs:
    out = run.out
    inputs = ReportInputs(
        title="report test <run> & co",
        config_yaml=run.config_yaml,
        preprocessed=[out / "preprocessed"] * copies,
        indexed=[out / "indexed"] * copies,
        integrated=[out / "integrated"] * copies,
        merged=out / "merged",
        dose_series=out / "dose_merged",
        steps=[
            {"step": "preprocess", "status": "computed", "seconds": 3.26},
            {"step": "index", "status": "reused", "seconds": 0.5},
            {"step": "merge", "status": "up to date", "seconds": 0.0},
        ],
        skipped_files={str(out / "broken.h5"): "truncated HDF5 file"},
        notes=["first note", "second <note>"],
    )
    for key, value in changes.items():
        setattr(inputs, key, value)
    return inputs


# --------------------------------------------------------------------------- parsing


class _Page(HTMLParser):
    """Sections (id -> text and images), summary values, tables, ``<pre>`` text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict[str, Any]] = {}
        self.values: dict[str, str] = {}
        self.tags: list[str] = []
        self.pre = ""
        self.tables: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._key: str | None = None
        self._in_pre = False
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "tr" and "data-key" in a:
            self._key = a["data-key"]
        if tag == "td" and self._key is not None and "data-value" in a:
            self.values[self._key] = a["data-value"] or ""
        if tag == "section":
            self._section = a["id"]
            self.sections[str(a["id"])] = {"text": "", "images": []}
        elif tag == "img" and self._section is not None:
            self.sections[self._section]["images"].append(a["src"])
        elif tag == "pre":
            self._in_pre = True
        elif tag == "table":
            self._table = (a.get("class") or "").strip()
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._key = None
        if tag == "section":
            self._section = None
        elif tag == "pre":
            self._in_pre = False
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section]["text"] += data
        if self._in_pre:
            self.pre += data
        if self._cell is not None:
            self._cell.append(data)


def _render(tmp_path: Path, inputs: ReportInputs) -> tuple[str, _Page]:
    path = write_report(inputs, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    return text, _Page(text)


def _check_self_contained(text: str, page: _Page) -> None:
    assert "<script" not in text.lower().replace("&lt;script", "")
    assert "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"(?:src|href)=\"(?!data:image/png;base64,|#)", text)
    assert "url(" not in text and "@import" not in text
    for section in page.sections.values():
        for src in section["images"]:
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
            assert data.startswith(PNG_MAGIC)


# --------------------------------------------------------------------------- content


@pytest.mark.slow
def test_report_numbers_match_the_step_outputs(run: SimpleNamespace, tmp_path: Path) -> None:
    text, page = _render(tmp_path, _inputs(run))
    assert [s for s in page.sections] == [key for key, _ in SECTIONS]
    for key, section in page.sections.items():
        assert NOT_AVAILABLE not in section["text"], key
        assert "could not be shown" not in section["text"], key
    _check_self_contained(text, page)
    out = run.out
    shots = Dataset.open(out / "preprocessed" / "preprocessed.h5").shots
    rejected = pd.read_csv(out / "preprocessed" / "rejected_frames.csv")
    v = page.values
    assert list(rejected["reason"]) == ["non-finite values"]
    raw = Dataset.open(out / "sim" / "frames.h5").shots
    assert int(v["frames_read"]) == len(shots) + 1 == raw["shot"].nunique()
    assert int(v["frames_skipped"]) == 1 and "non-finite values" in page.sections["summary"]["text"]
    assert int(v["files_skipped"]) == 1
    assert int(v["hits"]) == int(shots["hit"].sum())
    assert float(v["hit_rate"]) == pytest.approx(100 * shots["hit"].mean())
    indexed = pd.read_csv(out / "indexed" / "crystals.csv")
    assert int(v["indexed_crystals"]) == len(indexed)
    rate = 100 * indexed["frame"].nunique() / shots["hit"].sum()
    assert float(v["indexing_rate"]) == pytest.approx(rate)
    crystals = run.merge.result.crystals
    assert int(v["crystals_merged"]) == int((~crystals["rejected"]).sum())
    assert int(v["crystals_rejected"]) == int(crystals["rejected"].sum())
    overall = run.merge.statistics.overall
    assert int(v["unique_reflections"]) == len(run.merge.result.merged) == overall["n_measured"]
    assert float(v["cc_half"]) == pytest.approx(overall["cc_half"], rel=1e-5)
    assert float(v["completeness"]) == pytest.approx(overall["completeness"], rel=1e-5)
    assert float(v["resolution"]) == pytest.approx(overall["d_min"], rel=1e-5)
    # from statistics.csv and the merged MTZ: the same as the merge step computed
    assert float(v["cc_cutoff"]) == pytest.approx(run.merge.statistics.cutoff_d, rel=1e-4)
    assert float(v["wilson_b"]) == pytest.approx(run.merge.statistics.wilson.b_factor, rel=1e-4)


@pytest.mark.slow
def test_report_sections_show_tables_plots_and_config(run: SimpleNamespace, tmp_path: Path) -> None:
    inputs = _inputs(run)
    text, page = _render(tmp_path, inputs)
    images = {key: len(s["images"]) for key, s in page.sections.items()}
    assert images == {
        "summary": 0, "frames": 1, "powder": 1, "ellipticity": 1, "scales": 1,
        "statistics": 1, "dose": 1, "configuration": 0,
    }  # fmt: skip
    assert page.pre == inputs.config_yaml  # verbatim, escaped in the HTML
    assert "&lt;script&gt;" in text
    steps = page.tables["steps"]
    assert steps[1:] == [["preprocess", "computed", "3.3"], ["index", "reused", "0.5"],
                         ["merge", "up to date", "0.0"]]  # fmt: skip
    assert page.tables["skipped-frames"][1][3] == "non-finite values"
    shells = page.tables["shells"]
    stats = pd.read_csv(run.out / "merged" / "statistics.csv")
    assert len(shells) == 1 + len(stats) and shells[-1][0] == "overall"
    assert [float(row[11]) for row in shells[1:]] == pytest.approx(stats["cc_half"], abs=6e-5)
    ellipses = page.tables["ellipses"]
    meta = Dataset.open(run.out / "preprocessed" / "preprocessed.h5").meta["preprocess"]
    if "ellipse_ratio" in meta:
        assert float(ellipses[1][1]) == pytest.approx(meta["ellipse_ratio"], abs=1e-5)
        assert float(ellipses[1][3]) == pytest.approx(meta["ellipse_angle_deg"], abs=0.05)
    else:  # no distortion detectable in 16 crystals (the simulation has none): none applied
        assert ellipses[1][1:] == ["-", "-", "-"]
    dose = page.tables["dose"]
    series = run.series.table
    assert [int(r[0]) for r in dose[1:]] == list(series["n_fractions"])
    recommended = re.search(r'class="recommendation" data-value="(\d+)"', text)
    assert recommended is not None and int(recommended.group(1)) == run.series.recommended
    assert 'class="recommended"' in text
    assert "first note" in text and "second &lt;note&gt;" in text
    assert "<title>report test &lt;run&gt; &amp; co</title>" in text
    indexed_peaks = Dataset.open(run.out / "indexed" / "indexed.h5")
    hits = indexed_peaks.shots["frame"][indexed_peaks.shots["hit"]]
    n_peaks = int(indexed_peaks.peaks()["frame"].isin(hits).sum())
    assert f"{n_peaks} peaks of {len(hits)} hits" in page.sections["powder"]["text"]


@pytest.mark.slow
def test_report_concatenates_several_directories(run: SimpleNamespace, tmp_path: Path) -> None:
    _, one = _render(tmp_path, _inputs(run))
    _, two = _render(tmp_path, _inputs(run, copies=2))
    for key in ("frames_read", "frames_skipped", "hits", "indexed_crystals", "observations"):
        assert int(two.values[key]) == 2 * int(one.values[key]), key
    assert float(two.values["indexing_rate"]) == pytest.approx(float(one.values["indexing_rate"]))
    assert len(two.tables["ellipses"]) == 3  # header + one row per directory
    assert len(two.sections["ellipticity"]["images"]) == 2  # + ellipticity per directory
    peaks = re.search(r"(\d+) peaks of (\d+) hits", one.sections["powder"]["text"])
    assert peaks is not None
    n_peaks, n_hits = (int(g) for g in peaks.groups())
    assert f"{2 * n_peaks} peaks of {2 * n_hits} hits" in two.sections["powder"]["text"]


def test_report_before_anything_ran(tmp_path: Path) -> None:
    inputs = ReportInputs(
        title="nothing yet", config_yaml="input: {files: [a.h5]}\n", preprocessed=[],
        indexed=[], integrated=[], merged=None,
    )  # fmt: skip
    text, page = _render(tmp_path, inputs)
    assert list(page.sections) == [key for key, _ in SECTIONS]
    for key in ("frames", "powder", "ellipticity", "scales", "statistics"):
        assert NOT_AVAILABLE in page.sections[key]["text"], key
        assert not page.sections[key]["images"]
    assert page.values["frames_read"] == "" and page.values["files_skipped"] == "0"
    assert "no steps recorded" in page.sections["summary"]["text"]
    assert "no dose series" in page.sections["dose"]["text"]
    assert page.pre == inputs.config_yaml
    _check_self_contained(text, page)
    # directories that do not exist yet read the same way
    missing = ReportInputs(
        title="later", config_yaml="", preprocessed=[tmp_path / "pre"], indexed=[tmp_path / "idx"],
        integrated=[tmp_path / "int"], merged=tmp_path / "merged", dose_series=tmp_path / "dose",
    )  # fmt: skip
    _, page = _render(tmp_path, missing)
    for key in ("frames", "powder", "ellipticity", "scales", "statistics"):
        assert NOT_AVAILABLE in page.sections[key]["text"], key
    assert "no configuration given" in page.sections["configuration"]["text"]


@pytest.mark.slow
def test_report_of_a_run_still_in_progress(run: SimpleNamespace, tmp_path: Path) -> None:
    inputs = _inputs(run, indexed=[tmp_path / "not-yet"], integrated=[], merged=None,
                     dose_series=None)  # fmt: skip
    _, page = _render(tmp_path, inputs)
    for key in ("frames", "ellipticity"):
        assert NOT_AVAILABLE not in page.sections[key]["text"] and page.sections[key]["images"]
    for key in ("powder", "scales", "statistics"):
        assert NOT_AVAILABLE in page.sections[key]["text"], key
    assert page.values["hits"] != "" and page.values["indexed_crystals"] == ""
    assert page.values["crystals_merged"] == ""


@pytest.mark.slow
def test_unreadable_merge_output_is_named_not_raised(run: SimpleNamespace, tmp_path: Path) -> None:
    broken = tmp_path / "merged"
    shutil.copytree(run.out / "merged", broken)
    (broken / "crystals.csv").write_text("crystal_id,scale\n0,1.0\n")  # no `rejected` column
    _, page = _render(tmp_path, _inputs(run, merged=broken))
    assert "could not be shown" in page.sections["scales"]["text"]
    assert "could not be shown" in page.sections["summary"]["text"]
    assert page.values["hits"] != ""  # the summary's other rows are still there
    assert "rejected" in page.sections["scales"]["text"]
    assert page.sections["powder"]["images"]  # the rest of the report is still there


# --------------------------------------------------------------------------- browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary found (install Debian's `chromium` package)")


class _DevTools:
    """Headless Chromium driven over the DevTools protocol on ``--remote-debugging-pipe``:
    JSON messages separated by NUL bytes, commands on the child's fd 3, replies and
    events on its fd 4."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def wire() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            read_end = fcntl.fcntl(to_child, fcntl.F_DUPFD_CLOEXEC, 10)
            write_end = fcntl.fcntl(from_child, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [
            binary, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
            "--no-first-run", "--no-default-browser-check", "--disable-gpu",
            "--disable-extensions", "--disable-background-networking", "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with the sandbox
        # preexec_fn: no thread of ours runs yet; close_fds=False keeps fds 3 and 4 open
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self.events: list[dict[str, Any]] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._in, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._replies.put(json.loads(raw))

    def _receive(self, deadline: float) -> dict[str, Any]:
        message = self._replies.get(timeout=max(deadline - time.monotonic(), 0.01))
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply["error"]
                return dict(reply["result"])

    def wait_for(self, method: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self._receive(deadline)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (queue.Empty, OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)


_INSPECT = """(async () => {
  const images = await Promise.all(Array.from(document.images, async (img) => {
    let decoded = true;
    try { await img.decode(); } catch (e) { decoded = false; }
    return {width: img.naturalWidth, height: img.naturalHeight, decoded: decoded};
  }));
  const headings = Array.from(document.querySelectorAll("h2"), (h) => {
    const box = h.getBoundingClientRect();
    return {text: h.textContent,
            visible: h.checkVisibility() && box.width > 0 && box.height > 0};
  });
  return {images: images, headings: headings, title: document.title};
})()"""


def _inspect_page(path: Path, profile: Path) -> dict[str, Any]:
    """Load ``path`` in headless Chromium; the images, headings, errors and requests."""
    browser = _DevTools(_chromium(), profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        result = browser.call(
            "Runtime.evaluate",
            {"expression": _INSPECT, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        assert "exceptionDetails" not in result, result
        events = browser.events
    finally:
        browser.close()
    page: dict[str, Any] = dict(result["result"]["value"])
    page["page_errors"] = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    page["console_errors"] = [
        e["params"] for e in events
        if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
    ]  # fmt: skip
    page["log_errors"] = [
        e["params"]["entry"] for e in events
        if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]  # fmt: skip
    page["failed"] = [e["params"] for e in events if e["method"] == "Network.loadingFailed"]
    page["requests"] = [
        e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
    ]
    return page


@pytest.mark.slow
def test_report_loads_cleanly_in_chromium(run: SimpleNamespace, tmp_path: Path) -> None:
    binary = _chromium()
    assert binary
    path = write_report(_inputs(run), tmp_path / "report.html")
    page = _inspect_page(path, tmp_path / "profile")
    assert page["page_errors"] == [] and page["console_errors"] == []
    assert page["log_errors"] == [] and page["failed"] == []
    external = [u for u in page["requests"] if not u.startswith(("file:", "data:"))]
    assert external == []
    assert page["title"] == "report test <run> & co"
    assert len(page["images"]) == 6
    for image in page["images"]:
        assert image["decoded"] and image["width"] > 100 and image["height"] > 100, image
    assert [h["text"] for h in page["headings"]] == [title for _, title in SECTIONS]
    assert all(h["visible"] for h in page["headings"])


def test_browser_check_sees_broken_pages(tmp_path: Path) -> None:
    """The checks above can fail: a page with a broken image, a script error, a console
    error, a hidden heading and an outside request is reported as such."""
    _chromium()
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        "<h2>shown</h2><h2 style='display:none'>hidden</h2>"
        "<img src='data:image/png;base64,iVBORw0KGgoAAAAN'>"
        "<img src='http://127.0.0.1:9/outside.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    page = _inspect_page(bad, tmp_path / "profile")
    assert len(page["page_errors"]) == 1 and "undefinedFunction" in json.dumps(page["page_errors"])
    assert len(page["console_errors"]) == 1
    assert [i["decoded"] for i in page["images"]] == [False, False]
    assert [i["width"] for i in page["images"]] == [0, 0]
    assert [h["visible"] for h in page["headings"]] == [True, False]
    assert "http://127.0.0.1:9/outside.png" in page["requests"]
