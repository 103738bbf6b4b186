# glassgpt: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

# Offline machines: use the local mirror of upstream data files when there is one.
ifeq ($(GLASSGPT_MIRROR),)
ifneq ($(wildcard ../shared/data),)
export GLASSGPT_MIRROR := $(abspath ../shared/data)
endif
endif

.PHONY: install quickstart test docs docs-generate demo bench clean

# Two steps: the package alone (all the quickstart needs), then the tools the tests and docs use.
$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.core
	$(VENV)/bin/glassgpt prepare shakespeare-char
	rm -rf runs/quickstart
	$(VENV)/bin/glassgpt train cpu-baby --out runs/quickstart
	$(VENV)/bin/glassgpt sample runs/quickstart --prompt "ROMEO:" --max-new-tokens 400 --seed 1337

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The docs build and the tests run side by side (neither reads what the other writes): the build is
# one process most of the time, so the two fill both cores of a small machine. The docs' notebooks
# take one thread each, as the test workers do; the build's log is printed when both are done.
test: install $(CHROMIUM)
	@mkdir -p docs/_build
	@OMP_NUM_THREADS=1 $(MAKE) --no-print-directory docs > docs/_build/docs.log 2>&1 & docs=$$!; \
	$(PY) -m pytest -q -n auto --dist worksteal; tests=$$?; \
	wait $$docs; built=$$?; cat docs/_build/docs.log; \
	if [ $$built -ne 0 ]; then echo "make test: the docs build failed (its log is above)"; fi; \
	[ $$tests -eq 0 ] && [ $$built -eq 0 ]

# The docs site, offline, warnings as errors (a broken link, a missing image, a failing cell or a
# stale generated page fails it, naming the page); the tutorials are executed. Output: docs/_build/html.
docs: install
	rm -rf docs/_build/html
	MPLBACKEND=Agg $(VENV)/bin/sphinx-build -E -W --keep-going -q -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# Rewrite the generated reference pages and every figure table from benchmarks/results/.
docs-generate: install
	$(PY) docs/_ext/generate.py

demo: install
	$(VENV)/bin/glassgpt demo $(or $(RUN),runs/quickstart)

# The full benchmark suite (~7 minutes on 2 idle CPU cores); WHAT=attention etc. runs one suite.
# JSON (and the scaling PNG) go to benchmarks/results/.
bench: install
	$(VENV)/bin/glassgpt bench $(or $(WHAT),all) --out benchmarks/results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
