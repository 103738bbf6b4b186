"""The docs are checked like code: the README fits on a screen, the reference pages are what the
code says, every measured table is what its results JSON says, every `glassgpt ...` line parses
with the real parser, every Python block runs, and the build fails on a broken link, a missing
image or a failing cell, naming the page. (`make docs`, which `make test` runs first, builds
the whole site with the tutorials executed.)"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import glassdocs_figures as figures  # noqa: E402
import glassdocs_reference as reference  # noqa: E402

README = REPO / "README.md"


def doc_pages() -> list[Path]:
    """README.md and every Markdown page of the site (not the build output)."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and "_generated" not in p.parts)]


FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*\{?(?P<lang>[\w-]*)\}?[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$", re.M | re.S)


def code_blocks(text: str, langs: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """(line, lang, body) of every fenced block in one of `langs`."""
    return [(text.count("\n", 0, m.start()) + 1, m.group("lang"), m.group("body"))
            for m in FENCE.finditer(text) if m.group("lang") in langs]


# ---------------------------------------------------------------- the README

def test_the_readme_fits_on_a_screen_with_the_picture_and_the_two_commands_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the limit is 200"
    first_screen = "\n".join(lines[:45])
    assert "benchmarks/results/dynamics-induction.png" in first_screen
    assert "make quickstart" in first_screen and "make test" in first_screen
    assert (REPO / "benchmarks/results/dynamics-induction.png").is_file()


def test_the_readme_says_nothing_about_how_the_project_was_worked_on():
    text = README.read_text().lower()
    for word in ("session", "issue", "engineer", " lent", "sitting", "/work/", "our targets", "the target"):
        assert word not in text, f"README.md mentions {word.strip()!r}"


def test_code_tests_and_docs_speak_of_the_product_not_of_how_it_was_made():
    """History lives in the dated lab notebook alone; nothing else cites issue numbers, a design
    file outside the repository, or who worked on what."""
    notebook = DOCS / "benchmarks" / "lab-notebook.md"
    files = [*REPO.joinpath("src").rglob("*.py"), *REPO.joinpath("tests").rglob("*.py"),
             *REPO.joinpath("benchmarks").glob("*.py"), REPO / "benchmarks" / "README.md", REPO / "SECURITY.md",
             *[p for p in doc_pages() if p != notebook]]
    cited = re.compile(r"\bissues? #?\d+|(?-i:DESIGN\.md)|\bengineers?\b|\bhelpers? (?:agent|session)|\bthis session\b", re.I)
    found = [f"{f.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for f in files for text in [f.read_text(errors="replace")] for m in cited.finditer(text)
             if f.name != "test_docs.py"]
    assert len(files) > 100 and found == []


def test_the_readme_links_into_the_docs_and_every_relative_link_exists():
    text = README.read_text()
    targets = re.findall(r"\]\((?!https?:|#|mailto:)([^)#\s]+)", text)
    assert any(t.startswith("docs/") for t in targets), "the README links nowhere into docs/"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


# ---------------------------------------------------------------- generated reference pages

def test_the_reference_pages_are_what_the_code_says():
    assert reference.stale() == []


def test_a_hand_edited_reference_page_is_caught(tmp_path, monkeypatch):
    shutil.copytree(DOCS / "reference", tmp_path / "reference")
    monkeypatch.setattr(reference, "DOCS", tmp_path)
    assert reference.stale() == []
    page = tmp_path / "reference" / "config.md"
    page.write_text(page.read_text().replace("| `n_layer` | int | `12` |", "| `n_layer` | int | `6` |"))
    (tmp_path / "reference" / "hooks.md").unlink()
    problems = reference.stale()
    assert any("docs/reference/config.md is stale" in p for p in problems)
    assert any("docs/reference/hooks.md is missing" in p for p in problems)


def test_every_command_flag_config_key_preset_and_hook_is_in_the_reference():
    import argparse
    import dataclasses

    from glassgpt.cli import build_parser
    from glassgpt.config import GPTConfig, TrainConfig, preset_names
    from glassgpt.model import GPT

    cli = (DOCS / "reference/cli.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = [(name, parser) for name, parser in sub.choices.items()]
    for name, parser in list(parsers):
        forms = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        parsers += [(f"{name} {form}", p) for form, p in (forms.choices.items() if forms else [])]
    for name, parser in parsers:
        assert f"`glassgpt {name.split()[0]}" in cli and name.split()[-1] in cli
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in cli, f"{name} {flag} is not in reference/cli.md"
    config = (DOCS / "reference/config.md").read_text()
    for cls in (GPTConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            row = next((line for line in config.splitlines() if line.startswith(f"| `{f.name}` |")), None)
            assert row is not None, f"{f.name} is not in reference/config.md"
            assert row.split(" | ")[3].strip(), f"config key {f.name} has no meaning: add a comment or metadata"
    presets = (DOCS / "reference/presets.md").read_text()
    for name in preset_names():
        assert f"## `{name}`" in presets
    hooks = (DOCS / "reference/hooks.md").read_text()
    for kind in reference.KINDS.values():
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=3, n_embd=24, **kind))
        for name in model.hook_names():
            generic = re.sub(r"blocks\.\d+\.", "blocks.{i}.", name)
            assert f"`{generic}`" in hooks, name


def test_config_meanings_come_from_metadata_then_comments():
    import dataclasses

    @dataclasses.dataclass
    class Example:
        a: int = 1  # the comment beside it
        # the comment above it
        b: str = "x"
        c: float = dataclasses.field(default=0.5, metadata={"meaning": "declared in metadata"})  # not this
        d: bool = False

    header, rows = reference.config_rows(Example)
    meanings = {row[0]: row[3] for row in rows}
    assert meanings == {"`a`": "the comment beside it", "`b`": "the comment above it",
                        "`c`": "declared in metadata", "`d`": ""}
    assert [row[2] for row in rows] == ["`1`", '`"x"`', "`0.5`", "`false`"]


# ---------------------------------------------------------------- measured figures

def test_every_figure_table_is_what_its_results_json_says():
    assert figures.check(doc_pages()) == []
    used = {m.group("name") for p in doc_pages() for m in figures.BLOCK.finditer(p.read_text())}
    assert "readme-vs-nanogpt" in used and len(used) >= 6
    assert set(figures.FIGURES) == used, f"registered but shown nowhere: {set(figures.FIGURES) - used}"


def test_a_table_that_differs_from_its_json_or_names_a_missing_file_is_caught(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    idle = figures.FIGURES["vs-nanogpt-cpu-idle"]
    page.write_text("<!-- figure: vs-nanogpt-cpu-idle -->\n" + figures.render("vs-nanogpt-cpu-idle") + "<!-- /figure -->\n")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    assert figures.check([page]) == []
    cpu_baby_loss = f"{idle.load()['summary']['cpu-baby']['final_val_loss']:.4f}"
    page.write_text(page.read_text().replace(cpu_baby_loss, "1.7000"))
    assert figures.check([page]) == [
        f"page.md:1: figure vs-nanogpt-cpu-idle differs from benchmarks/results/{idle.json}: "
        "run `python docs/_ext/generate.py`"]
    page.write_text("text\n<!-- figure: no-such-table -->\n<!-- /figure -->\n")
    assert "page.md:2: figure no-such-table: no figure named 'no-such-table'" in figures.check([page])[0]
    monkeypatch.setitem(figures.FIGURES, "gone", figures.Figure("gone-20990101.json", "glassgpt bench", figures.mfu))
    page.write_text("<!-- figure: gone -->\n<!-- /figure -->\n")
    problems = figures.check([page])
    assert "page.md:1: figure gone: benchmarks/results/gone-20990101.json does not exist" in problems
    assert any("figure gone: benchmarks/results/gone-20990101.json does not exist" in p and "glassdocs_figures" in p
               for p in problems)


def test_every_provenance_line_names_machine_command_and_date():
    for name in figures.FIGURES:
        line = figures.render(name).rstrip().splitlines()[-1]
        assert re.fullmatch(r"\*Source: `benchmarks/results/[\w.-]+\.json` — .+; `[^`]+`; \d{4}-\d\d-\d\d\.\*", line), line
        assert "issue" not in line.lower()


def test_a_cpu_figure_names_what_the_cpu_computes_fast_and_its_threads():
    """A figure from one CPU is never read as true of another: the caption names torch's kernel
    level, the 16-bit instructions (or that torch emulates them there) and the threads."""
    zen4 = {"cpu_model": "AMD EPYC", "cpu_count": 2, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
            "torch_threads": 2, "load_average": [0.3, 0, 0]}
    assert figures.machine_of({"machine": zen4}).startswith("AMD EPYC (AVX512 + avx512_bf16), 2 cores, 2 threads, ")
    forced = {**zen4, "cpu_capability": "AVX2", "native_bfloat16_matmul": False, "native_float16_matmul": False}
    assert figures.machine_of({"machine": forced, "threads": 1}).startswith(
        "AMD EPYC (AVX2 + 16-bit matmul emulated), 2 cores, 1 thread, ")
    assert figures.machine_of({"machine": {"cpu_model": "AMD EPYC", "cpu_count": 2, "cpu_flags": ["avx2", "fma"]}}) \
        == "AMD EPYC (AVX2), 2 cores"


# ---------------------------------------------------------------- commands and code in the docs

def glassgpt_command_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line, argv after `glassgpt`) of every command line in shell blocks and inline code, and
    (line, [NAME]) for an inline `glassgpt NAME` that names a command in prose."""
    found = []
    candidates = []
    names: list[tuple[int, str]] = []
    for line, _lang, body in code_blocks(text, ("bash", "sh", "shell", "console")):
        joined = body.replace("\\\n", " ")
        for i, cmd in enumerate(joined.splitlines()):
            candidates.append((line + 1 + i, cmd))
    for m in re.finditer(r"(?<!`)`((?:python -m |torchrun [^`]*-m )?glassgpt [^`]+)`", text):
        if re.fullmatch(r"glassgpt [\w-]+", m.group(1)):  # a command's name in prose: the name alone is checked
            names.append((text.count("\n", 0, m.start()) + 1, m.group(1).split()[1]))
            continue
        candidates.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    for line, cmd in candidates:
        cmd = cmd.strip().removeprefix("$ ")
        for part in re.split(r"&&|;|\|\|", cmd):
            try:
                tokens = shlex.split(part, comments=True)
            except ValueError:
                tokens = part.split()
            for j, tok in enumerate(tokens):
                if tok == "glassgpt" and (j == 0 or tokens[j - 1] == "-m"):
                    if any(t.startswith("[") for t in tokens[j + 1:]):
                        break  # a synopsis (`glassgpt eval RUN_DIR [--stride S]`), not a command line
                    found.append((line, tokens[j + 1:]))
                    break
    return found + [(line, [name]) for line, name in names]


def check_command(argv: list[str]) -> str | None:
    """None when the real parser takes the line (and a preset's key=value overrides load), else why not."""
    import contextlib
    import io

    from glassgpt.cli import build_parser
    from glassgpt.config import load_run_config, preset_names
    from glassgpt.errors import UsageError

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if argv in (["--help"], ["--version"]):
        return None
    if len(argv) == 1:  # a command named in prose
        return None if argv[0] in sub.choices else f"no command {argv[0]!r}"
    forms = next((a for a in sub.choices.get(argv[0], parser)._actions if a.dest == "form"), None)
    if len(argv) == 2 and forms is not None:  # a form named in prose: prepare text, prepare NAME
        return None if argv[1] in (*forms.choices, "NAME") else f"no form {argv[1]!r} of {argv[0]}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as stop:
        if stop.code == 0:  # --help
            return None
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "refused"
    if args.command == "train" and args.config in preset_names():
        overrides = [o for o in args.overrides if not o.startswith(("init_from=", "model="))]  # a run, a file
        try:
            load_run_config(args.config, overrides)
        except UsageError as e:
            return str(e)
    return None


def test_every_glassgpt_command_line_in_the_docs_parses_with_the_real_parser():
    checked, problems = 0, []
    for page in doc_pages():
        for line, argv in glassgpt_command_lines(page.read_text()):
            checked += 1
            why = check_command(argv)
            if why:
                problems.append(f"{page.relative_to(REPO)}:{line}: glassgpt {' '.join(argv)}: {why}")
    assert not problems, "\n".join(problems)
    assert checked >= 40, f"only {checked} command lines found: is the extractor still finding them?"


def test_a_command_line_the_parser_refuses_is_reported():
    text = "```bash\nglassgpt prepare shakespeare-char && glassgpt train cpu-baby --outt runs/x\n```\n" \
           "and inline `glassgpt sample runs/x --temperature hot`, `glassgpt train cpu-baby n_layr=2`;\n" \
           "`glassgpt analyze` is a command, `glassgpt analyse` is not\n"
    found = glassgpt_command_lines(text)
    assert [argv[0] for _, argv in found] == ["prepare", "train", "sample", "train", "analyze", "analyse"]
    assert [check_command(argv) is None for _, argv in found] == [True, False, False, False, True, False]
    assert "did you mean" in check_command(found[3][1])
    assert [line for line, _ in found] == [2, 2, 4, 4, 5, 5]


def python_blocks() -> list[tuple[Path, int, str]]:
    """Every ```python block of README.md and the non-executed pages (the tutorials' cells run in
    the docs build), except one directly after a `<!-- not run: WHY -->` comment."""
    blocks = []
    for page in doc_pages():
        text = page.read_text()
        if "kernelspec:" in text[:500] or page.stem in ("own-data", "sae"):  # executed cells; others' pages
            continue
        for m in FENCE.finditer(text):
            if m.group("lang") != "python":
                continue
            before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
            if before[0].startswith("<!-- not run:"):
                continue
            blocks.append((page, text.count("\n", 0, m.start()) + 1, m.group("body")))
    return blocks


@pytest.mark.parametrize("page,line,code", python_blocks(),
                         ids=[f"{p.relative_to(REPO)}:{line}" for p, line, _ in python_blocks()])
def test_every_python_block_in_the_docs_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.relative_to(REPO)}:{line}", "exec"), {"__name__": "__docs__"})


def test_every_python_block_and_every_executed_page_checks_what_it_shows():
    """A block that only runs proves little: each states its claim as an assert."""
    unchecked = [f"{page.relative_to(REPO)}:{line}" for page, line, code in python_blocks() if "assert " not in code]
    executed = [page for page in doc_pages() if "kernelspec:" in page.read_text()[:500]]
    unchecked += [str(page.relative_to(REPO)) for page in executed if "assert " not in page.read_text()]
    assert len(executed) >= 2 and unchecked == []


def test_the_readme_has_exactly_one_python_snippet_and_it_is_run():
    readme_blocks = [b for b in python_blocks() if b[0] == README]
    assert len(readme_blocks) == 1


# ---------------------------------------------------------------- the build itself

@pytest.mark.slow
def test_the_docs_build_fails_on_a_broken_link_a_missing_image_and_a_failing_cell_naming_the_page(tmp_path):
    """A copy of the site with three faults, the real tutorials replaced by two short notebooks
    (one of them failing) so that nothing long runs."""
    repo = tmp_path / "repo"  # the docs, and what they read from beside them
    site = repo / "docs"
    shutil.copytree(DOCS, site, ignore=shutil.ignore_patterns("_build", "_generated"))
    for name in ("README.md", "SECURITY.md"):
        shutil.copy(REPO / name, repo / name)
    (repo / "benchmarks").symlink_to(REPO / "benchmarks")
    notebook = "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n" \
               "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# {}\n\n" \
               "```{{code-cell}} python\n{}\n```\n"
    (site / "tutorials/induction.md").write_text(notebook.format("A claim", "print('fine')"))
    (site / "tutorials/sinks.md").write_text(notebook.format("Sinks", "print('fine')"))
    for folder in ("reference", "explanation", "benchmarks", "learn"):  # pages that only make the build longer
        shutil.rmtree(site / folder)
    how = site / "howto/demo.md"
    good_demo = how.read_text()
    how.write_text(good_demo + "\nSee [the guide](no-such-page.md).\n\n![a picture](no-such-picture.png)\n")

    def build(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
                               str(site), str(tmp_path / out)], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "MPLBACKEND": "Agg"})

    result = build("html-links")
    assert result.returncode != 0
    out = result.stderr
    demo_lines = how.read_text().splitlines()
    link_line = next(i for i, t in enumerate(demo_lines, 1) if "no-such-page" in t)
    assert re.search(rf"howto/demo\.md:{link_line}: WARNING: .*no-such-page", out), out
    assert re.search(r"howto/demo\.md:\d+: WARNING: image file not readable: .*no-such-picture", out), out
    assert "tutorials/induction" not in out and "tutorials/sinks" not in out  # the good notebooks are not blamed

    # Now a cell fails: the build stops there, naming the page. The pages it would read first go
    # (their missing links are warnings of their own, which the check below does not take for the cell's).
    shutil.rmtree(site / "howto")
    (site / "tutorials/induction.md").write_text(notebook.format("A claim", "assert 1 + 1 == 3, 'the text says so'"))
    result = build("html-cell")
    assert result.returncode != 0
    assert re.search(r"ExecutionError: \S*/tutorials/induction\.md", result.stderr), result.stderr
