"""The Sphinx extension of glassgpt's docs.

- The build fails (a warning, and warnings are errors) when a generated reference page is stale
  or a figure block differs from its results JSON, naming the page and the line.
- Each executed tutorial (a MyST-NB text notebook under tutorials/) is also written as a
  Jupyter notebook into docs/_generated/, which the pages offer with `{download}`.
- Links to a repository file the site shows as a page (SECURITY.md) point at that page.
- A toctree line naming a page that another part of the project writes (`glassdocs_optional_pages`)
  is dropped while that page does not exist, so the site builds before and after it lands.
"""

import os
import re
from pathlib import Path

from sphinx.util import logging

import glassdocs_figures as figures
import glassdocs_reference as reference

logger = logging.getLogger(__name__)
DOCS = Path(__file__).resolve().parents[1]
GENERATED = DOCS / "_generated"


def notebooks() -> list[Path]:
    """The tutorials that are notebooks: MyST Markdown pages with a kernelspec."""
    return [p for p in sorted((DOCS / "tutorials").glob("*.md")) if "kernelspec:" in p.read_text()[:500]]


def write_notebooks() -> list[Path]:
    import jupytext

    GENERATED.mkdir(exist_ok=True)
    written = []
    for page in notebooks():
        notebook = jupytext.read(page, fmt="md:myst")
        target = GENERATED / f"{page.stem}.ipynb"
        jupytext.write(notebook, target, fmt="ipynb")
        written.append(target)
    return written


def on_builder_inited(app) -> None:
    for problem in reference.stale() + figures.check(figures.pages()):
        logger.warning(problem, type="glassgpt", subtype="generated")
    write_notebooks()


# Files outside docs/ that pages link to, and the page of the site that shows each.
REPO_FILES_SHOWN_AT = {"SECURITY.md": "explanation/security.md"}
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")


def adjust_source(app, docname, source) -> None:
    """Drop toctree lines naming optional pages that do not exist yet, and point links to a
    repository file that the site shows (SECURITY.md) at its page."""
    text = source[0]
    for page in app.config.glassdocs_optional_pages:
        if not (DOCS / f"{page}.md").is_file():
            text = re.sub(rf"^[ \t]*(\.\./)*{re.escape(page)}(\.md)?[ \t]*\n", "", text, flags=re.M)
    here = (DOCS / docname).parent

    def relink(m):
        target = m.group("target")
        if "://" in target:
            return m.group(0)
        resolved = (here / target).resolve()
        for repo_file, page in REPO_FILES_SHOWN_AT.items():
            if resolved == (DOCS.parent / repo_file).resolve():
                rel = Path(os.path.relpath(DOCS / page, here)).as_posix()
                return f"]({rel}{m.group('anchor') or ''})"
        return m.group(0)

    source[0] = LINK.sub(relink, text)


def setup(app):
    app.add_config_value("glassdocs_optional_pages", [], "env")
    app.connect("builder-inited", on_builder_inited)
    app.connect("source-read", adjust_source)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
