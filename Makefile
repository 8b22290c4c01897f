# quantstream — the one entry point for building, testing and measuring.
GO        ?= go
PKGS      ?= ./...
BENCHTIME ?= 1s
FUZZTIME  ?= 30s
TESTTIMEOUT ?= 25m
# Large seeds (golden .pth files) make the default minimisation crawl; cap it.
BIN       ?= bin

.PHONY: all build test race bench bench-go bench-e2e fuzz lint check examples testdata demo clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Unit tests, golden parity (unit, modules, e2e) and fuzz seed corpora, with the race detector;
# then the portable kernels alone (purego) and the golden parity at the AVX2 level, since the
# first run uses the best vector level this machine has.
# TESTTIMEOUT: the golden verify and parity packages take several minutes each under
# -race on two cores when every package runs at once; go test's default of 10m per
# package is too close.
test:
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(PKGS)
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) -tags purego ./quant/ ./parity/
	GODEBUG=cpu.avx512f=off $(GO) test -count=1 -timeout $(TESTTIMEOUT) ./parity/

race: test

# Benchmarks print MB/s of input (b.SetBytes), then the end-to-end table (GB/s of
# input, CPU s/GB, peak RSS of real conversions beside the machine's read and write
# ceilings, scripts/bench-e2e.sh: RUNS warm runs each, default 3; BENCH_LARGE=1 adds
# the 16 GB Llama-3-8B-shaped model at 256MiB). CI runs them once with BENCHTIME=1x RUNS=1.
bench: bench-go bench-e2e

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)
	$(GO) test -tags purego -run '^$$' -bench 'Quantize' -benchtime $(BENCHTIME) ./quant/

bench-e2e:
	scripts/bench-e2e.sh

# Real fuzzing: every Fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# Build and run every example on the tiny test models (outputs in one temporary
# directory, removed afterwards). Each Go example is a package main taking -in DIR
# -out DIR; the others (examples/slurm, examples/k8s: scripts and manifests) have no
# main.go and are checked by their tests in `make test`.
examples: build
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for d in examples/*/; do \
	  [ -f $$d/main.go ] || continue; \
	  echo "== $$d"; $(GO) run ./$$d -in testdata/tiny_llama -out $$tmp/$$(basename $$d); \
	done

# Regenerate the tiny test models (deterministic: a fixed seed).
testdata:
	$(GO) run ./cmd/gentestdata -out testdata

# The README's first command: convert the tiny model.
demo: build
	rm -rf out/tiny_llama_nvfp4
	$(BIN)/quantstream convert --in testdata/tiny_llama --out out/tiny_llama_nvfp4 --recipe W4A16_NVFP4_CFG

# What CI runs.
check: lint test examples
	$(MAKE) bench BENCHTIME=1x RUNS=1

clean:
	rm -rf $(BIN) out
