# nodelocaldns — NodeLocal DNS cache for Kubernetes as a CoreDNS plugin.
# `make demo` runs the node lab; `make test` runs every test (as root, the
# privileged ones too). Both install what they need.

SHELL       := /bin/bash
GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
# Debian packages the privileged tests and the lab use: command:package
TEST_DEPS   := iptables:iptables iptables-legacy:iptables ip:iproute2 nft:nftables dig:dnsutils conntrack:conntrack
LAB_DEPS    := $(TEST_DEPS) dnsperf:dnsperf

.PHONY: all build generate test test-unit vet lint clean deps demo bench image

all: build

build: $(BIN)/coredns

$(BIN)/coredns: $(shell find . -name '*.go' -not -path './deploy/*' 2>/dev/null) go.mod go.sum plugin.cfg
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./cmd/coredns

generate:
	$(GO) generate ./build/plugins

# deps installs the Debian packages the privileged tests need (root only;
# a normal user gets a list of what is missing and those tests skip).
deps:
	@build/ensure-deps.sh $(TEST_DEPS) || [ "$$(id -u)" -ne 0 ]
	$(GO) mod download

vet:
	$(GO) vet ./...

test: deps vet build
	$(GO) test -race -count=1 -timeout 40m ./...

# test-unit skips the package set-up and the binary: quick feedback.
test-unit:
	$(GO) test -count=1 ./...

# image builds the container image with docker, podman or buildah, and says
# clearly when no engine is there.
image:
	build/image/build.sh

lint: vet
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN) out
