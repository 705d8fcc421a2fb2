"""sphinx-gallery hooks of the docs build (named by string in conf.py, so the configuration stays cacheable)."""

from __future__ import annotations

import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def lesson_png_scraper(block, block_vars, gallery_conf):
    """Pick up the PNGs an example wrote to ``figures/`` (the lesson's own plot functions write files).

    The lesson's figures are drawn by :mod:`anyoptim.lesson.plots` exactly as
    ``anyoptim compare`` draws them; this scraper moves each new or rewritten
    file into the gallery as if matplotlib's scraper had found it.
    """
    from sphinx_gallery.scrapers import figure_rst

    folder = Path(block_vars["src_file"]).parent / "figures"
    seen = block_vars.setdefault("lesson_pngs_seen", {})
    paths = []
    for png in sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime):
        stamp = png.stat().st_mtime_ns
        if seen.get(png) == stamp:
            continue
        seen[png] = stamp
        target = next(block_vars["image_path_iterator"])
        shutil.copyfile(png, target)
        paths.append(target)
    return figure_rst(paths, gallery_conf["src_dir"])


def clear_lesson_pngs(gallery_conf, fname, when=None):
    """Before each example: an empty ``examples/figures/`` so only its own files are scraped."""
    shutil.rmtree(DOCS / "examples" / "figures", ignore_errors=True)
