# Thin wrapper over CMake and the test scripts. See README.md.
LUAS ?= 5.1 5.2 5.3 5.4 luajit
LUA ?= 5.4
BUILD ?= build
JOBS ?= 2

.PHONY: all deps build demo test test-loaded check-sanitize bench clean lint dist

all: build

deps:
	@tools/deps.sh

$(BUILD)/%/.built: FORCE
	@cmake -S . -B $(BUILD)/$* -DSYNCHRO_LUA=$* -DSYNCHRO_WERROR=ON >/dev/null
	@cmake --build $(BUILD)/$* -j $(JOBS) >/dev/null || cmake --build $(BUILD)/$* -j 1
	@touch $@
FORCE:

build: deps
	@for v in $(LUAS); do $(MAKE) --no-print-directory $(BUILD)/$$v/.built || exit 1; done

demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/$(LUA)/.built
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) examples/quickstart.lua
	@echo
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) examples/http_demo.lua
	@echo
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) examples/pipeline/demo.lua

test: build
	@tools/test.sh $(LUAS)

# The suite with two CPU hogs beside it (stopped afterwards, whatever happens).
test-loaded: build
	@tools/test-loaded.sh $(LUAS)

check-sanitize: deps
	@tools/sanitize.sh

bench: deps
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory $(BUILD)/$(LUA)/.built
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) bench/roundtrip.lua
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) bench/marshal.lua
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) bench/tcp_echo.lua
	@tools/with-env.sh $(BUILD)/$(LUA) lua$(LUA) bench/http.lua
	@bench/instructions.sh $(LUA)

# synchro-0.1.0-1.src.rock from the checkout (luarocks install ./... offline)
dist:
	@tools/dist.sh

lint:
	@luacheck lua spec bench examples

clean:
	rm -rf $(BUILD)
