# Two entry points for a fresh Debian 12 / Python 3.11 machine with no ROS installed (see README.md):
#   make demo   build a synthetic scene, map it, replay a query bag through the live three-node graph, print figures
#   make test   the test suite (lint first); make test-fast: the quick lane for the edit loop
# Both create the virtualenv on first use: ROS 2 Kilted from its PyPI wheels, torch 2.13.0 (CPU), FAISS, OpenCV, ...
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relocal-installed

.PHONY: demo test test-fast lint venv bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/install_system_deps.sh scripts/build_interfaces.sh $(wildcard interfaces/relocal_msgs/msg/*.msg)
	bash scripts/install_system_deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, rclpy, faiss, cv2, moderngl"  # fail here, not in the tests, if the install broke
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	bash scripts/build_interfaces.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m relocal_ros.evaluation.demo

test: $(STAMP) lint
	$(PY) -m pytest -q test

# the edit loop: everything but the slow, soak and live-graph (ros) tests, in under 2 minutes on 2 cores
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not soak and not ros" test

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/bench_localization.py

clean:
	rm -rf build data/default
