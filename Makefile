# The front door. `make` builds everything; `make test` runs the whole suite, installing what it
# needs first. Neither needs a cargo flag.

CARGO ?= cargo
PROFILE ?= release
CARGO_FLAGS ?= --locked

.PHONY: all build test prereqs lint bench size clean

all: build

build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --profile $(PROFILE)

# The suite drives the built binaries, so they are built first.
test: prereqs
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) --workspace

prereqs:
	@sh tests/prereqs.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

bench: prereqs
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins --release
	HEXCLAVE_TEST_BIN_DIR=$(CURDIR)/target/release $(CARGO) bench $(CARGO_FLAGS) -p tool-tests --bench bench

size: build
	@for f in target/$(PROFILE)/*; do \
	    [ -f "$$f" ] && [ -x "$$f" ] || continue; \
	    printf '%-32s %9d bytes  %9d gzipped\n' "$$(basename $$f)" "$$(stat -c %s $$f)" "$$(gzip -9c $$f | wc -c)"; \
	done

clean:
	$(CARGO) clean
