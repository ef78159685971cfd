# Two commands from a clean clone, no venv needed:  make run  (the main job)  and  make test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every distribution in the repo, installed editable exactly as a user would install it.
DISTS  := ./ $(sort $(dir $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)))
EXTRAS := $(foreach d,$(DISTS),$(if $(wildcard $(d)extras),-e '$(d)[$(shell cat $(d)extras)]',-e $(d)))

.PHONY: run test setup clean docs docs-serve docs-plots bench physicsnemo-test
run: $(STAMP)
	$(VENV)/bin/diffusion-schemes train

test: $(STAMP)
	$(PY) -m pytest -q

# Benchmarks: writes docs/performance.md and docs/performance.json (16 to 45 minutes on 2 CPUs, by the machine).
bench: $(STAMP)
	$(PY) -m benchmarks

setup: $(STAMP)

$(STAMP): requirements-dev.txt requirements-docs.txt pyproject.toml extras $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml contrib/*/extras)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps k-diffusion==0.1.1.post1
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation $(EXTRAS)
	touch $(STAMP)

# The documentation site: built with warnings as errors (also a test), served on http://127.0.0.1:8000.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	$(VENV)/bin/mkdocs serve

# The figures of the site, drawn by our own plot command (docs/plots.txt lists one command per line),
# and the benchmark figures, drawn from docs/performance.json.
docs-plots: $(STAMP)
	grep -v '^#' docs/plots.txt | while read -r args; do $(VENV)/bin/diffusion-schemes plot $$args --out docs/img || exit 1; done
	$(PY) -c "from benchmarks.solvers import plot; plot('docs/performance.json', 'docs/img/solvers.png')"

# PhysicsNeMo's own environment, optional and apart from .venv: PhysicsNeMo 2.2.2 imports its models only
# with torch 2.14.1 + torchvision 0.29.1 (a CUDA build, about 6 GB), so `make setup` installs
# contrib/physicsnemo without its [physicsnemo] extra and its PhysicsNeMo tests skip there. That environment
# leaves out the BayesFlow and diffusers bridges (their own pins) and adds the trainer's digits extra.
PN_VENV  ?= .venv-physicsnemo
PN_PY    := $(PN_VENV)/bin/python
PN_STAMP := $(PN_VENV)/.installed
PN_DISTS := $(patsubst contrib/trainer/,'contrib/trainer/[digits]',$(foreach d,$(filter-out contrib/bayesflow/ contrib/diffusers/ contrib/physicsnemo/,$(DISTS)),-e $(d))) -e 'contrib/physicsnemo/[physicsnemo]'

physicsnemo-test: $(PN_STAMP)
	$(PN_PY) -m pytest -q contrib/physicsnemo/tests

$(PN_STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)
	test -x $(PN_PY) || $(PYTHON) -m venv $(PN_VENV)
	$(PN_PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 setuptools pytest numpy
	$(PN_PY) -m pip install -q --disable-pip-version-check --no-build-isolation $(PN_DISTS)
	touch $(PN_STAMP)

clean:
	rm -rf $(VENV) $(PN_VENV)
