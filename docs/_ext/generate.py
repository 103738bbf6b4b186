"""Write the generated parts of the docs: the reference pages (from the code) and every figure
block in README.md and docs/ (from benchmarks/results/). `python docs/_ext/generate.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import glassdocs_figures as figures  # noqa: E402
import glassdocs_reference as reference  # noqa: E402


def main() -> None:
    changed = reference.write_all()
    changed += [str(p.relative_to(figures.ROOT)) for p in figures.pages() if figures.refresh(p)]
    print("\n".join(f"wrote {c}" for c in changed) or "everything was up to date")


if __name__ == "__main__":
    main()
