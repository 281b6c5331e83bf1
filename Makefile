# Thin wrapper over meson/ninja and the scripts in deploy/ and perf/.
#
#   make test        install missing deps, check the test tools, build, run every meson test suite
#   make test-asan   the unit + integration suites under ASan/UBSan (build-asan/)
#   make demo        run a zring node and push traffic through it
#   make bench       direct vs zring vs HAProxy throughput and CPU per GB
#
# WERROR=1 (implied by CI=true) configures the build with -Dwerror=true.
# ZR_SKIP_DEPS=1 skips the package check (hosts managed some other way).

BUILDDIR ?= build
ASANDIR ?= build-asan
MESON ?= meson
NINJA ?= ninja
MESON_ARGS ?=
TEST_ARGS ?=
ASAN_SUITES ?= unit integration interop

ifeq ($(CI),true)
WERROR ?= 1
endif
WERROR ?= 0
ifeq ($(WERROR),1)
WERROR_BOOL := true
else
WERROR_BOOL := false
endif

comma := ,

# Sets up a build dir on first use (again if an earlier setup failed half way);
# an existing one is only switched to -Dwerror=true when WERROR=1.
# $(1) = dir, $(2) = extra meson options.
define meson_setup
	@if [ -f $(1)/build.ninja ]; then \
		if [ "$(WERROR_BOOL)" = true ]; then $(MESON) configure $(1) -Dwerror=true; fi; \
	elif [ -f $(1)/meson-private/coredata.dat ]; then \
		$(MESON) setup --wipe $(1) -Dwerror=$(WERROR_BOOL) $(2) $(MESON_ARGS); \
	else \
		$(MESON) setup $(1) -Dwerror=$(WERROR_BOOL) $(2) $(MESON_ARGS); \
	fi
endef

.PHONY: all deps check-tools build test build-asan test-asan demo bench clean format format-check

all: build

deps:
	@bash deploy/install-deps.sh

# Every program and module the tests use, by Debian package (cheap; no build).
check-tools: deps
	@bash deploy/check-tools.sh

build: deps
	$(call meson_setup,$(BUILDDIR),)
	$(NINJA) -C $(BUILDDIR)

test: check-tools build
	$(MESON) test -C $(BUILDDIR) --print-errorlogs $(TEST_ARGS)

build-asan: deps
	$(call meson_setup,$(ASANDIR),-Db_sanitize=address$(comma)undefined -Db_lundef=false)
	$(NINJA) -C $(ASANDIR)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MESON) test -C $(ASANDIR) --print-errorlogs --timeout-multiplier 3 \
		$(addprefix --suite ,$(ASAN_SUITES)) $(TEST_ARGS)

demo: build
	bash deploy/demo.sh $(BUILDDIR)

bench: build
	$(BUILDDIR)/zring-bench suite --out bench-out

clean:
	rm -rf $(BUILDDIR) $(ASANDIR) bench-out

C_SOURCES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null)

format:
	clang-format -i $(C_SOURCES)

format-check:
	clang-format --dry-run -Werror $(C_SOURCES)
