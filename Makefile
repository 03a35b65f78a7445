# Thin wrapper over CMake. The two commands a user needs:
#   make run   — install dependencies, build, start sluice on the shipped
#                config with the built-in mock provider
#   make test  — install dependencies, build, run every C test and spec
# SANITIZE=1 builds into build-asan/ with AddressSanitizer and UBSan.

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DSLUICE_SANITIZE=ON
else
BUILD ?= build
endif

.PHONY: all deps build run test valgrind bench format clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/sluice run -c sluice.yaml

test: build
	@sh scripts/deps.sh --test
	cd $(BUILD) && ctest --output-on-failure -j 2

# The end-to-end suite with sluice under valgrind's leak checker.
valgrind: build
	@sh scripts/deps.sh --valgrind
	cd $(BUILD) && SLUICE_WRAPPER="valgrind --leak-check=full \
	  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 -q" \
	  ctest --output-on-failure -R '^spec/e2e'

bench: build
	@sh scripts/deps.sh --bench
	sh bench/run.sh

format:
	clang-format -i core/*.c core/*.h spec/c/*.c

clean:
	rm -rf build build-asan
