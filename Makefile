# The two set-up commands of the README: `make bench` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wmbench-installed

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install bench publish standard publish-standard test
install: $(STAMP)

# The full default matrix, computed (cold on a fresh machine) into runs/default/; portable: CPU kernels
# pinned, so the numbers are the same on any x86-64 machine with AVX2.
bench: $(STAMP)
	$(VENV)/bin/wmbench run --portable

# Copy runs/default into the committed results/ (leaderboard, claims, site with its headless-Chromium screenshot,
# and the README's generated blocks): the only way results/ changes.
publish: $(STAMP)
	$(VENV)/bin/wmbench publish --from runs/default --to results --screenshot

# The standard leaderboard: the whole matrix on Fashion-MNIST (Debian's dataset-fashion-mnist package; without it,
# a one-line error saying how to get it), ≤ 90 min cold on 2 cores; `make publish-standard` → results/standard/
standard: $(STAMP)
	$(VENV)/bin/wmbench run --profile standard --portable

publish-standard: $(STAMP)
	$(VENV)/bin/wmbench publish --from runs/standard --to results/standard --profile standard --screenshot

test: $(STAMP)
	$(PY) -m pytest
