# The two set-up commands of the README: `make bench` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wmbench-installed

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install bench test
install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/wmbench run

test: $(STAMP)
	$(PY) -m pytest
