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

# Three binaries: ps_port (port mode), ps_port_lean (port mode without
# cgroups, quicker to start: the shim's isolated children without a cgroup)
# and ps_port_node, which "ps_port node" execs from the same directory.
$(BIN): $(GO_FILES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o bin/ ./cmd/ps_port ./cmd/ps_port_lean ./cmd/ps_port_node

lint:
	@unformatted=$$(gofmt -l $(GO_FILES)); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd elixir_shim && mix format --check-formatted

# Every test: Go unit and black-box tests (with the race detector), then the
# Elixir shim's ExUnit suite against a real BEAM. Root is needed for the
# cgroup tests; they create and remove their own groups.
test: deps lint test-otp-host test-go test-elixir bench-smoke fuzz-smoke test-otp-all

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

test-elixir:
	cd elixir_shim && MIX_ENV=test mix compile --warnings-as-errors --force
	cd elixir_shim && mix test

# The suites that matter across releases again on the Erlang/OTP and Elixir
# of other Debian releases (OTP_RELEASES; trixie: OTP 27 / Elixir 1.18, sid:
# the newest, OTP 29 / Elixir 1.20 today), each in a chroot at
# .otp-roots/REL/ that scripts/otp-root.sh makes on first use (about a
# minute; see docs/otp-compat.md): node mode with owners of that release
# (and a cluster of host and root owners), then the shim's ExUnit suite,
# compiled inside the root in a build root of its own (MIX_BUILD_ROOT), so
# no .beam of the host's OTP reaches it. One release alone:
# make test-otp REL=sid. Each run starts with a banner naming its versions;
# every release runs even when an earlier one failed, then the failed ones
# are named.
.PHONY: test-otp test-otp-all test-otp-host
OTP_RELEASES ?= trixie sid
OTP_ROOT_MIX := MIX_BUILD_ROOT=/root/ps_port_build/_build
test-otp-all:
	@failed=""; for rel in $(OTP_RELEASES); do \
	  $(MAKE) --no-print-directory test-otp REL=$$rel || failed="$$failed $$rel"; done; \
	  if [ -n "$$failed" ]; then echo "=== FAILED on:$$failed (make test-otp REL=... runs one alone) ===" >&2; exit 1; fi

test-otp:
	@[ -n "$(REL)" ] || { echo "make test-otp REL=RELEASE: a Debian release, e.g. REL=sid or REL=trixie" >&2; exit 2; }
	./scripts/otp-root.sh $(REL) create
	@echo "=== $$(./scripts/otp-root.sh $(REL) versions) ==="
	PS_OTP_ROOT=$(REL) $(GO) test -race -count=1 -timeout 20m -tags otproot -run '^Test(OTPRoot|Node|Modes)' ./otpdist/ ./test/go/
	cd elixir_shim && ../scripts/otp-root.sh $(REL) run -- sh -c '$(OTP_ROOT_MIX) mix compile --warnings-as-errors --force && \
	  $(OTP_ROOT_MIX) MIX_ENV=test mix compile --warnings-as-errors --force && $(OTP_ROOT_MIX) mix test --warnings-as-errors'
	@echo "=== passed: $$(./scripts/otp-root.sh $(REL) versions) ==="

# The banner of the host's own run (test-go and test-elixir).
test-otp-host:
	@echo "=== $$(./scripts/otp-root.sh host versions) ==="

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

# Fuzz the ETF decoder, the frames of ps_port --shared, and otpdist's term
# walker (seeded with etf's corpus) for FUZZTIME each (new crashers land in
# etf/testdata/fuzz/FuzzDecode/, port/testdata/fuzz/FuzzSharedFrames/ and
# otpdist/testdata/fuzz/FuzzSkipTerm/). make test runs each for 300 000
# inputs (about 10 s here): a count, not a duration, because Go 1.26's fuzz
# coordinator can report "context deadline exceeded" at the end of a timed
# run on a loaded machine with no failing input (golang/go#75804, fixed in
# Go 1.27).
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./etf/
	$(GO) test -run '^$$' -fuzz '^FuzzSharedFrames$$' -fuzztime $(FUZZTIME) ./port/
	$(GO) test -run '^$$' -fuzz '^FuzzSkipTerm$$' -fuzztime $(FUZZTIME) ./otpdist/

fuzz-smoke:
	$(MAKE) fuzz FUZZTIME=300000x

# A contained process streaming to an Elixir owner.
demo: deps
	cd elixir_shim && mix run --no-start ../examples/demo.exs

clean:
	rm -rf bin elixir_shim/_build elixir_shim/priv/ps_port
