# The two set-up commands of the README: `make bench` and `make test`. Both install the locked environment
# first (requirements.lock: every package's exact version and hashes; `make lock` refreshes it).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wmbench-installed
LOCK := requirements.lock
UV_VERSION := 0.13.9

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

.PHONY: install lock bench publish standard publish-standard test
install: $(STAMP)

# Re-resolve the lock from pyproject.toml, requirements.in and constraints.txt (newest versions that fit), with
# hashes, for every platform and Python >= 3.10 with one version per package where possible.
lock:
	python3 -m pip install --quiet uv==$(UV_VERSION)
	python3 -m uv pip compile pyproject.toml requirements.in --extra test --generate-hashes --universal \
	  --fork-strategy fewest --python-version 3.10 -c constraints.txt --custom-compile-command "make lock" \
	  -o $(LOCK)

# The full default matrix, computed (cold on a fresh machine) into runs/default/; portable: CPU kernels
# pinned, so a rerun on a machine of the same CPU family gives the same numbers (docs/statistics.md).
bench: $(STAMP)
	$(VENV)/bin/wmbench run --portable

# Copy runs/default into the committed results/ (leaderboard, claims, site with its headless-Chromium screenshot,
# and the README's generated blocks): the only way results/ changes.
publish: $(STAMP)
	$(VENV)/bin/wmbench publish --from runs/default --to results --screenshot

# The standard leaderboard: the whole matrix on Fashion-MNIST (Debian's dataset-fashion-mnist package; without it,
# a one-line error saying how to get it); `make publish-standard` → results/standard/
standard: $(STAMP)
	$(VENV)/bin/wmbench run --profile standard --portable

publish-standard: $(STAMP)
	$(VENV)/bin/wmbench publish --from runs/standard --to results/standard --profile standard --screenshot

# The test suite on every core (pytest-xdist, one worker per core, each training on one thread; a test file runs
# in one worker, so its module fixtures are built once), listing the 25 slowest tests.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile --durations=25
