# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CLI    := $(VENV)/bin/tflite-quantmcu
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dataset-fashion-mnist libflatbuffers-dev
DEMO_MODEL := testdata/fashion_mnv2_r96_int8.tflite
DEMO_OUT   := build/demo

.PHONY: demo test bench bench-kernels deps apt-deps fixtures clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,bench,tf]'
	touch $@

deps: $(VENV)/.installed

# Cross compiler and emulator for the Cortex-M tests; skipped (tests say why) when not root.
apt-deps:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	    && [ -d /usr/share/datasets/fashion-mnist ] && [ -f /usr/include/flatbuffers/flexbuffers.h ]; then \
	  echo "apt-deps: cross compiler, qemu, Fashion-MNIST and flatbuffers headers present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null) \
	    || echo "apt-deps: could not install $(APT_PACKAGES); Cortex-M tests and accuracy figures will be skipped"; \
	else \
	  echo "apt-deps: not root; Cortex-M tests will be skipped unless $(APT_PACKAGES) are installed"; \
	fi

fixtures: deps
	$(PY) testdata/make_fixtures.py

DEMO_CALIB := testdata/generated/fashion_calib_r96.npz
DEMO_EVAL  := testdata/generated/fashion_test_r96.npz

# Model-ready calibration images (from the committed 28x28 set) and the first 1000 test images.
$(DEMO_EVAL): testdata/fashion_mnist_calib.npz testdata/make_datasets.py | deps apt-deps
	$(PY) testdata/make_datasets.py --limit 1000

demo: deps fixtures $(DEMO_EVAL)
	mkdir -p $(DEMO_OUT)
	$(CLI) analyze $(DEMO_MODEL) --json $(DEMO_OUT)/analysis.json
	$(CLI) convert $(DEMO_MODEL) --out $(DEMO_OUT) --sram 256KB --flash 1MB --policy quantmcu \
	  --calibration $(DEMO_CALIB) --calibration-limit 64 --eval-data $(DEMO_EVAL)

test: deps apt-deps fixtures
	$(PY) -m pytest -q tests

bench: deps apt-deps fixtures
	$(PY) bench/memory_vs_tflm.py
	$(PY) bench/patch_memory.py
	$(PY) bench/quantmcu_accuracy.py
	$(PY) bench/bundled_top1_runtimes.py
	$(PY) bench/quantmcu_speed.py
	$(PY) bench/kernels_cortexm.py

bench-kernels: deps apt-deps
	$(PY) bench/kernels_cortexm.py

clean:
	rm -rf build testdata/generated cmixnn_bridge/build
