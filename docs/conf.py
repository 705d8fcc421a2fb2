"""Sphinx configuration of the anyoptim site: the lesson, the user guide, the gallery and the API.

Builds offline: MathJax is served from the site itself (sphinx-mathjax-offline),
intersphinx is switched on only with ``ANYOPTIM_DOCS_INTERSPHINX=1``, and the
gallery's CuPy script runs only where CuPy sees a GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The checkout's anyoptim first, whatever is installed; then docs/ for public_api.
sys.path[:0] = [str(ROOT), str(DOCS)]

import public_api  # noqa: E402

import anyoptim  # noqa: E402

project = "anyoptim"
author = "The anyoptim developers"
copyright = "2026, The anyoptim developers"
version = release = anyoptim.__version__

REPOSITORY = "https://github.com/anyoptim/anyoptim"
SITE = "https://anyoptim.readthedocs.io"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static: math renders with no network
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
]
if os.environ.get("ANYOPTIM_DOCS_INTERSPHINX") == "1":  # needs the network: off by default and in CI
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
    }

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
# examples/ is the gallery's source (sphinx-gallery renders it into auto_examples/).
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]

# --------------------------------------------------------------------------- API reference

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
# scikit-learn's metadata-routing setters on anyoptim.sklearn's estimators: their docstrings cite sklearn's glossary.
autodoc_default_options["exclude-members"] = "set_fit_request,set_partial_fit_request,set_score_request"
autodoc_typehints = "none"  # numpydoc sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


API_INTRO = """\
..
   Written by docs/conf.py from docs/public_api.py at every build: edit those, not this file.

API reference
=============

Every public name at its public home.  ``import anyoptim`` gives the
optimizers, the network and its training loop; the submodules below hold the
schedules, transforms, data sets, trees and engines.  The optimizers are listed
from :data:`anyoptim.optimizers.REGISTRY`.
"""


def write_api_page() -> None:
    """docs/api.rst: one autosummary table per section of :mod:`public_api` (so a new optimizer gets a page)."""
    lines = [API_INTRO]
    for title, names in public_api.sections():
        lines += [title, "-" * len(title), "", ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in names]
        lines.append("")
    target = DOCS / "api.rst"
    text = "\n".join(lines)
    if not target.exists() or target.read_text() != text:  # unchanged: no rebuild of api.rst
        target.write_text(text)


write_api_page()

# --------------------------------------------------------------------------- gallery

try:
    import cupy

    HAVE_GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # no CuPy, no driver, no device
    HAVE_GPU = False


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# Examples that need a library not installed here are shown, not run (the CI installs torch and JAX).
_NOT_RUN = [
    name
    for name, module in (("plot_torch_module", "torch"), ("plot_jax_arrays", "jax"), ("plot_jax_jit", "jax"))
    if not _installed(module)
]
if _NOT_RUN:
    print(f"anyoptim docs: shown but not run (library missing): {', '.join(_NOT_RUN)}")

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    # Executed: every plot_*.py; the CuPy script (gpu_*.py) only where CuPy sees a GPU.
    "filename_pattern": (r"/(plot_|gpu_)" if HAVE_GPU else r"/plot_")
    + (r"(?!{})".format("|".join(n.removeprefix("plot_") for n in _NOT_RUN)) if _NOT_RUN else ""),
    "ignore_pattern": r"(__init__|_helpers)\.py",
    "image_scrapers": ("matplotlib", "gallery_hooks.lesson_png_scraper"),
    "reset_modules": ("matplotlib", "seaborn", "gallery_hooks.clear_lesson_pngs"),
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "write_computation_times": False,  # its page loads scripts from CDNs: not offline
}

# --------------------------------------------------------------------------- doctest

doctest_global_setup = """
import numpy as np
import anyoptim
"""

# --------------------------------------------------------------------------- HTML

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = "anyoptim"
html_static_path = ["_static"]
html_css_files = ["anyoptim.css"]
html_theme_options = {
    "github_url": REPOSITORY,
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 5,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False
# Pages without sub-pages get no (empty) left sidebar.
html_sidebars = {page: [] for page in ("index", "lesson", "api", "design", "benchmarks", "changelog", "contributing")}
