# nodelocaldns — NodeLocal DNS cache for Kubernetes as a CoreDNS plugin.
# `make demo` runs the node lab; `make test` runs every test (as root, the
# privileged ones too). Both install what they need.

SHELL       := /bin/bash
GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
# Debian packages the privileged tests and the lab use: command:package
# (gcc: bin/testdns is built with cgo, for the glibc resolver)
# The image build and its test: podman (with runc: crun refuses this kernel's
# hybrid cgroups) and mmdebstrap (the base from Debian packages, no registry).
IMAGE_DEPS  := podman:podman runc:runc mmdebstrap:mmdebstrap
TEST_DEPS   := iptables:iptables iptables-legacy:iptables ip:iproute2 nft:nftables dig:dnsutils conntrack:conntrack gcc:gcc $(IMAGE_DEPS)
LAB_DEPS    := $(TEST_DEPS) dnsperf:dnsperf
# and the peers `make bench` measures beside this build (bench/peers)
BENCH_DEPS  := $(LAB_DEPS) unbound:unbound dnsdist:dnsdist

.PHONY: all build lab-bins generate test test-unit test-image vet lint clean deps demo bench bench-quick image image-docker test-images lab-outage soak

all: build

build: $(BIN)/coredns

# The lab's programs: the load tool with cgo (glibc resolver), the delaying
# upstream proxy, the lab command.
LAB_BINS    := $(BIN)/testdns $(BIN)/dnsdelay $(BIN)/nodelab
DEMO_C      ?= 200
DEMO_D      ?= 20
lab-bins: $(LAB_BINS)

# The Go packages the lab's programs build from, besides their own.
LAB_SRC     := $(wildcard internal/lab/*.go internal/nsenter/*.go internal/dnsload/*.go)

$(BIN)/testdns: $(wildcard cmd/testdns/*.go internal/dnsload/*.go) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build -trimpath -o $@ ./cmd/testdns

$(BIN)/dnsdelay: $(wildcard cmd/dnsdelay/*.go) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/dnsdelay

$(BIN)/nodelab: $(wildcard cmd/nodelab/*.go) $(LAB_SRC) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/nodelab

# demo: the experiment of the README — DEMO_C concurrent glibc lookups for
# DEMO_D seconds from a pod, through kube-proxy's DNAT and then through the
# node cache, side by side. Root only (network namespaces).
demo:
	@if [ "$$(id -u)" -ne 0 ]; then echo "make demo: the node lab needs root (it makes network namespaces, veth links and iptables rules, inside its own namespaces only): run sudo make demo" >&2; exit 1; fi
	@build/ensure-deps.sh $(LAB_DEPS)
	@$(MAKE) --no-print-directory build lab-bins
	$(BIN)/nodelab demo -root . -c $(DEMO_C) -d $(DEMO_D)s

$(BIN)/coredns: $(shell find . -name '*.go' -not -path './deploy/*' 2>/dev/null) go.mod go.sum plugin.cfg
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./cmd/coredns

# lab-outage: the outage test with the issue's 2-minute outage (CI runs 25 s).
lab-outage: build lab-bins
	NODELOCAL_OUTAGE=full $(GO) test -count=1 -v -timeout 15m -run 'TestOutage' ./internal/lab/

generate:
	$(GO) generate ./build/plugins

# bench: this build (Corefile.example, drop-in, failopen off) against
# unbound, dnsdist, node-cache (NODE_CACHE=/path/to/node-cache), stock
# CoreDNS, the no-cache path and a minimal responder, side by side in the
# node lab, servers on CPU 0 and load on CPU 1, interleaved rounds; writes
# out/bench/bench.json, bench.md and latency.png. About 20 minutes (the
# first run also installs stock CoreDNS into ~/.cache/nodelocaldns, about 6
# more). bench-quick (or BENCH_QUICK=1) is a first look (2 short rounds, no
# stock CoreDNS install). BENCH_FLAGS passes more flags (-peers this,unbound).
# Root only (network namespaces).
BENCH_BINS  := $(BIN)/benchresponder $(BIN)/dnsblast $(BIN)/nodebench
$(BIN)/benchresponder: $(wildcard cmd/benchresponder/*.go) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/benchresponder

$(BIN)/dnsblast: $(wildcard cmd/dnsblast/*.go bench/*.go) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/dnsblast

$(BIN)/nodebench: $(wildcard cmd/nodebench/*.go bench/*.go plugin/nodelocal/rules/*.go) $(LAB_SRC) go.mod go.sum
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/nodebench

bench:
	@if [ "$$(id -u)" -ne 0 ]; then echo "make bench: the node lab needs root (network namespaces; it changes nothing outside them): run sudo make bench" >&2; exit 1; fi
	@build/ensure-deps.sh $(BENCH_DEPS)
	@$(MAKE) --no-print-directory build lab-bins $(BENCH_BINS)
	$(BIN)/nodebench -root . -out out/bench $(if $(filter 1,$(BENCH_QUICK)),-quick) $(BENCH_FLAGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_QUICK=1

# deps installs the Debian packages the privileged tests need (root only;
# a normal user gets a list of what is missing and those tests skip).
deps:
	@build/ensure-deps.sh $(TEST_DEPS) || [ "$$(id -u)" -ne 0 ]
	$(GO) mod download

vet:
	$(GO) vet ./...

test: deps vet build lab-bins test-images
	$(GO) test -race -count=1 -timeout 40m ./...

# test-images: as root, the images the image test runs (build/image/imagetest);
# a normal user's run skips that test.
test-images:
	@if [ "$$(id -u)" -eq 0 ]; then build/image/local.sh; fi

# test-image: the image test verbose (make test runs it too, about 90 s),
# plus the capability experiment: each capability the manifests add, taken
# away in turn (about 30 s more). Root only.
test-image: build lab-bins image
	IMAGE_TEST=caps $(GO) test -count=1 -timeout 20m -v -run "TestImage" ./build/image/imagetest/

# soak: the node lab's bounded soak (internal/lab TestSoak) for SOAK (10m
# by default): mixed hits, misses, TCP, reloads and tampering; the cache's
# RSS, goroutines and fds must stay flat. Figures in out/soak/soak.txt.
# `make test` runs it for 60 s. Root only (network namespaces).
SOAK        ?= 10m
soak:
	@if [ "$$(id -u)" -ne 0 ]; then echo "make soak: the node lab needs root (network namespaces; it changes nothing outside them): run sudo make soak" >&2; exit 1; fi
	@build/ensure-deps.sh $(LAB_DEPS)
	@$(MAKE) --no-print-directory build lab-bins
	SOAK=$(SOAK) $(GO) test -count=1 -timeout 2h -run '^TestSoak$$' -v ./internal/lab/

# test-unit skips the package set-up and the binary: quick feedback.
test-unit:
	$(GO) test -count=1 ./...

# image builds the two images (nodelocaldns:dev, nodelocaldns:dev-static)
# into podman with no registry: the base from Debian packages (mmdebstrap,
# cached in ~/.cache/nodelocaldns), the binary from the host's Go, the config
# from build/image/Dockerfile. Root only.
image:
	@if [ "$$(id -u)" -ne 0 ]; then echo "make image: needs root (mmdebstrap and podman as root); with a registry and an engine, make image-docker" >&2; exit 1; fi
	@build/ensure-deps.sh $(IMAGE_DEPS)
	build/image/local.sh

# image-docker builds from build/image/Dockerfile with docker, podman or
# buildah (a registry must serve the golang and debian images), and says
# clearly when no engine is there.
image-docker:
	build/image/build.sh

lint: vet
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN) out
