# The two README commands: `make demo` and `make test`. Both create .venv (once) and install everything
# offline-capable from the package registries: torch 2.13.0 (CPU), fairseq-fixed built without build
# isolation (so its build does not pull a CUDA torch), and this package in editable mode.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 cython numpy setuptools wheel
	$(PY) -m pip install -q --no-build-isolation fairseq-fixed==0.12.3.1
	$(PY) -m pip install -q sentencepiece sacrebleu safetensors matplotlib tensorboardX pytest pytest-xdist
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH scripts/demo.sh $(DATA)

# the unit tier (in-process, tiny dimensions), then the end-to-end tier (fairseq-* and our CLIs in subprocesses)
test: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not e2e" tests
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m e2e tests

test-fast: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not e2e" tests

clean:
	rm -rf work
