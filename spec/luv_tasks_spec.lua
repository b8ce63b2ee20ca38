-- Neovim and luv (issue 13, item 7): inside a synchro.luv coroutine,
-- synchro.aio's time and sync primitives run on the luv loop; in Neovim,
-- the coroutines and the callbacks they pass run where the vim API is
-- allowed (vim.schedule); f.sync works inside a loop's task.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- Every primitive once, inside a luv coroutine; returns a summary line.
local PRIMITIVES = [[
  local function primitives(slow)
    local aio = require "synchro.aio"
    local out = {}
    local t0 = aio.now()
    aio.sleep(0.05)
    out[#out + 1] = "slept " .. tostring(aio.now() - t0 >= 0.045)
    local r, msg = aio.timeout(0.05, aio.sleep, 10)
    out[#out + 1] = "timeout " .. tostring(r) .. " " .. msg:match("^%u+")
    local ev = aio.event()
    aio.spawn(function() aio.sleep(0.01) ev:set() end)
    out[#out + 1] = "event " .. tostring(ev:wait())
    local ch = aio.channel(1)
    aio.spawn(function()
      for i = 1, 3 do ch:send(i) end
      ch:close()
    end)
    local got = {}
    while true do
      local v = ch:recv()
      if v == nil then break end
      got[#got + 1] = v
    end
    out[#out + 1] = "channel " .. table.concat(got, ",")
    local sem, inside, most = aio.semaphore(2), 0, 0
    local lock, order = aio.lock(), {}
    local fns = {}
    for i = 1, 4 do
      fns[i] = function()
        sem:with(function()
          inside = inside + 1
          if inside > most then most = inside end
          aio.sleep(0.01)
          inside = inside - 1
        end)
        lock:with(function()
          order[#order + 1] = i
          aio.sleep(0.001)
        end)
        return i * 10
      end
    end
    local a, b, c, d = aio.gather(fns[1], fns[2], fns[3], fns[4])
    out[#out + 1] = ("semaphore %d lock %d gather %d,%d,%d,%d"):format(
      most, #order, a, b, c, d)
    -- a synchro call awaited with the rest, in a gather too
    local x, y = aio.gather(function() return slow.aio(0.02, "x") end,
      slow.future(0.01, "y"))
    out[#out + 1] = "calls " .. x .. y
    return table.concat(out, "; ")
  end
]]

local EXPECTED = "slept true; timeout nil ETIMEDOUT; event true; " ..
  "channel 1,2,3; semaphore 2 lock 4 gather 10,20,30,40; calls xy"

describe("synchro.luv tasks", function()
  local S, slow
  setup(function()
    S = synchro.new({ name = "luv-tasks" })
    slow = S:wrap(function(s, v)
      require("synchro.aio").sleep(s)
      return v
    end)
  end)
  teardown(function() S:close() end)

  -- The failing case of the issue ("sleep must be called from async
  -- code"), on a plain luv loop: every Lua.
  it("runs synchro.aio's time and sync primitives on the luv loop",
    function()
      local uv = require "luv"
      local sluv = require "synchro.luv"
      local primitives = assert((loadstring or load)(PRIMITIVES ..
        " return primitives"))()
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(5, 5, function() ticks = ticks + 1 end)
      local task = sluv.run_opts({ on_done = function()
        timer:stop() -- however the task ends: uv.run() returns
        timer:close()
      end }, function() return primitives(slow) end)
      uv.run()
      assert.are.equal(EXPECTED, task:result())
      assert.is_true(ticks >= 10, "ticks: " .. ticks)
    end)

  it("cancels a luv task's children with it", function()
    local uv = require "luv"
    local sluv = require "synchro.luv"
    local cleaned = 0
    local task = sluv.run_opts({ on_done = function() end }, function()
      local aio = require "synchro.aio"
      for _ = 1, 10 do
        aio.spawn(function()
          aio.finally(function() aio.sleep(10) end,
            function() cleaned = cleaned + 1 end)
        end)
      end
      slow.aio(10, "never")
    end)
    local timer = uv.new_timer()
    timer:start(50, 0, function()
      timer:close()
      task:cancel()
    end)
    uv.run()
    assert.is_true(task.done)
    assert.is_false(task.ok)
    assert.is_true(synchro.is_cancelled(task.error))
    assert.are.equal(10, cleaned)
  end)

  it("refuses bad options", function()
    local sluv = require "synchro.luv"
    assert.has_error(function() sluv.run_opts({ on_dne = 1 }, print) end)
    assert.has_error(function()
      sluv.use(require "luv", { schedule = 42 })
    end, "bad argument #2 to 'use' (schedule: function or false expected, " ..
      "got number)")
  end)

  it("f.sync works inside a loop's task (called in place)", function()
    local r = S:wrap(function()
      local inner = slow -- this loop's own wrapped function, an upvalue
      return inner.sync(0.01, "in place")
    end)()
    assert.are.equal("in place", r)
  end)

  describe("inside a real Neovim #subprocess", function()
    local function nvim(script)
      if not rawget(_G, "jit") then
        pending("Neovim runs LuaJIT: this runs in the LuaJIT pass")
        return nil
      end
      if os.execute("command -v nvim >/dev/null 2>&1") ~= true and
        os.execute("command -v nvim >/dev/null 2>&1") ~= 0 then
        pending("nvim is not installed")
        return nil
      end
      local dir = util.tmpname()
      os.execute("mkdir -p " .. dir)
      util.write(dir .. "/test.lua",
        ("package.path = %q .. ';' .. package.path\n"):format(package.path) ..
        ("package.cpath = %q .. ';' .. package.cpath\n")
          :format(package.cpath) ..
        ("local RESULT = %q\n"):format(dir .. "/result") .. [[
          local synchro = require "synchro"
          local sluv = require "synchro.luv"
          local S = synchro.new()
          local slow = S:wrap(function(s, v)
            require("synchro.aio").sleep(s)
            return v
          end)
          local function finish(text)
            local f = io.open(RESULT, "w")
            f:write(text)
            f:close()
            S:close()
            vim.schedule(function() vim.cmd("qa!") end)
          end
        ]] .. script)
      os.execute(("cd %s && timeout 60 nvim --headless -u NONE -i NONE " ..
        "-c 'luafile %s/test.lua' >%s/log 2>&1"):format(dir, dir, dir))
      local result = util.read(dir .. "/result") or ("(no result) " ..
        (util.read(dir .. "/log") or ""))
      os.execute("rm -rf " .. dir)
      return result
    end

    it("runs the primitives on the editor's loop, which keeps running",
      function()
        local result = nvim(PRIMITIVES .. [[
          local ticks = 0
          local timer = vim.loop.new_timer()
          timer:start(5, 5, function() ticks = ticks + 1 end)
          sluv.run_opts({ on_done = function(task)
            timer:stop()
            timer:close()
            finish(tostring(task.ok and task.results[1] or task.error) ..
              " | " .. ticks)
          end }, function() return primitives(slow) end)
        ]])
        if result == nil then return end
        local summary, ticks = result:match("^(.-) | (%d+)$")
        assert.are.equal(EXPECTED, summary, result)
        assert.is_true(tonumber(ticks) >= 10, "ticks: " .. tostring(ticks))
      end)

    it("runs tasks and their callbacks where the vim API is allowed",
      function()
        local result = nvim([[
          local each = S:wrap(function(list, fn)
            local aio = require "synchro.aio"
            for i = 1, #list do
              aio.sleep(0.01)
              fn(i, list[i])        -- a callback: runs in the editor
            end
            return #list
          end)
          local buf = vim.api.nvim_create_buf(false, true)
          local fast = {}
          sluv.run_opts({ on_done = function(task)
            fast[#fast + 1] = vim.in_fast_event()
            local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
            finish(tostring(task.ok and task.results[1] or task.error) ..
              " " .. table.concat(lines, ",") .. " " ..
              tostring(fast[1]) .. tostring(fast[2]) .. tostring(fast[3]))
          end }, function()
            local n = each({ "a", "b", "c" }, function(i, v)
              fast[1] = vim.in_fast_event()
              vim.api.nvim_buf_set_lines(buf, i - 1, i - 1, false, { v })
            end)
            slow.aio(0.01) -- after an await, the task goes on in the editor
            fast[2] = vim.in_fast_event()
            vim.api.nvim_buf_set_var(buf, "synchro_n", n)
            return vim.api.nvim_buf_get_var(buf, "synchro_n")
          end)
        ]])
        if result == nil then return end
        assert.are.equal("3 a,b,c, falsefalsefalse", result)
      end)
  end)
end)
