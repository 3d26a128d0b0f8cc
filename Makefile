# The front door. `make` builds the static guest binaries and renders the cloud-init user-data;
# `make test` runs the whole suite, installing what it needs first. Neither needs a cargo flag.

CARGO ?= cargo
PROFILE ?= release
CARGO_FLAGS ?= --locked
# The guest architectures: static musl binaries, one user-data each.
TARGETS ?= x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# make install: where, and which build (the machine's own architecture by default).
PREFIX ?= /usr/local
DESTDIR ?=
INSTALL_TARGET ?= $(shell uname -m)-unknown-linux-musl

MULTICALL := emulator-tools
GENERATOR := render-user-data
TEMPLATE := cloud-init/user-data.template
SCRIPT_TEMPLATE := cloud-init/emulator-tools.sh.template
# cargo names the output folder of the dev profile `debug`; every other profile keeps its name.
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: all build toolchain targets user-data test prereqs lint bench size install clean

all: build

# Every tool and the multicall binary, static, for each target; then the user-data.
build: targets
	@for t in $(TARGETS); do \
	    echo "building $$t ($(PROFILE))"; \
	    $(CARGO) build $(CARGO_FLAGS) --profile $(PROFILE) --target $$t --workspace --bins \
	        --exclude $(GENERATOR) || exit 1; \
	done
	@$(MAKE) --no-print-directory user-data

# target/cloud-init/<arch>/user-data from the template and that target's multicall binary.
user-data: toolchain
	$(CARGO) build $(CARGO_FLAGS) -q -p $(GENERATOR)
	@for t in $(TARGETS); do \
	    target/debug/$(GENERATOR) --template $(TEMPLATE) --script-template $(SCRIPT_TEMPLATE) \
	        --binary target/$$t/$(PROFILE_DIR)/$(MULTICALL) \
	        --output target/cloud-init/$${t%%-*}/user-data || exit 1; \
	done

# What the build needs before cargo can run: Rust through rustup (the version in
# rust-toolchain.toml) and a C compiler (libdeflate and the linker driver). Says what is missing
# and how to get it, instead of a shell's "not found".
toolchain:
	@command -v rustup >/dev/null 2>&1 && command -v $(CARGO) >/dev/null 2>&1 || { \
	    echo "make: Rust is not installed (rustup and cargo were not found on PATH)." >&2; \
	    echo "      Install it with rustup (https://rustup.rs), then open a new shell;" >&2; \
	    echo "      rust-toolchain.toml names the version this project is tested with." >&2; \
	    exit 1; }
	@command -v cc >/dev/null 2>&1 || { \
	    echo "make: no C compiler (cc) found: install one (on Debian: apt-get install gcc)." >&2; \
	    exit 1; }

# The Rust targets, added through rustup when missing.
targets: toolchain
	@installed="$$(rustup target list --installed)" || exit 1; \
	for t in $(TARGETS); do \
	    echo "$$installed" | grep -qx "$$t" || rustup target add "$$t" || exit 1; \
	done

# The suite drives the built binaries, so they are built first: the host's debug build of every
# tool, and the static multicall binary of each target (compared under qemu, embedded in the
# user-data the tests render).
test: prereqs targets
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	@for t in $(TARGETS); do \
	    echo "building $(MULTICALL) for $$t (release)"; \
	    $(CARGO) build $(CARGO_FLAGS) --release --target $$t -p $(MULTICALL) || exit 1; \
	done
	$(CARGO) test $(CARGO_FLAGS) --workspace

prereqs:
	@sh tests/prereqs.sh

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

bench: prereqs
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins --release
	HEXCLAVE_TEST_BIN_DIR=$(CURDIR)/target/release $(CARGO) bench $(CARGO_FLAGS) -p tool-tests --bench bench

# Bytes of every binary, raw and gzipped (gzip -9), per target; the multicall binary last; then
# the user-data files and what is left of their 1 MiB. The user-data's own payload is deflated
# harder than gzip -9: the generator prints its size when it renders.
size: build
	@for t in $(TARGETS); do \
	    echo "$$t ($(PROFILE))"; \
	    for f in target/$$t/$(PROFILE_DIR)/*; do \
	        [ -f "$$f" ] && [ -x "$$f" ] && [ "$${f##*/}" != $(MULTICALL) ] || continue; \
	        printf '  %-32s %9d bytes %9d gzipped\n' "$${f##*/}" "$$(stat -c %s $$f)" "$$(gzip -9c $$f | wc -c)"; \
	    done; \
	    f=target/$$t/$(PROFILE_DIR)/$(MULTICALL); \
	    printf '  %-32s %9d bytes %9d gzipped\n' "$(MULTICALL) (all)" "$$(stat -c %s $$f)" "$$(gzip -9c $$f | wc -c)"; \
	done
	@for t in $(TARGETS); do \
	    f=target/cloud-init/$${t%%-*}/user-data; size=$$(stat -c %s $$f); \
	    printf '%-36s %9d bytes %9d under 1 MiB\n' "$$f" "$$size" "$$((1048576 - size))"; \
	done

# The multicall binary under PREFIX/lib/emulator-tools/ and one link per tool in PREFIX/bin/,
# as the user-data installs them in a guest. DESTDIR stages the tree elsewhere; the links point
# at the final PREFIX path.
install: build
	install -d $(DESTDIR)$(PREFIX)/lib/$(MULTICALL) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 target/$(INSTALL_TARGET)/$(PROFILE_DIR)/$(MULTICALL) \
	    $(DESTDIR)$(PREFIX)/lib/$(MULTICALL)/$(MULTICALL)
	@for name in $$(target/$(shell uname -m)-unknown-linux-musl/$(PROFILE_DIR)/$(MULTICALL) --list); do \
	    ln -sfn $(PREFIX)/lib/$(MULTICALL)/$(MULTICALL) $(DESTDIR)$(PREFIX)/bin/$$name || exit 1; \
	    echo "linked $(DESTDIR)$(PREFIX)/bin/$$name -> $(PREFIX)/lib/$(MULTICALL)/$(MULTICALL)"; \
	done

clean:
	$(CARGO) clean
