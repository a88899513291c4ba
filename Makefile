# The two README commands: `make demo` and `make test`. Both create .venv (once) and install everything
# offline-capable from the package registries: torch 2.13.0 (CPU), fairseq-fixed built without build
# isolation (so its build does not pull a CUDA torch), and this package in editable mode.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: install demo test test-fast study clean

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

# The converged study (issue 23) in the background, every session: its runner and trainers run from a worktree
# pinned at this commit (edits here do not reach them), resume from their checkpoints or the ledger, and adopt what
# an earlier runner left training. Log: work/study.log; progress: the same command with --status.
STUDY_DATA ?= ../shared/data/multi30k
STUDY_TREE ?= ../study-tree
STUDY_ARGS := --parts tune,core,width,followup,prune --grid lr2e-3-d0.3,lr8e-3-d0-c0 \
	--ledger $(abspath benchmarks/study_runs/multi30k) --jobs 2 --threads 1
study: $(STAMP)
	@if pgrep -f "[b]enchmarks/study.py .*--work $(abspath work/study) " >/dev/null; then \
		echo "study: a runner is running already (work/study.log)"; exit 1; fi
	test -d $(STUDY_TREE) || git worktree add --detach $(STUDY_TREE) HEAD
	git -C $(STUDY_TREE) checkout -q -f --detach $$(git rev-parse HEAD)
	mkdir -p work
	cd $(STUDY_TREE) && PYTHONPATH=$(abspath $(STUDY_TREE)) setsid nohup nice -n 5 $(abspath $(PY)) \
		benchmarks/study.py $(abspath $(STUDY_DATA)) --work $(abspath work/study) $(STUDY_ARGS) \
		>> $(abspath work/study.log) 2>&1 &
	@echo "study: runner started at $$(git rev-parse --short HEAD); log work/study.log"

clean:
	rm -rf work
