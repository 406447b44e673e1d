# netwatch: a custom Velociraptor build with the netstat_watch event plugin.
#
#   make            build/velociraptor (linux/amd64, GUI included)
#   make windows    build/velociraptor.exe
#   make bpf        regenerate the kernel-event BPF objects (clang, bpftool)
#   make test       everything CI runs
#   make run        local server + client + webhook receiver on loopback
#   make load       200 virtual clients, 2 min of traffic, one server (build/load-report.md)
#
# Velociraptor's source is staged from the Go module cache into
# build/upstream (tools/build/stage.sh); nothing of it is committed.
# Another release (docs/SECURITY.md):
#   make VELOCIRAPTOR_VERSION=v0.77.3             from the Go module proxy
#   make UPSTREAM_SRC=/path/to/velociraptor      a checkout of a release tag
#   UPSTREAM_REPLACE="mod=mod@version ..."        extra go.work replace lines

SHELL      := /bin/bash
GO         ?= go
BUILD      := build
STAGE      := $(BUILD)/upstream
BINARY     := $(BUILD)/velociraptor
TAGS_LINUX := server_vql extras release yara
TAGS_CROSS := server_vql extras release
FUZZTIME   ?= 5s

# The Go sources compiled into the binary (tools/ are not).
GO_SOURCES := $(shell find vql -name '*.go' -o -name '*.o' 2>/dev/null) go.mod $(wildcard go.sum)
ARTIFACTS  := $(wildcard artifacts/*.yaml) $(wildcard docs/vql/*.yaml)

STAGED     := $(STAGE)/.netwatch-staged
ASSETS     := $(STAGE)/artifacts/assets/ab0x.go

PACK       := $(BUILD)/netwatch-artifacts.zip

BPF_DIR    := vql/kevents

.PHONY: bpf all advisories windows darwin wine-smoke pack stage test unit race fuzz golden cross vet run run-fresh bench bench-quick test-browser soak load clean distclean

all: $(BINARY) advisories

# Which release to stage; the script reads them from the environment.
export VELOCIRAPTOR_VERSION UPSTREAM_SRC UPSTREAM_REPLACE

# The script runs every time (a second when nothing changed: it compares the
# source it would stage with the staged one) and touches the marker only
# when the staged source or go.work changed.
$(STAGED): FORCE
	@tools/build/stage.sh upstream

stage: $(STAGED)

# One line when the staged release has known advisories.
advisories: $(STAGED)
	@tools/build/stage.sh advisories

FORCE:

$(ASSETS): $(STAGED) $(ARTIFACTS)
	tools/build/stage.sh artifacts

$(BINARY): $(ASSETS) $(GO_SOURCES)
	$(GO) build -tags "$(TAGS_LINUX)" -o $@ ./$(STAGE)/bin
	@$@ version | head -3

windows: $(BUILD)/velociraptor.exe

# Regenerates the committed BPF objects and their Go bindings (needs clang,
# llvm and bpftool: apt-get install clang llvm libbpf-dev bpftool). The
# vmlinux.h of the running kernel is only used for type names and field
# paths: CO-RE relocates them on the kernel that loads the objects.
bpf:
	@mkdir -p $(BUILD)/bpf
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $(BUILD)/bpf/vmlinux.h
	cd $(BPF_DIR) && $(GO) generate ./...

$(BUILD)/velociraptor.exe: $(ASSETS) $(GO_SOURCES)
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build -tags "$(TAGS_CROSS)" -o $@ ./$(STAGE)/bin

# The artifact pack for the GUI's "Upload Artifact Pack" on an existing
# server (whose clients then use the diff(netstat()) fallback).
pack: $(PACK)

$(PACK): $(wildcard artifacts/*.yaml)
	@mkdir -p $(BUILD)
	rm -f $@
	cd artifacts && zip -q -X ../$@ *.yaml
	@echo "wrote $@"

darwin: $(BUILD)/velociraptor-darwin-arm64 $(BUILD)/velociraptor-darwin-amd64

$(BUILD)/velociraptor-darwin-%: $(ASSETS) $(GO_SOURCES)
	CGO_ENABLED=0 GOOS=darwin GOARCH=$* $(GO) build -tags "$(TAGS_CROSS)" -o $@ ./$(STAGE)/bin

# Runs the Windows binary under Debian's wine against a loopback connection
# (installs wine64 and mingw if missing; about 2 minutes cold).
wine-smoke: $(BUILD)/velociraptor.exe
	tools/wine/smoke.sh $(abspath $(BUILD)/velociraptor.exe)

# --- tests -----------------------------------------------------------------

test: vet unit race fuzz cross golden

vet: $(ASSETS)
	@unformatted=$$(gofmt -l vql tools internal); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# The packages with goroutines of their own (the plugin and its state
# writer, the webhook sender and its retry loop) run under the race
# detector in `race`, the others here.
RACE_PKGS := ./vql/netstat_watch ./vql/webhook

unit: $(BINARY)
	# One package at a time: the end-to-end, benchmark and plugin tests
	# all time real sockets and processes on a 2-core machine.
	NETWATCH_BINARY=$(abspath $(BINARY)) $(GO) test -count=1 -p 1 \
	  $$($(GO) list ./... | grep -v -x $(patsubst ./%,-e github.com/netwatch-dfir/netwatch/%,$(RACE_PKGS)))

race: $(ASSETS)
	$(GO) test -race -count=1 -p 1 $(RACE_PKGS)

# Each fuzz target runs briefly from its checked-in seed corpus. Go's fuzzer
# can end a run with "context deadline exceeded" when -fuzztime expires while
# it is still minimizing a new input, without any failing input: that run is
# tried once more. A real failure writes its input under testdata/fuzz.
fuzz: $(ASSETS)
	@set -e; for pkg in $$($(GO) list ./vql/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); then break; fi; \
	      if [ $$try = 1 ] && echo "$$out" | grep -q 'context deadline exceeded' && \
	         ! echo "$$out" | grep -q 'Failing input written'; then \
	        echo "fuzz $$f: the fuzzer's own deadline ended the run, no failing input; once more"; continue; fi; \
	      echo "$$out"; exit 1; \
	    done; \
	  done; \
	done

# The plugin packages must compile for every OS the clients run.
cross: $(ASSETS)
	GOOS=windows $(GO) vet ./vql/...
	GOOS=darwin $(GO) vet ./vql/...
	GOOS=freebsd $(GO) vet ./vql/...

# A minute of churn at 2,000 connections a second, then memory must come
# back down once the TIME_WAIT remnants expire (about 3 minutes in all).
soak: $(ASSETS)
	NETWATCH_SOAK=1m $(GO) test -count=1 -run TestChurnNoLossNoDup -v -timeout 10m ./vql/netstat_watch/

# NETWATCH_LOAD_CLIENTS (200) virtual clients of upstream's pool_client
# against one server, all running the client artifact; one connection must
# alert once per client, then NETWATCH_LOAD_SECONDS (120) of traffic, some
# of it alerting: nothing doubled or lost, no event table pushed. Figures
# in build/load-report.md (about 6 minutes).
NETWATCH_LOAD_CLIENTS ?= 200
NETWATCH_LOAD_SECONDS ?= 120
load: $(BINARY)
	NETWATCH_BINARY=$(abspath $(BINARY)) NETWATCH_LOAD_CLIENTS=$(NETWATCH_LOAD_CLIENTS) \
	NETWATCH_LOAD_SECONDS=$(NETWATCH_LOAD_SECONDS) \
	NETWATCH_LOAD_REPORT=$(abspath $(BUILD))/load-report.md \
	  $(GO) test -count=1 -run '^TestPool$$' -v -timeout 20m ./tools/e2e/

golden: $(BINARY)
	tools/golden/run.sh $(BINARY)

# A self-contained deployment on loopback: server + client + webhook receiver.
run: $(BINARY)
	$(GO) run ./tools/run -binary $(BINARY) -dir $(BUILD)/run

run-fresh: $(BINARY)
	$(GO) run ./tools/run -binary $(BINARY) -dir $(BUILD)/run -fresh

test-browser: $(BINARY)
	tools/browser/run.sh $(BINARY)

# --- benchmark (docs/BENCHMARKS.md) -----------------------------------------

bench: $(BINARY)
	$(GO) run ./tools/bench -binary $(BINARY) -out docs

bench-quick: $(BINARY)
	$(GO) run ./tools/bench -binary $(BINARY) -quick -out $(BUILD)/bench-quick

clean:
	rm -f $(BINARY) $(BUILD)/velociraptor.exe $(BUILD)/velociraptor-darwin-*

distclean:
	rm -rf $(BUILD) go.work go.work.sum
