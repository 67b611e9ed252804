# ProtonStream for Go. `make demo` and `make test` are the two commands the
# README promises; everything else is a step of theirs.

GO       ?= go
BIN      := bin/ps_port
GO_FILES := $(shell git ls-files '*.go' 2>/dev/null)

.PHONY: all deps build lint test test-go test-elixir demo clean bench bench-smoke soak soak-smoke fuzz fuzz-smoke

all: build

deps:
	./scripts/deps.sh

build: $(BIN)

$(BIN): $(GO_FILES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $@ ./cmd/ps_port

lint:
	@unformatted=$$(gofmt -l $(GO_FILES)); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd elixir_shim && mix format --check-formatted

# Every test: Go unit and black-box tests (with the race detector), then the
# Elixir shim's ExUnit suite against a real BEAM. Root is needed for the
# cgroup tests; they create and remove their own groups.
test: deps lint test-go test-elixir bench-smoke fuzz-smoke test-otp27

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

test-elixir:
	cd elixir_shim && MIX_ENV=test mix compile --warnings-as-errors --force
	cd elixir_shim && mix test

# The suites that matter across releases again on Erlang/OTP 27 and Elixir
# 1.18 (Debian 13 in a chroot at .otp27/, made on first use in about a
# minute by scripts/otp27.sh; see docs/otp-compat.md): node mode with OTP 27
# owners (and a cluster of OTP 25 and 27 owners), then the shim's ExUnit
# suite, built apart from the host's OTP 25 build.
.PHONY: test-otp27
OTP27_MIX := MIX_BUILD_ROOT=/root/ps_port_build/_build
test-otp27:
	./scripts/otp27.sh create
	$(GO) test -race -count=1 -timeout 20m -tags otp27 -run OTP27 ./node/ ./test/go/
	cd elixir_shim && ../scripts/otp27.sh run -- sh -c '$(OTP27_MIX) mix compile --warnings-as-errors --force && \
	  $(OTP27_MIX) MIX_ENV=test mix compile --warnings-as-errors --force && $(OTP27_MIX) mix test'

# ps_port beside the plain Erlang Port, as ratios (docs/benchmarks.md): every
# scenario, several interleaved rounds, ~5-10 minutes. Writes
# docs/benchmarks.md (between its generated markers) and docs/benchmarks.svg.
bench: deps
	cd elixir_shim && mix run --no-start ../bench/bench.exs

# Every bench scenario once at tiny sizes, so the bench cannot rot (~10 s).
bench-smoke:
	cd elixir_shim && MIX_ENV=test mix run --no-start ../bench/bench.exs --smoke

# The reliability soak (docs/reliability.md): the fault, load and bad-input
# cases mixed at random for DURATION (a Go duration), then the leak counters
# (zombies, processes, cgroups, descriptors, RSS); any leak fails it.
# PS_SOAK_SEED=N replays a run. test-go runs it for 60 s (its default).
DURATION ?= 10m
soak:
	PS_SOAK_DURATION=$(DURATION) $(GO) test -count=1 -timeout 0 -v -run '^TestReliabilitySoak$$' ./test/go/

soak-smoke:
	$(MAKE) soak DURATION=60s

# Fuzz the ETF decoder for FUZZTIME (new crashers land in
# etf/testdata/fuzz/FuzzDecode/); make test runs it for 10 s.
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./etf/

fuzz-smoke:
	$(MAKE) fuzz FUZZTIME=10s

# A contained process streaming to an Elixir owner.
demo: deps
	cd elixir_shim && mix run --no-start ../examples/demo.exs

clean:
	rm -rf bin elixir_shim/_build elixir_shim/priv/ps_port
