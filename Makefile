# Every target installs what is missing first, so each works as the first command on a fresh machine.
VENV := .venv
CKDEMO := $(VENV)/bin/ckdemo
DEMO ?= scripts/ha-failover-demo

.PHONY: setup demo demo-remote test menu clean

setup:
	@bash scripts/bootstrap

demo: setup
	$(CKDEMO) run $(DEMO)

# the same story with real processes: each member served by its own p11-kit server, member 1 killed
demo-remote: setup
	$(CKDEMO) --home .ckdemo-remote init --remote
	$(CKDEMO) --home .ckdemo-remote run scripts/ha-remote-demo

test: setup
	$(VENV)/bin/pytest -q

menu: setup
	$(CKDEMO)

clean:
	rm -rf .ckdemo .ckdemo-remote .pytest_cache build *.egg-info
