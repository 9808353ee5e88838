# Every target installs what is missing first, so each works as the first command on a fresh machine.
VENV := .venv
CKDEMO := $(VENV)/bin/ckdemo
DEMO ?= scripts/ha-failover-demo

.PHONY: setup demo demo-remote test lint fuzz menu clean

setup:
	@bash scripts/bootstrap

demo: setup
	$(CKDEMO) run $(DEMO)

# the same story with real processes: each member served by its own p11-kit server, member 1 killed
demo-remote: setup
	$(CKDEMO) --home .ckdemo-remote init --remote
	$(CKDEMO) --home .ckdemo-remote run scripts/ha-remote-demo

# the suite on TEST_WORKERS pytest-xdist workers, each test module on one worker (tests/conftest.py);
# most tests wait on subprocesses, so more workers than cores pays. TEST_WORKERS=0: one process
TEST_WORKERS ?= 4
test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

# ruff's checks as pyproject.toml configures them (CI runs this before the tests), on the package,
# the tests and the Python scripts (scripts/ without an extension: found by their #! line), and
# ruff's format of the Python blocks of the Markdown pages
PY_SCRIPTS := $(shell awk 'FNR == 1 && /^\#!.*python/ { print FILENAME }' scripts/*)
lint: setup
	$(VENV)/bin/ruff check ckdemo tests $(PY_SCRIPTS)
	$(VENV)/bin/ruff format --check ckdemo tests $(PY_SCRIPTS) README.md docs

# the long fuzz run (the suite runs 2,000 interactions); figures appended to docs/FUZZ.md
FUZZ_COUNT ?= 20000
FUZZ_SEED ?= 1
fuzz: setup
	$(VENV)/bin/python scripts/fuzz --count $(FUZZ_COUNT) --seed $(FUZZ_SEED) --keep .fuzz-failed --report docs/FUZZ.md

menu: setup
	$(CKDEMO)

clean:
	rm -rf .ckdemo .ckdemo-remote .fuzz-failed .pytest_cache build *.egg-info

# the differential test, the long run: the HA slot against one SoftHSM2 token (the suite runs a
# short one, tests/test_difftest.py); figures appended to docs/DIFFTEST.md, exit 1 on a defect
.PHONY: difftest
DIFFTEST_MINUTES ?= 10
DIFFTEST_SEED ?= 1
difftest: setup
	$(VENV)/bin/python scripts/difftest --seed $(DIFFTEST_SEED) --minutes $(DIFFTEST_MINUTES) --calls 150 --faults 1 --shrink 20 --report docs/DIFFTEST.md

# the same with remote members (p11-kit server processes) killed, hung and failed, half of the
# faults during calls
.PHONY: difftest-remote
difftest-remote: setup
	$(VENV)/bin/python scripts/difftest --remote --seed $(DIFFTEST_SEED) --minutes $(DIFFTEST_MINUTES) --calls 150 --faults 1 --shrink 0 --report docs/DIFFTEST.md
