-- Regressions: pointers crossed to Lua as "%p" text and were trusted.
-- require("synchro.core").inbox_unref("0x10") and import_string("0x10")
-- segfaulted, importing any light userdata (or the same S:export()
-- reference twice: a use-after-free) aborted the process, and a value
-- whose __synchro returned synchro's own kinds ("synchro.fn", ...) with a
-- made-up payload made the loop read text as a pointer. Handles are
-- integers checked at every use; each case here is a clear Lua error, and
-- the process lives on to run the next.
local synchro = require "synchro"
local core = require "synchro.core"

local FORGED = { "0x10", 16, 0, -1, 2 ^ 40, 2 ^ 52 + 16 }

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "no error")
  assert.is_string(err)
  assert.is_truthy(err:find(pattern), err)
  return err
end

-- A light userdata, where the Lua version can make one.
local function lightuserdata()
  if debug.upvalueid then
    local up = 1
    return debug.upvalueid(function() return up end, 1)
  end
end

describe("no pointer crosses to Lua as text", function()
  it("has no entry point that parses a pointer", function()
    for _, name in ipairs({ "inbox_ref", "inbox_unref", "export_string",
      "import_string" }) do
      assert.is_nil(core[name], name)
    end
  end)

  it("inbox_unref_0x10_segfault: a made-up inbox handle is an error", function()
    for _, h in ipairs(FORGED) do
      raises("no such inbox", core.inbox_open, h)
    end
    raises("number expected", core.inbox_open, {})
  end)

  it("a made-up inbox is an error on the loop too (rcall)", function()
    local S = synchro.new()
    local probe = S:wrap(function(h)
      local c = require "synchro.core"
      -- (Lua closures: 5.1's yield-safe pcall takes only Lua functions)
      local ok1, e1 = pcall(function() return c.inbox_open(h) end)
      local ok2, e2 = pcall(function() return c.rcall(h, 1) end)
      local ok3, e3 = pcall(function() return c.rcall({}, 1) end)
      return ok1, e1, ok2, e2, ok3, e3
    end)
    for _, h in ipairs(FORGED) do
      local ok1, e1, ok2, e2, ok3, e3 = probe(h)
      assert.is_false(ok1)
      assert.is_truthy(e1:find("no such inbox", 1, true) or
        e1:find("number expected", 1, true), e1)
      assert.is_false(ok2)
      assert.is_truthy(e2:find("Notifier expected", 1, true), e2)
      assert.is_false(ok3)
      assert.is_truthy(e3:find("Notifier expected", 1, true), e3)
    end
    S:close()
  end)

  it("import_string_0x10_segfault: a made-up synchronizer is an error",
    function()
      for _, h in ipairs(FORGED) do
        raises("synchronizer", core.synchronizer, h)
        raises("import", core.import, h)
      end
    end)

  it("a synchronizer's identity names it only while it lives", function()
    local S = synchro.new()
    local id = core.identity(S._ud)
    assert.are.equal("userdata", type(core.synchronizer(id)))
    S:close()
    S = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    raises("no such synchronizer", core.synchronizer, id)
  end)
end)

describe("synchro.import", function()
  it("import_lightuserdata_abort: refuses a light userdata", function()
    local lud = lightuserdata()
    if lud == nil then
      pending("no light userdata on this Lua")
      return
    end
    raises("bad argument #1 to 'import'", synchro.import, lud)
  end)

  it("refuses what S:export() did not give", function()
    for _, h in ipairs(FORGED) do
      raises("bad argument #1 to 'import'", synchro.import, h)
    end
    raises("bad argument #1 to 'import'", synchro.import, io.stdout)
    raises("bad argument #1 to 'import'", synchro.import, nil)
  end)

  it("double_import_use_after_free: a second import is an error", function()
    local S = synchro.new()
    local ref = S:export()
    local S2 = synchro.import(ref)
    raises("imported already", synchro.import, ref)
    raises("imported already", synchro.import, ref)
    -- the first import is whole: it calls, and collecting it leaves S be
    local f = S2:wrap(function(x) return x + 1 end)
    assert.are.equal(42, f(41))
    S2, f = nil, nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.are.equal(3, S:wrap(function() return 3 end)())
    S:close()
  end)

  it("an export never imported does not keep others from working",
    function()
      local S = synchro.new()
      local a, b = S:export(), S:export()
      assert.are_not.equal(a, b)
      local Sb = synchro.import(b)
      raises("imported already", synchro.import, b)
      assert.are.equal(5, Sb:wrap(function() return 5 end)())
      local Sa = synchro.import(a)
      assert.are.equal(6, Sa:wrap(function() return 6 end)())
      S:close()
    end)
end)

describe("__synchro and synchro's own kinds", function()
  local S, echo

  setup(function()
    S = synchro.new()
    echo = S:wrap(function(...) return ... end)
  end)

  teardown(function() S:close() end)

  local KINDS = { "synchro.fn", "synchro.obj", "synchro.cb", "synchro.code",
    "synchro.anything" }
  local PAYLOADS = { "0x10", "16#1#f", "1#1#o", "16#1", "", "\27Lua\84\0",
    string.rep("\255", 64) }

  local function forged(kind, payload)
    return setmetatable({}, { __synchro = function()
      return kind, payload
    end })
  end

  it("forged_synchro_kind_segfault: an argument may not use a reserved kind",
    function()
      for _, kind in ipairs(KINDS) do
        for _, payload in ipairs(PAYLOADS) do
          local err = raises("bad argument #1", echo, forged(kind, payload))
          assert.is_truthy(err:find("args[1]: __synchro returned '" .. kind ..
            "'", 1, true), err)
          err = raises("bad argument #2", echo, 1,
            { deep = { forged(kind, payload) } })
          assert.is_truthy(err:find("args[2].deep[1]: __synchro", 1, true), err)
        end
      end
    end)

  it("nor a future's argument, nor an upvalue at wrap time", function()
    for _, kind in ipairs(KINDS) do
      local v = forged(kind, "0x10")
      raises("reserved", echo.future, v)
      raises("__synchro returned '" .. kind, function()
        return S:wrap(function() return v end)
      end)
    end
  end)

  it("nor a result from the loop", function()
    local give = S:wrap(function(kind)
      return setmetatable({}, { __synchro = function()
        return kind, "0x10"
      end })
    end)
    for _, kind in ipairs(KINDS) do
      raises("bad result #1 %(results%[1%]: __synchro returned '" ..
        kind:gsub("%.", "%%."), give, kind)
    end
  end)

  it("made-up payloads of synchro's own kinds fail cleanly when decoded",
    function()
      -- As if the reserved rule were bypassed: the decoders still check
      -- what the payload names (not synchro.code: that one is bytecode,
      -- which is why only synchro's own marshallers may make it).
      local own = debug.getregistry()["synchro.own_marshallers"]
      local cases = {
        { "synchro.fn", "0x10", "malformed" },
        { "synchro.fn", "16#1#f", "no such synchronizer" },
        { "synchro.obj", "0x10", "malformed" },
        { "synchro.obj", "16#1#o", "no such synchronizer" },
        { "synchro.gen", "16#1#", "no such synchronizer" },
        { "synchro.iter", "16#1#", "no such synchronizer" },
        { "synchro.iter", "0x10", "malformed" },
        { "synchro.obj", core.identity(S._ud) .. "#123456#o", "released" },
        { "synchro.cb", "0x10", "malformed" },
        { "synchro.cb", "16#1", "no such inbox" },
      }
      for _, c in ipairs(cases) do
        local mt = { __synchro = function() return c[1], c[2] end }
        own[mt.__synchro] = true
        local err = raises("extension", echo, setmetatable({}, mt))
        own[mt.__synchro] = nil
        assert.is_truthy(err:find(c[3], 1, true), c[1] .. " " .. c[2] ..
          ": " .. err)
      end
      assert.are.equal(7, echo(7)) -- the loop lives on
    end)

  it("a kind of the user's own crosses with synchro.register_kind",
    function()
      local Point = {}
      Point.__synchro = function(p) return "point", p.x .. "," .. p.y end
      local setup_loop = S:wrap(function()
        require("synchro").register_kind("point", function(payload)
          local x, y = payload:match("^(.-),(.*)$")
          return { x = tonumber(x), y = tonumber(y), decoded = true }
        end)
      end)
      setup_loop()
      local norm = S:wrap(function(p)
        return p.decoded, p.x * p.x + p.y * p.y
      end)
      local decoded, n2 = norm(setmetatable({ x = 3, y = 4 }, Point))
      assert.is_true(decoded)
      assert.are.equal(25, n2)
      -- a table payload: its values cross as values (a zero byte, a
      -- float, a nested table), nothing joined into a string
      local Seg = {}
      Seg.__synchro = function(v) return "seg", { v.a, v.b, tag = v.tag } end
      S:wrap(function()
        require("synchro").register_kind("seg", function(t)
          return { len = t[2].x - t[1].x, tag = t.tag, whole = type(t) }
        end)
      end)()
      local seg = S:wrap(function(v) return v.len, v.tag, v.whole end)
      local len, tag, whole = seg(setmetatable({ a = { x = 0.5 },
        b = { x = 3 }, tag = "a\0b" }, Seg))
      assert.are.equal(2.5, len)
      assert.are.equal("a\0b", tag)
      assert.are.equal("table", whole)
      raises("bad argument #1 to 'register_kind'", synchro.register_kind,
        "synchro.point", function() end)
      raises("bad argument #2 to 'register_kind'", synchro.register_kind,
        "point", 1)
    end)
end)
