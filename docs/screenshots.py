"""Open the built site in headless Chromium, screenshot four pages, and fail on what a reader would see broken.

    python docs/screenshots.py [BUILD_DIR] [--out DIR] [--chromium PATH]

BUILD_DIR is the HTML build (default docs/_build/html); the screenshots go to
DIR (default docs/_build/screenshots).  The pages are served from a local HTTP
server on 127.0.0.1, so nothing is fetched from the network.  A page fails when

* any request it makes is answered with an error (a broken image, a missing
  MathJax font or script), or an ``<img>`` in it points at no file;
* it shows a Sphinx/docutils error or warning box (``system-message``) or a
  gallery example's traceback;
* math is left as LaTeX: a ``math`` element still holding ``\\(`` or ``\\[``
  after MathJax ran, a MathJax error (``mjx-merror``), or a page with math and
  no rendered formula at all.

Exit status 0 when every page passes, 1 otherwise.  Chromium: Debian's
``chromium`` package; as root it runs with ``--no-sandbox``.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: The pages checked: (file under the build, screenshot name, whether it must show rendered math).
PAGES = (
    ("index.html", "landing", False),
    ("lesson.html", "lesson", True),
    ("auto_examples/plot_lesson_compare.html", "gallery_compare", True),
    ("generated/anyoptim.Adam.html", "api_adam", True),
)
VIRTUAL_TIME_MS = 15_000  # lets MathJax typeset before the screenshot and the DOM dump


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    failures: list[str]  # set per server

    def log_message(self, format, *args):
        pass

    def send_error(self, code, message=None, explain=None):
        if self.path != "/favicon.ico":  # asked for by the browser itself, not by the page
            self.failures.append(f"HTTP {code} for {self.path}")
        super().send_error(code, message, explain)


class _PageScan(html.parser.HTMLParser):
    """Collect what the rendered DOM shows: images, error boxes, math left as LaTeX, rendered formulas."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.system_messages = 0
        self.merrors = 0
        self.rendered = 0
        self.raw_math: list[str] = []
        self.tracebacks = 0
        self._math_depth = 0  # inside an element of class "math"
        self._stack: list[bool] = []
        self._skip = 0  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "img" and attributes.get("src"):
            self.images.append(attributes["src"])
        if "system-message" in classes:
            self.system_messages += 1
        if tag == "mjx-merror":
            self.merrors += 1
        if tag == "mjx-container":
            self.rendered += 1
        is_math = "math" in classes
        self._stack.append(is_math)
        self._math_depth += is_math

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        if self._stack:
            self._math_depth -= self._stack.pop()

    def handle_data(self, data):
        if self._skip:
            return
        if "Traceback (most recent call last)" in data:
            self.tracebacks += 1
        if self._math_depth and ("\\(" in data or "\\[" in data):
            self.raw_math.append(data.strip()[:60])


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *flags, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


def check_page(binary: str, base: str, build: Path, page: str, name: str, needs_math: bool, out: Path) -> list[str]:
    url = f"{base}/{page}"
    wait = f"--virtual-time-budget={VIRTUAL_TIME_MS}"
    shot = out / f"{name}.png"
    _chromium(binary, wait, "--window-size=1400,2200", f"--screenshot={shot}", url)
    if not shot.exists() or shot.stat().st_size == 0:
        return [f"{page}: no screenshot was written"]
    dom = _chromium(binary, wait, "--window-size=1400,2200", "--dump-dom", url).stdout
    if "<html" not in dom:
        return [f"{page}: chromium returned no DOM"]
    scan = _PageScan()
    scan.feed(dom)
    problems = []
    for src in scan.images:
        if src.startswith(("data:", "http://127.0.0.1", "https://", "http://")):
            continue
        target = (build / Path(page).parent / src.split("#")[0].split("?")[0]).resolve()
        if not target.is_file():
            problems.append(f"{page}: image {src} points at no file")
    if scan.system_messages:
        problems.append(f"{page}: {scan.system_messages} Sphinx error/warning box(es)")
    if scan.tracebacks:
        problems.append(f"{page}: a traceback is shown")
    if scan.merrors:
        problems.append(f"{page}: {scan.merrors} MathJax error(s)")
    if scan.raw_math:
        problems.append(f"{page}: math left as LaTeX: {scan.raw_math[:3]}")
    if needs_math and not scan.rendered:
        problems.append(f"{page}: no rendered formula (MathJax did not run)")
    print(f"{page}: {len(scan.images)} images, {scan.rendered} formulas rendered -> {shot}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", nargs="?", default="docs/_build/html", type=Path)
    parser.add_argument("--out", default="docs/_build/screenshots", type=Path)
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    )
    args = parser.parse_args(argv)
    build = args.build.resolve()
    if not (build / "index.html").is_file():
        print(f"screenshots: no built site in {build}", file=sys.stderr)
        return 1
    if not shutil.which(args.chromium):
        print(f"screenshots: {args.chromium} not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    handler = type("Handler", (_Handler,), {"failures": []})
    server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(build)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    problems = []
    try:
        for page, name, needs_math in PAGES:
            before = len(handler.failures)
            problems += check_page(args.chromium, base, build, page, name, needs_math, args.out)
            problems += [f"{page}: {failure}" for failure in handler.failures[before:]]
    finally:
        server.shutdown()
    for problem in problems:
        print(f"screenshots: FAIL {problem}", file=sys.stderr)
    print(f"screenshots: {len(PAGES)} pages, {len(problems)} problems; images in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
