# Airlock — build, demo, test. Everything runs as root on Linux.
# Go from PATH, else where this kind of machine keeps it.
GO      ?= $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)
BIN     := bin/airlock
PKGS    := ./...
export CGO_ENABLED := 0

.PHONY: all build demo test vet bench clean

all: build

build:
	$(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/airlock

# Quick start 1: a demo agent in a pod on built-in defaults, then the diff.
demo: build
	./demo/run.sh

# Quick start 2: the whole test suite (unit, privileged walls, end to end).
test: build
	$(GO) vet $(PKGS)
	AIRLOCK_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m $(PKGS)

bench: build
	./bench/run.sh

clean:
	rm -rf bin
