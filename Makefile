# crmsync — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test bench demo demo-stop chaos fuzz check fmt lint tools browser clean

all: build

# Tools every target needs. Debian's redis-server is installed when we can (root + apt-get);
# otherwise we stop and name the package.
tools:
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "error: cargo is missing; install Rust from https://rustup.rs"; exit 1; }
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's redis-server package..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	      || { echo "error: could not install redis-server with apt-get"; exit 1; }; \
	  else \
	    echo "error: redis-server is missing; install Debian's redis-server package (apt-get install redis-server) or put redis-server on PATH"; exit 1; \
	  fi; \
	fi

# The dashboard's browser test clicks through the page in headless Chromium under chromedriver
# (only `make test` needs them): Debian's chromium and chromium-driver packages, installed when
# we can (root + apt-get); otherwise we stop and name the missing package.
browser:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's$$missing package(s) (the dashboard's browser test)..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	      || { echo "error: could not install$$missing with apt-get"; exit 1; }; \
	  else \
	    for p in $$missing; do \
	      echo "error: $$p is missing; install Debian's $$p package (apt-get install $$p)"; \
	    done; exit 1; \
	  fi; \
	fi

build: tools
	$(CARGO) build --workspace --all-targets

# Every test, against ephemeral redis-servers the tests start themselves. The binaries are
# built first: the multi-process tests run `crmsync`, the probe worker and the simulator.
test: tools browser
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  echo "cargo-nextest not found; running cargo test"; \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

# Measurements (never asserted by tests): prints tables.
bench: tools
	$(CARGO) build --release -p crmsync-bench -p crmsync-cli
	./target/release/crmsync-bench queue
	./target/release/crmsync-bench backfill
	./target/release/crmsync-bench salesforce
	./target/release/crmsync-bench reconcile
	./target/release/crmsync-bench buffer
	./target/release/crmsync-bench limits
	./target/release/crmsync-bench webhook

# The main job end to end on the simulator: its own redis-server, 4 tenants, 2 workers, then
# the change feed; ends with what to try next. `make demo KEEP=1` leaves redis-server, the
# simulator, the workers, the webhook receiver and a dashboard running (URLs, dashboard login
# link and shell settings printed, and kept in target/demo/state.env); `make demo-stop` stops them.
demo: tools
	$(CARGO) build --release -p crmsync-cli -p crmsync-sim -p crmsync-demo
	./target/release/crmsync-demo $(if $(filter-out 0 no false,$(KEEP)),--keep,)

# Stops what `make demo KEEP=1` left running (SIGTERM, then SIGKILL after 10 s) and removes its
# state; nothing happens when nothing runs.
demo-stop:
	@if [ -x ./target/release/crmsync-demo ]; then ./target/release/crmsync-demo stop; \
	elif [ -f target/demo/pids ]; then $(CARGO) build --release -p crmsync-demo && ./target/release/crmsync-demo stop; \
	else echo "Nothing of the demo was running."; fi

# The full chaos run: 4 workers, 10 tenants, 20,000 contacts, 10% simulator faults, a worker
# SIGKILLed every 3 s, Redis killed and restarted once; prints the figures, fails on any
# violation. (A smaller one runs inside `make test`.)
chaos: tools
	$(CARGO) build --release -p crmsync-cli -p crmsync-e2e --bins
	./target/release/crmsync-chaos

check: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# Fuzz targets (not in CI): the webhook body parser, the signature check and the Nylas page
# parser, each for FUZZ_SECS seconds from the committed corpus in fuzz/corpus. Needs the nightly
# toolchain (rustup) and cargo-fuzz (installed here when missing).
FUZZ_SECS ?= 60
fuzz:
	@rustup toolchain list 2>/dev/null | grep -q nightly || { echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	cd fuzz && for t in webhook_body signature nylas_page; do \
	  mkdir -p corpus/$$t && cargo +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

