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
MAN_GENERATOR := render-man-pages
# The build's identity in every tool's --version (shared/build.rs): the commit, with -dirty when
# tracked files differ from it, computed afresh on every make so a shipped binary never carries
# a stale mark. Empty outside a git checkout: build.rs then says `unknown`.
ifeq ($(origin HEXCLAVE_BUILD_COMMIT),undefined)
HEXCLAVE_BUILD_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null)$(shell \
    [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo -dirty)
endif
export HEXCLAVE_BUILD_COMMIT
TEMPLATE := cloud-init/user-data.template
SCRIPT_TEMPLATE := cloud-init/emulator-tools.sh.template
# cargo names the output folder of the dev profile `debug`; every other profile keeps its name.
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: all build toolchain targets user-data man test prereqs lint bench size install clean

all: build

# Every tool and the multicall binary, static, for each target; then the user-data.
build: targets
	@for t in $(TARGETS); do \
	    echo "building $$t ($(PROFILE))"; \
	    $(CARGO) build $(CARGO_FLAGS) --profile $(PROFILE) --target $$t --workspace --bins \
	        --exclude $(GENERATOR) --exclude $(MAN_GENERATOR) || exit 1; \
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

# target/man/<tool>.1: one man page per tool and one for emulator-tools, rendered on this host
# from the tools' own clap commands (the guest binary carries no man pages). `man -l
# target/man/render-stack-env.1` reads one.
man: toolchain
	$(CARGO) build $(CARGO_FLAGS) -q -p $(MAN_GENERATOR)
	target/debug/$(MAN_GENERATOR) --output target/man

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
# tool, with the test hooks (feature test-hooks: provision-build's --test-panic-before,
# slim-docker-image's STACK_SLIM_CRASH_AFTER), and the static multicall binary of each target,
# without them, as `make` builds it (compared under qemu, embedded in the user-data the tests
# render, and checked to hold no hook). The abort-hooks profile (Cargo.toml) is the multicall
# binary with panic = "abort", as in the release build, and with the hooks.
TEST_FEATURES := --features test-hooks
test: prereqs targets
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins $(TEST_FEATURES)
	$(CARGO) build $(CARGO_FLAGS) --profile abort-hooks -p $(MULTICALL) $(TEST_FEATURES)
	@for t in $(TARGETS); do \
	    echo "building $(MULTICALL) for $$t (release)"; \
	    $(CARGO) build $(CARGO_FLAGS) --release --target $$t -p $(MULTICALL) || exit 1; \
	done
	$(CARGO) test $(CARGO_FLAGS) --workspace $(TEST_FEATURES)

prereqs:
	@sh tests/prereqs.sh

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets $(TEST_FEATURES) -- -D warnings

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

# The multicall binary under PREFIX/lib/emulator-tools/, one link per tool and one named
# emulator-tools in PREFIX/bin/, as the user-data installs them in a guest, and the man pages in
# PREFIX/share/man/man1/. DESTDIR stages the tree elsewhere; the links point at the final PREFIX
# path.
install: build man
	install -d $(DESTDIR)$(PREFIX)/lib/$(MULTICALL) $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 target/$(INSTALL_TARGET)/$(PROFILE_DIR)/$(MULTICALL) \
	    $(DESTDIR)$(PREFIX)/lib/$(MULTICALL)/$(MULTICALL)
	@for name in $$(target/$(INSTALL_TARGET)/$(PROFILE_DIR)/$(MULTICALL) --list) $(MULTICALL); do \
	    ln -sfn $(PREFIX)/lib/$(MULTICALL)/$(MULTICALL) $(DESTDIR)$(PREFIX)/bin/$$name || exit 1; \
	    echo "linked $(DESTDIR)$(PREFIX)/bin/$$name -> $(PREFIX)/lib/$(MULTICALL)/$(MULTICALL)"; \
	done
	install -m 0644 target/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/

clean:
	$(CARGO) clean
