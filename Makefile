# imagegate — every target works on a bare machine with Go installed; tools
# the targets need are installed with `go install` at pinned versions.

GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
BUF       := $(GOBIN)/buf
BUF_VERSION              := v1.75.0
PROTOC_GEN_GO_VERSION    := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
BENCH_DIR := $(shell mktemp -d 2>/dev/null || echo /tmp/imagegate-bench)

.PHONY: test vet bench generate check-generated fuzz run clean

## test: vet, then the whole suite with the race detector (fuzz seed corpora included)
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...

vet:
	$(GO) vet ./...

## bench: Go micro-benchmarks, then the load script (gateway vs bare fasthttp)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./cache/ ./edge/ ./gateway/ ./inference/...
	$(GO) build -o $(BENCH_DIR)/imagegate ./cmd/imagegate
	$(GO) build -o $(BENCH_DIR)/loadbench ./internal/loadbench
	$(BENCH_DIR)/loadbench -imagegate $(BENCH_DIR)/imagegate
	rm -rf $(BENCH_DIR)

## generate: regenerate the Connect/protobuf code from proto/ (committed; CI does not need buf)
generate: $(BUF)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_VERSION)
	PATH="$(GOBIN):$$PATH" $(BUF) generate

$(BUF):
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## run: the whole system on embedded defaults
run:
	$(GO) run ./cmd/imagegate

clean:
	rm -rf ./data
