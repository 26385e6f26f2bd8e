# Two entry points do all the set-up on a fresh machine: `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test browser demo quickstart bench lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,examples,dev]"
	touch $(STAMP)

# The dashboard's browser test drives Debian's chromium through its
# chromedriver (nothing is downloaded at test time). Installed here when run
# as root; elsewhere the test is skipped and says why. Once installed, the
# test must run: KERAS_GATED_REQUIRE_BROWSER turns a skip into a failure.
BROWSER := $(shell command -v chromium >/dev/null && command -v chromedriver >/dev/null && echo 1)

browser:
	@if [ -n "$(BROWSER)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing chromium and chromium-driver for the dashboard's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| echo "Could not install chromium: the browser test will be skipped"; \
	else echo "No chromium, and no root apt-get to install it: the browser test will be skipped"; fi

# Two pytest-xdist workers: most of the suite's time is XLA compiling the
# layers' loops for each new shape, one core at a time.
TEST_WORKERS ?= 2

# The whole suite runs on TensorFlow; then, one process per backend, the
# tests marked `backends` run on JAX and PyTorch (tests/conftest.py).
OTHER_BACKENDS ?= jax torch

# Every backend runs even when one fails; the target fails if any did.
test: $(STAMP) browser
	@status=0; \
	TF_CPP_MIN_LOG_LEVEL=2 KERAS_GATED_REQUIRE_BROWSER=$$(command -v chromium >/dev/null && command -v chromedriver >/dev/null && echo 1) \
		$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS) || status=1; \
	for backend in $(OTHER_BACKENDS); do \
		echo "== KERAS_BACKEND=$$backend"; \
		TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=$$backend \
			$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS) || status=1; \
	done; \
	exit $$status

# The adding problem at T=100: SimpleRNN, LSTM, GRU and our two layers.
demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/keras-gated compare --task adding \
		--length 100 --epochs 20 --samples 6000 --units 32 \
		--learning-rate 0.01 --out runs/demo

quickstart: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/quickstart.py

bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/bench_layers.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_gated tests benchmarks examples
	$(VENV)/bin/ruff format --check keras_gated tests benchmarks examples

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
