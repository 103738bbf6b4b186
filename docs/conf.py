"""Sphinx configuration of glassgpt's docs: MyST Markdown pages, MyST-NB executed tutorials,
the Furo theme. Built offline by `make docs` with warnings as errors (`-W --keep-going`)."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT / "src"))

project = "glassgpt"
author = "glassgpt's authors"
copyright = "glassgpt's authors, MIT licence"

extensions = [
    "myst_nb",  # registers myst_parser too
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "glassdocs",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_generated", "**/.ipynb_checkpoints"]

# ---------------------------------------------------------------- MyST
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3  # `[text](page.md#a-heading)` resolves; a wrong one is a warning, so an error

# ---------------------------------------------------------------- executed pages
nb_execution_mode = "force"  # run every tutorial at every build: a page that stops being true fails
nb_execution_raise_on_error = True  # a failing cell (an assert) fails the build, naming the page
nb_execution_show_tb = True
nb_execution_timeout = 1200  # per cell: a hung cell fails the build, a machine under load does not
nb_merge_streams = True
nb_execution_in_temp = True  # cells run in a temporary folder: nothing is written into docs/

# ---------------------------------------------------------------- API pages
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the signatures show them; the docstrings say the shapes
napoleon_google_docstring = False
napoleon_numpy_docstring = False

# ---------------------------------------------------------------- HTML
html_theme = "furo"
html_title = "glassgpt"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}

# Pages another part of the project writes, linked into the site when they exist.
glassdocs_optional_pages = ["own-data", "sae"]
os.environ.setdefault("MPLBACKEND", "Agg")
