# Tern — the two commands (see README.md):
#   make run    install deps, build, start a mail system on loopback (Ctrl-C stops it)
#   make test   install deps, build, run every test (unit, integration, fuzz smoke)
# Also: make build, make fuzz, make clean. SAN=1 builds with ASan+UBSan (in build-san/).

SAN ?= 0
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(SAN),1)
BUILD ?= build-san
CMAKE_FLAGS := -DSAN=ON -DCMAKE_BUILD_TYPE=Debug
else
BUILD ?= build
CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=RelWithDebInfo
endif
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 10
# make run: NODES ternd behind HAProxy (2..5); NODES=1 is one ternd on the classic ports, alone
NODES ?= 3
MAKEFLAGS += --no-print-directory
PYTEST := /usr/bin/python3 -m pytest

.PHONY: all deps build run test unit integration fuzz fuzz-smoke clean

all: build

deps:
	@./ops/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	@./ops/run-demo.sh $(BUILD) $(NODES)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

integration: build
	TERN_BUILD_DIR=$(abspath $(BUILD)) $(PYTEST) -q tests/integration

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	TERN_BUILD_DIR=$(abspath $(BUILD)) $(PYTEST) -q tests/integration
	@$(MAKE) --no-print-directory fuzz-smoke

fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DSAN=ON -DTERN_FUZZ=ON \
		-DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

# every fuzz target runs briefly on its seed corpus; a crash fails the run
fuzz-smoke: fuzz
	./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf build build-san $(FUZZ_BUILD)
