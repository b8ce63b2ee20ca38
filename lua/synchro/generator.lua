--- Generators: S:wrap_generator, iterators (next, send, throw, close)
--- and synchro.emit. Installed into synchro by init.lua.
local core = require "synchro.core"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro, Synchronizer, P)
  local core_submit = core.submit
  local check_self, call_path = P.check_self, P.call_path

  -- Generators -------------------------------------------------------------

  ---@class synchro.Generator
  ---@field aio fun(...): synchro.Iterator
  local WrappedGen = {}
  WrappedGen.__index = WrappedGen

  ---@class synchro.Iterator
  local Iterator = {}
  Iterator.__index = Iterator

  local function raise_remote(err, tb)
    if type(err) == "string" and type(tb) == "string" and tb ~= "" then
      error(err .. "\n" .. tb, 0)
    end
    error(err, 0)
  end

  local function finish_step(it, kind, ...)
    if kind == "item" then return ... end
    it.closed = true
    if kind == "error" then raise_remote(...) end
    return nil
  end

  function Iterator:step(how, value)
    if self.closed then return nil end
    return finish_step(self, call_path(self.ud, self.aio,
      "synchro.runtime.gen_next", self.gid, how, value))
  end

  --- The next item (nil once the generator has ended).
  ---@return ...
  function Iterator:next() return self:step("next") end

  --- Resumes the generator with v as what its synchro.emit returns; gives
  --- the next item.
  ---@return ...
  function Iterator:send(v) return self:step("send", v) end

  --- Raises err inside the generator at its synchro.emit; gives the next
  --- item if the generator goes on, or raises what it raised.
  ---@return ...
  function Iterator:throw(err) return self:step("throw", err) end

  --- Stops the generator: it is cancelled at its emit and its cleanup runs
  --- (once) before this returns. Idempotent.
  function Iterator:close()
    if self.closed then return end
    self.closed = true
    call_path(self.ud, false, "synchro.runtime.gen_close", self.gid)
  end
  Iterator.__close = Iterator.close

  function Iterator.__gc(self)
    -- collected without close: stop it, without waiting here
    if not self.closed and core.state(self.ud) == "running" then
      self.closed = true
      pcall(core_submit, self.ud, -1, "synchro.runtime.gen_close", self.gid)
    end
  end

  -- An iterator is callable, so `for v in g(...)` steps it.
  function Iterator.__call(self) return self:step("next") end

  local function start(gen, in_async, ...)
    local gid = call_path(gen._ud, in_async,
      gen._start or "synchro.runtime.gen_start", gen._id, ...)
    local it = setmetatable({ ud = gen._ud, gid = gid, aio = in_async,
      closed = false }, Iterator)
    if _VERSION == "Lua 5.1" and newproxy then -- __gc on tables needs 5.2+
      local proxy = newproxy(true)
      getmetatable(proxy).__gc = function() Iterator.__gc(it) end
      it.gc_anchor = proxy
    end
    -- the 4th value closes the iterator when a 5.4 for loop is left
    return it, nil, nil, it
  end

  function WrappedGen.__call(self, ...)
    return start(self, false, ...)
  end

  --- Wraps an async generator: in it, `synchro.emit(...)` hands items out.
  --- `for v in g(...) do ... end` runs it lazily, one item per step (leaving
  --- the loop closes it on 5.4; `it:close()` everywhere); `g.aio(...)`
  --- iterates inside async code. The iterator has next, send, throw, close.
  ---@param fn async fun(...)
  ---@return synchro.Generator
  function Synchronizer:wrap_generator(fn)
    check_self(self, "wrap_generator")
    if type(fn) ~= "function" then
      argerror(1, "wrap_generator", "function expected, got " .. type(fn))
    end
    local g = setmetatable({ _ud = self._ud, _id = core.define(self._ud, fn),
      synchronizer = self }, WrappedGen)
    g.aio = function(...) return start(g, true, ...) end
    return g
  end

  --- Inside a generator (on the loop): hands the values to the consumer and
  --- waits until it asks for the next item; returns what it sent.
  ---@return any
  function synchro.emit(...)
    if not core.loop_identity() then -- the runtime exists only on a loop
      error("synchro.emit must be called by a generator on a loop " ..
        "(see S:wrap_generator)", 2)
    end
    return require("synchro.runtime").emit(...)
  end

  P.start_generator = start
end
