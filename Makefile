# Two entry points for people and CI (see README):
#   make run   - install what is missing, build, start legiond with a sample app
#   make test  - install what is missing, build (plain and ASan/UBSan), run every test
# Everything else here is a building block of those two.

BUILD      ?= build
BUILD_ASAN ?= build-asan
# Debian's interpreter: the one python3-pytest is installed for, whatever
# python3 comes first on PATH.
PYTHON     ?= /usr/bin/python3

.PHONY: all deps build build-asan run sandbox-demo test test-unit test-asan test-e2e bench clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) -Dsanitize=true -Dbuildtype=debug

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

run: build
	./scripts/run.sh $(BUILD)

sandbox-demo: build
	./scripts/sandbox-demo.sh $(BUILD)

test-unit: build
	meson test -C $(BUILD) --print-errorlogs

test-asan: build-asan
	meson test -C $(BUILD_ASAN) --print-errorlogs

test-e2e: build
	LEGION_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e

test: test-unit test-asan test-e2e

bench: build
	./bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
