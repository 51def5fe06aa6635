# vipmgr: `make test` installs everything it needs (idempotent) and runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := etcd-server nftables conntrack conntrackd iproute2 tshark prometheus keepalived iputils-ping procps
PYTEST_ARGS ?=

.PHONY: deps system-deps venv test demo clean

## system-deps: Debian packages (etcd, nft, conntrack, tshark, promtool, keepalived)
system-deps:
	@bash scripts/install-system-deps.sh $(APT_PACKAGES)

## venv: the Python virtualenv with vipmgr installed editable
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

deps: system-deps venv

## test: the whole suite (unit, simulator, netns, etcd, promtool)
test: deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## demo: the seed scenario in a namespace lab (see README)
demo: deps
	$(VENV)/bin/vipmgr lab demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
