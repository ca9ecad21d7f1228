# Two commands for a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.samfast-installed

.PHONY: install demo test test-slow lint bench clean csrc csrc-test gpu-bundle

# pip takes torch 2.14.1 / torchvision 0.29.1 from the machine's local wheel store when it has one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,openvino,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/samfast info
	$(BIN)/samfast bench brats --protocol all --compare torch --out runs/demo-bench-brats

test: $(STAMP)
	$(BIN)/ruff check samfast tests bench
	$(BIN)/python -m pytest -m "not slow"
	$(MAKE) csrc-test

# The tests marked slow (full-size random-weight ViT-B / ViT-H exports, the second whole demo case):
# ~10 more minutes on 2 cores; what they cover runs at small size in `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# libsamfast, the C library (CMakeLists.txt, csrc/): configure, build, then its ctest suite, which
# exports the ONNX (and TorchScript) sets it needs into build/csrc/engines. Needs cmake >= 3.18, a
# C++20 compiler, nlohmann/json and OpenSSL headers (Debian: nlohmann-json3-dev libssl-dev).
# CSRC_CMAKE_FLAGS=-DSAMFAST_WITH_LIBTORCH=OFF builds a library that needs only OpenVINO.
CSRC_BUILD ?= build/csrc
CSRC_JOBS ?= 2
CSRC_CMAKE_FLAGS ?=

csrc: $(STAMP)
	@command -v cmake >/dev/null 2>&1 || { echo "make csrc: cmake not found; install it (Debian: apt-get install cmake)" >&2; exit 1; }
	@command -v $${CXX:-c++} >/dev/null 2>&1 || { echo "make csrc: no C++ compiler ($${CXX:-c++}); install one (Debian: apt-get install g++)" >&2; exit 1; }
	cmake -S . -B $(CSRC_BUILD) -DCMAKE_BUILD_TYPE=Release -DSAMFAST_PYTHON=$(abspath $(BIN))/python $(CSRC_CMAKE_FLAGS)
	cmake --build $(CSRC_BUILD) -j$(CSRC_JOBS)

csrc-test: csrc
	$(BIN)/ruff check csrc/tests
	ctest --test-dir $(CSRC_BUILD) --output-on-failure

bench: $(STAMP)
	$(BIN)/python -m pytest bench/ --benchmark-only --benchmark-json=bench/results/latest.json
	$(BIN)/python bench/compare.py bench/results/latest.json

# The GPU check's bundle (bench/gpu/, bench/README.md): wheels, LiteMedSAM weights, demo arrays and
# the scripts, git-ignored, under the 64 MiB a device run carries beside the working tree.
GPU_BUNDLE ?= build/gpu-bundle

gpu-bundle: $(STAMP)
	$(BIN)/python bench/gpu/bundle.py $(GPU_BUNDLE)

clean:
	rm -rf runs .pytest_cache .ruff_cache engines/*/
