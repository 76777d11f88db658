# wtool: two commands on a fresh machine, `make demo` and `make test`; both install what is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PREFIX ?= /usr/local
SWIFT ?= swift
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CLIENTS_VENV := .venv-clients
CLIENTS_PY := $(CLIENTS_VENV)/bin/python
APT_PACKAGES := libopenblas-dev liblapacke-dev zlib1g-dev pkg-config
DEBUG_BIN := .build/debug/wtool
RELEASE_BIN := .build/release/wtool
DEMO_OUT := /tmp/wtool-demo

.PHONY: all deps venv clients-venv build release test test-swift test-interop test-clients test-sanitize test-memory fuzz demo install bench fixtures clean

all: build

## deps: system libraries (apt-get when root, else the command to run) and the Python venv.
deps: venv
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

## venv: pinned Python packages for the fixtures, the interop suite and the benchmarks.
venv: $(VENV)/.installed
$(VENV)/.installed: Fixtures/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r Fixtures/requirements.txt
	touch $@

## clients-venv: the real consumers (torch, transformers, PEFT, compressed-tensors, llama-cpp-python,
## pinned in Tests/clients/requirements.txt) in their own environment. torch's Linux wheel brings
## several GB of CUDA libraries (it runs on the CPU) and llama-cpp-python builds llama.cpp with cmake
## (about 5 minutes on 2 cores): minutes once, so not part of `make test` or CI.
clients-venv: $(CLIENTS_VENV)/.installed
$(CLIENTS_VENV)/.installed: Tests/clients/requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(CLIENTS_PY) -m pip install -q --disable-pip-version-check -r Tests/clients/requirements.txt
	touch $@

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: build
	$(MAKE) --no-print-directory test-swift test-interop

test-swift:
	WTOOL_BIN=$(abspath $(DEBUG_BIN)) $(SWIFT) test --disable-swift-testing

test-interop:
	WTOOL=$(abspath $(DEBUG_BIN)) $(VPY) -m pytest -q Tests/interop

## test-clients: transformers, PEFT, compressed-tensors and llama.cpp load what wtool writes.
test-clients: build clients-venv
	WTOOL=$(abspath $(DEBUG_BIN)) $(CLIENTS_PY) -m pytest -q -p no:cacheprovider Tests/clients

## test-sanitize: swift test under AddressSanitizer, then under ThreadSanitizer (two builds of
## their own, minutes each; not in CI).
test-sanitize: deps
	$(SWIFT) build --scratch-path .build-asan --sanitize=address
	WTOOL_BIN=$(abspath .build-asan/debug/wtool) LSAN_OPTIONS=suppressions=$(abspath Tests/sanitize/lsan.supp) \
	  $(SWIFT) test --scratch-path .build-asan --sanitize=address --disable-swift-testing
	$(SWIFT) build --scratch-path .build-tsan --sanitize=thread
	WTOOL_BIN=$(abspath .build-tsan/debug/wtool) TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --scratch-path .build-tsan --sanitize=thread --disable-swift-testing

## test-memory: every writing subcommand on a generated ~6 GB checkpoint inside a 1.5 GB memory
## cgroup (root; skipped otherwise), printing each one's peak RSS. Writes ~12 GB under /tmp; minutes.
test-memory: release
	WTOOL=$(abspath $(RELEASE_BIN)) $(VPY) -m pytest -q -s -p no:cacheprovider Tests/memory

## fuzz: libFuzzer on every parser of strangers' input (FUZZ_RUNS executions each, default 100000;
## minutes; not in CI). Reproducers of failures land in Tests/fuzz/crashes/.
fuzz: build
	WTOOL=$(abspath $(DEBUG_BIN)) Tests/fuzz/run.sh

## demo: real jobs on the fixtures: inspect; convert to sharded bf16 and diff against the original;
## a mergekit TIES recipe, compared with mergekit's own output; the digits MLPs aligned (Git Re-Basin)
## and merged at the midpoint.
demo: release
	@rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(RELEASE_BIN) inspect Fixtures/tiny-llama/ft-sharded --stats --include 'model.layers.0.*'
	$(RELEASE_BIN) convert Fixtures/tiny-llama/ft-sharded -o $(DEMO_OUT)/ft-bf16 --dtype bf16 --shard-size 20KB
	@ls -l $(DEMO_OUT)/ft-bf16
	$(RELEASE_BIN) diff Fixtures/tiny-llama/ft-sharded $(DEMO_OUT)/ft-bf16 --atol 0.01
	@$(VPY) Tests/bench/summarize_report.py $(DEMO_OUT)/ft-bf16/wtool-report.json
	$(RELEASE_BIN) merge --config Fixtures/mergekit/ties.yml -o $(DEMO_OUT)/ties
	$(RELEASE_BIN) diff $(DEMO_OUT)/ties Fixtures/mergekit/outputs/ties.safetensors --atol 1e-6
	$(RELEASE_BIN) permute-match --reference Fixtures/permute/a.safetensors Fixtures/permute/b.safetensors -o $(DEMO_OUT)/b-aligned.safetensors --verify
	$(RELEASE_BIN) merge --method linear Fixtures/permute/a.safetensors $(DEMO_OUT)/b-aligned.safetensors --weight 0.5,0.5 -o $(DEMO_OUT)/ab-merged.safetensors

install: release
	install -D -m 755 $(RELEASE_BIN) $(DESTDIR)$(PREFIX)/bin/wtool
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/

## bench: wtool against the read+write floor and numpy peers on generated checkpoints (ratios).
bench: release clients-venv
	$(VPY) Tests/bench/bench_quant_kernels.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_convert.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_merge.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_prune.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_quantize.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_gguf_export.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_lowrank.py --wtool $(RELEASE_BIN)
	$(VPY) Tests/bench/bench_permute.py --wtool $(RELEASE_BIN)

## fixtures: regenerate every byte in Fixtures/ (committed; this checks they are reproducible).
fixtures: venv
	$(VPY) Fixtures/make_fixtures.py

clean:
	rm -rf .build $(VENV) $(CLIENTS_VENV) $(DEMO_OUT)
