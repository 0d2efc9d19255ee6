# imagegate — every target works on a bare machine with Go installed; tools
# the targets need are installed with `go install` at pinned versions.

GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
BUF       := $(GOBIN)/buf
BUF_VERSION              := v1.75.0
PROTOC_GEN_GO_VERSION    := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
BENCH_DIR := $(shell mktemp -d 2>/dev/null || echo /tmp/imagegate-bench)

# Real protocol peers the tests run against, installed into .tools/bin.
TOOLS_BIN           := $(CURDIR)/.tools/bin
VERSITYGW_VERSION   := v1.8.0
STRIPE_MOCK_VERSION := v0.203.0
SYSTEM_PYTHON       := /usr/bin/python3
CHROMIUM            := /usr/bin/chromium
AXE_CORE_VERSION    := 4.14.1
AXE_JS              := $(CURDIR)/.tools/node_modules/axe-core/axe.min.js
SUDO                := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test vet tools bench generate check-generated fuzz run clean

## test: install the test peers, vet, then the whole suite with the race
## detector (fuzz seed corpora included). A test whose peer is missing fails
## here instead of skipping, and internal/noskip fails the run on any skip.
test: tools vet
	IMAGEGATE_TEST_REQUIRE_PEERS=1 IMAGEGATE_TEST_TOOLS=$(TOOLS_BIN) GO=$(GO) \
	  $(GO) run ./internal/noskip -race -count=1 -timeout 30m ./...

## tools: install what the tests need when it is missing (idempotent)
tools: $(TOOLS_BIN)/versitygw $(TOOLS_BIN)/stripe-mock smtp-server postgresql chromium $(AXE_JS)

$(TOOLS_BIN)/versitygw:
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(TOOLS_BIN)/stripe-mock:
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

# The SMTP peer is aiosmtpd from Debian, run by the system Python.
.PHONY: smtp-server
smtp-server:
	@$(SYSTEM_PYTHON) -c 'import aiosmtpd' 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3-aiosmtpd; }

# PostgreSQL from Debian: the tests start throwaway clusters with its
# initdb, which Debian keeps in /usr/lib/postgresql/<version>/bin.
.PHONY: postgresql
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

# The browser tests drive Debian's chromium through chromedp
# (internal/browsertest) and run axe-core from npm inside the pages.
.PHONY: chromium
chromium:
	@[ -x $(CHROMIUM) ] || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

$(AXE_JS):
	npm install --prefix $(CURDIR)/.tools --no-save --no-audit --no-fund axe-core@$(AXE_CORE_VERSION)

vet:
	$(GO) vet ./...

## bench: Go micro-benchmarks, pprof profiles of the two hit paths (saved
## to PROFILE_DIR, printed at the end), then the load script: the gateway
## against a bare fasthttp server and nginx proxy_cache, loaded by wrk.
PROFILE_DIR := $(shell mktemp -d /tmp/imagegate-profiles.XXXXXX 2>/dev/null || echo /tmp/imagegate-profiles)
bench: bench-peers postgresql
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./cache/ ./edge/ ./gateway/ ./gateway/moderation/ ./gateway/ratelimit/ ./inference/...
	$(GO) test -run '^$$' -bench Ledger -benchtime 2000x ./store/postgres/
	$(GO) test -run '^$$' -bench RotateIndexKey -benchtime 3x ./store/postgres/
	$(GO) test -run '^$$' -bench KeyRead -benchtime 2000x ./store/keyservice/
	$(GO) test -run '^$$' -bench GenerationMissByStore -benchtime 100x ./cmd/imagegate/
	$(GO) test -c -o $(PROFILE_DIR)/gateway.test ./gateway/
	for b in GenerationHit ObjectHit; do \
	  $(PROFILE_DIR)/gateway.test -test.run '^$$' -test.bench "^Benchmark$$b$$" -test.benchmem -test.benchtime 3s \
	    -test.cpuprofile $(PROFILE_DIR)/$$b.cpu.pprof || exit 1; \
	  $(PROFILE_DIR)/gateway.test -test.run '^$$' -test.bench "^Benchmark$$b$$" -test.benchmem -test.benchtime 20000x \
	    -test.memprofilerate 1 -test.memprofile $(PROFILE_DIR)/$$b.alloc.pprof || exit 1; \
	done
	$(GO) build -o $(BENCH_DIR)/imagegate ./cmd/imagegate
	$(GO) build -o $(BENCH_DIR)/loadbench ./internal/loadbench
	$(BENCH_DIR)/loadbench -imagegate $(BENCH_DIR)/imagegate -nginx $(NGINX) -wrk $(WRK)
	rm -rf $(BENCH_DIR)
	@echo "pprof profiles of the hit paths: $(PROFILE_DIR)"
	@echo "  go tool pprof -top $(PROFILE_DIR)/gateway.test $(PROFILE_DIR)/GenerationHit.cpu.pprof"
	@echo "  go tool pprof -sample_index=alloc_objects -top $(PROFILE_DIR)/gateway.test $(PROFILE_DIR)/GenerationHit.alloc.pprof"

# The load generator and the proxy_cache peer are Debian's wrk and nginx.
WRK   := /usr/bin/wrk
NGINX := /usr/sbin/nginx
.PHONY: bench-peers
bench-peers:
	@[ -x $(WRK) ] && [ -x $(NGINX) ] || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk nginx-light; }

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
	rm -rf ./data ./.tools
