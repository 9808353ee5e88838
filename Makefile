# Every target installs what is missing first, so each works as the first command on a fresh machine.
VENV := .venv
CKDEMO := $(VENV)/bin/ckdemo
DEMO ?= scripts/ha-failover-demo

.PHONY: setup demo test menu clean

setup:
	@bash scripts/bootstrap

demo: setup
	$(CKDEMO) run $(DEMO)

test: setup
	$(VENV)/bin/pytest -q

menu: setup
	$(CKDEMO)

clean:
	rm -rf .ckdemo .pytest_cache build *.egg-info
