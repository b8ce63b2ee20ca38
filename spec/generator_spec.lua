-- S:wrap_generator: lazy generators that cross, closing, send and throw.
local synchro = require "synchro"
local util = require "spec.helpers.util"

describe("generators", function()
  local S, count, log, live
  setup(function()
    S = synchro.new({ name = "generators" })
    -- emits 1..n (with squares), logging what it does on the loop
    count = S:wrap_generator(function(n)
      local aio = require "synchro.aio"
      gen_log = gen_log or {} -- luacheck: ignore
      local ok, err = pcall(function()
        for i = 1, n do
          aio.sleep(0.001)
          table.insert(gen_log, "produce " .. i) -- luacheck: ignore
          local sent = synchro.emit(i, i * i)
          if sent ~= nil then
            table.insert(gen_log, "got " .. tostring(sent)) -- luacheck: ignore
          end
        end
      end)
      table.insert(gen_log, "cleanup") -- luacheck: ignore
      if not ok then error(err, 0) end
    end)
    log = S:wrap(function()
      local l = gen_log or {} -- luacheck: ignore
      gen_log = {} -- luacheck: ignore
      return l
    end)
    live = S:wrap(function() return require("synchro.runtime").gen_count() end)
  end)
  teardown(function() S:close() end)
  before_each(function() log() end)

  it("yields every item, in order, with several values", function()
    local got = {}
    for v, sq in count(4) do got[#got + 1] = v .. ":" .. sq end
    assert.are.same({ "1:1", "2:4", "3:9", "4:16" }, got)
    assert.are.same({ "produce 1", "produce 2", "produce 3", "produce 4",
      "cleanup" }, log())
    assert.are.equal(0, live())
  end)

  it("is lazy: the generator runs only as far as the next item asked",
    function()
      local it = count(10)
      assert.are.same({}, log()) -- nothing ran yet
      assert.are.equal(1, it())
      assert.are.same({ "produce 1" }, log())
      assert.are.equal(2, it:next())
      assert.are.same({ "produce 2" }, log())
      it:close()
    end)

  it("runs its cleanup exactly once when closed after 2 of 10 items",
    function()
      local seen = 0
      local it = count(10)
      for v in it do
        seen = v
        if v == 2 then break end
      end
      it:close()
      it:close() -- twice is fine
      assert.are.equal(2, seen)
      assert.are.same({ "produce 1", "produce 2", "cleanup" }, log())
      util.sleep(0.05)
      assert.are.same({}, log()) -- it stopped producing
      assert.is_nil(it()) -- a closed iterator ends
      assert.are.equal(0, live())
    end)

  it("closes by itself when a Lua 5.4 for loop is left", function()
    if not util.lua54 then
      pending("to-be-closed loop variables need Lua 5.4")
      return
    end
    local run = load([[
      local count = ...
      for v in count(10) do
        if v == 2 then break end
      end
    ]])
    run(count)
    assert.are.same({ "produce 1", "produce 2", "cleanup" }, log())
    assert.are.equal(0, live())
  end)

  it("takes values with send and errors with throw", function()
    local it = count(5)
    assert.are.equal(1, it:next())
    assert.are.equal(2, it:send("hello"))
    local ok, err = pcall(it.throw, it, "stop here")
    assert.is_false(ok)
    assert.matches("^stop here", err)
    assert.are.same({ "produce 1", "got hello", "produce 2", "cleanup" },
      log())
    assert.is_nil(it:next())
  end)

  it("raises the generator's error at the consumer's next step", function()
    local bad = S:wrap_generator(function()
      synchro.emit("first")
      error("generator broke", 0)
    end)
    local it = bad()
    assert.are.equal("first", it())
    local ok, err = pcall(it)
    assert.is_false(ok)
    assert.matches("^generator broke\n%[loop thread%]", err)
    assert.is_nil(it())
  end)

  it("iterates with .aio inside async code", function()
    local sum = synchro.run(function()
      local s = 0
      if util.puc51 then
        -- PUC 5.1 cannot yield inside a for iterator: step by hand
        local it = count.aio(4)
        for _ = 1, 4 do s = s + it:next() end
        assert(it:next() == nil)
      else
        for v in count.aio(4) do s = s + v end
      end
      return s
    end)
    assert.are.equal(10, sum)
    local ok, err = pcall(count.aio, 1)
    assert.is_false(ok)
    assert.matches("from async code", err, 1, true)
  end)

  it("keeps 100 generators alive at once", function()
    local its = {}
    local before = live()
    for i = 1, 100 do its[i] = count(3) end
    local sum = 0
    for round = 1, 3 do
      for i = 1, 100 do sum = sum + its[i]() * round end
    end
    assert.are.equal(100 * (1 * 1 + 2 * 2 + 3 * 3), sum)
    assert.are.equal(before + 100, live())
    for i = 1, 100 do assert.is_nil(its[i]()) end
    assert.are.equal(before, live())
  end)

  it("closes an iterator that is collected unclosed", function()
    do
      local it = count(10)
      it()
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(util.wait_for(function() return live() == 0 end, 5))
  end)

  it("rejects misuse", function()
    assert.has_error(function() S:wrap_generator(42) end,
      "bad argument #1 to 'wrap_generator' (function expected, got number)")
    local ok, err = pcall(synchro.emit, 1)
    assert.is_false(ok)
    assert.matches("synchro.emit must be called by a generator", err, 1, true)
    local notgen = S:wrap(function() synchro.emit(1) end)
    ok, err = pcall(notgen)
    assert.is_false(ok)
    assert.matches("must be called by a generator's own task", err, 1, true)
  end)
end)
