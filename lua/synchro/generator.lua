--- Generators: S:wrap_generator, iterators (next, send, throw, close)
--- and synchro.emit. Installed into synchro by init.lua.
local core = require "synchro.core"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro, Synchronizer, P)
  local check_self, call_op = P.check_self, P.call_op
  local OP_GEN_START, OP_GEN_NEXT = core.OP_GEN_START, core.OP_GEN_NEXT
  local OP_GEN_CLOSE = core.OP_GEN_CLOSE

  -- Generators -------------------------------------------------------------

  ---@class synchro.Generator
  ---@field aio fun(...): synchro.Iterator
  local WrappedGen = {}
  WrappedGen.__index = WrappedGen

  -- The loop side's function goes with the generator function; iterators
  -- already started hold the function themselves.
  function WrappedGen.__gc(g)
    pcall(core.post, g._ud, core.OP_RELEASE_FN, g._id)
  end

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
    return finish_step(self, call_op(self.ud, self.aio, OP_GEN_NEXT,
      self.gid, "generator", how, value))
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
    call_op(self.ud, false, OP_GEN_CLOSE, self.gid, "generator")
  end
  Iterator.__close = Iterator.close

  function Iterator.__gc(self)
    -- collected without close: stop it, without waiting here
    if not self.closed and core.state(self.ud) == "running" then
      self.closed = true
      pcall(core.post, self.ud, OP_GEN_CLOSE, self.gid)
    end
  end

  -- An iterator is callable, so `for v in g(...)` steps it.
  function Iterator.__call(self) return self:step("next") end

  local function start(gen, in_async, ...)
    local gid = call_op(gen._ud, in_async, gen._start_op or OP_GEN_START,
      gen._id, "generator", ...)
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
    if _VERSION == "Lua 5.1" and newproxy then
      local u = newproxy(true)
      getmetatable(u).__gc = function() WrappedGen.__gc(g) end
      g._anchor = u
    end
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
