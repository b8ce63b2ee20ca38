--- Generators: S:wrap_generator, iterators (next, send, throw, close)
--- and synchro.emit. Installed into synchro by init.lua.
local core = require "synchro.core"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro, Synchronizer, P)
  local check_self, call_op = P.check_self, P.call_op
  local OP_GEN_START, OP_GEN_NEXT = core.OP_GEN_START, core.OP_GEN_NEXT
  local OP_GEN_CLOSE, OP_GEN_RELEASE = core.OP_GEN_CLOSE, core.OP_GEN_RELEASE
  local OP_GEN_RETAIN, OP_RETAIN_FN = core.OP_GEN_RETAIN, core.OP_RETAIN_FN
  local sched = require "synchro.sched"
  local kinds = require "synchro.kinds"

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

  -- Raises a loop-side error with its traceback appended (string errors);
  -- proxy.lua's context managers raise theirs the same way.
  local function raise_remote(err, tb)
    if type(err) == "string" and type(tb) == "string" and tb ~= "" then
      error(err .. "\n" .. tb, 0)
    end
    error(err, 0)
  end
  P.raise_remote = raise_remote

  -- A step's error arrives as (err, traceback, cancelled): a
  -- cancellation as its message, made one again here.
  local function step_error(err, tb, cancelled)
    if cancelled then return sched.cancelled(err), tb end
    return err, tb
  end

  local function finish_step(it, kind, ...)
    if kind == "item" then return ... end
    it.closed = true
    if kind == "error" then raise_remote(step_error(...)) end
    return nil
  end

  -- What an error sent to the loop becomes there: a cancellation crosses
  -- as its message (and is one again there), anything else as itself if
  -- it can, else as its text.
  local function sendable_error(err)
    if sched.is_cancelled(err) then return tostring(err), true end
    if type(err) == "table" and getmetatable(err) ~= nil and
      not rawget(getmetatable(err), "__synchro") then
      return tostring(err), false
    end
    return err, false
  end
  P.sendable_error = sendable_error

  function Iterator:step(how, value)
    if self.closed then return nil end
    local cancelled
    if how == "throw" then value, cancelled = sendable_error(value) end
    return finish_step(self, call_op(self.ud, self.aio, OP_GEN_NEXT,
      self.gid, how, how, value, cancelled))
  end

  -- The raw outcome of a step: "item", values... | "end" | "error", err,
  -- traceback (for synchro.contextmanager, which compares errors).
  function P.step_raw(it, how, value)
    local cancelled
    if how == "throw" then value, cancelled = sendable_error(value) end
    local r = sched.pack(call_op(it.ud, it.aio, OP_GEN_NEXT, it.gid,
      "generator", how, value, cancelled))
    if r[1] ~= "item" then it.closed = true end
    if r[1] == "error" then r[2], r[3] = step_error(r[2], r[3], r[4]) end
    return r
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
  --- (once) before this returns, or the generator's close_timeout passes
  --- (its cleanup then goes on by itself). Idempotent; every copy of the
  --- iterator (one that crossed to another VM) sees it ended.
  function Iterator:close()
    if self.closed then return end
    self.closed = true
    self.released = true
    if core.state(self.ud) == "closed" then return end
    call_op(self.ud, false, OP_GEN_CLOSE, self.gid, "generator",
      self.close_timeout)
  end
  Iterator.__close = Iterator.close

  function Iterator.__gc(self)
    -- collected without close: this copy is gone, without waiting here
    -- (the last copy gone stops the generator)
    if not self.released and not self.closed then -- (ended: gone there)
      self.released = true
      pcall(core.post, self.ud, OP_GEN_RELEASE, self.gid, self.close_timeout)
    end
  end

  -- An iterator crosses (an argument, a result, an upvalue) as a copy
  -- that steps the same generator; the generator stops at an explicit
  -- close, or once every copy is gone.
  function Iterator.__synchro(self)
    if self.closed then return "synchro.iter", "0#0#" end
    core.post(self.ud, OP_GEN_RETAIN, self.gid)
    return "synchro.iter", ("%d#%d#%s"):format(core.identity(self.ud),
      self.gid, tostring(self.close_timeout or ""))
  end
  kinds.own(Iterator.__synchro)

  -- An iterator is callable, so `for v in g(...)` steps it.
  function Iterator.__call(self) return self:step("next") end

  local function make_iterator(ud, gid, in_async, close_timeout)
    local it = setmetatable({ ud = ud, gid = gid, aio = in_async,
      closed = false, close_timeout = close_timeout }, Iterator)
    if _VERSION == "Lua 5.1" and newproxy then -- __gc on tables needs 5.2+
      local proxy = newproxy(true)
      getmetatable(proxy).__gc = function() Iterator.__gc(it) end
      it.gc_anchor = proxy
    end
    return it
  end

  local function start(gen, in_async, ...)
    local gid = P.call_op_as(gen._ud, in_async, gen._start_op or
      OP_GEN_START, gen._id, gen._argname or "generator", gen._argshift, ...)
    local it = make_iterator(gen._ud, gid, in_async,
      gen._close_timeout or P.grace_of(gen._ud))
    -- the 4th value closes the iterator when a 5.4 for loop is left
    return it, nil, nil, it
  end

  function WrappedGen.__call(self, ...)
    return start(self, false, ...)
  end

  -- A generator object for function id of ud; it owns one reference to
  -- the function on the loop.
  local function make_generator(ud, id, close_timeout)
    local g = setmetatable({ _ud = ud, _id = id,
      _close_timeout = close_timeout }, WrappedGen)
    g.aio = function(...) return start(g, true, ...) end
    if _VERSION == "Lua 5.1" and newproxy then
      local u = newproxy(true)
      getmetatable(u).__gc = function() WrappedGen.__gc(g) end
      g._anchor = u
    end
    return g
  end

  -- A wrapped generator crosses (an argument, a result, an upvalue) as
  -- itself: iterating the copy, in whichever VM, runs the generator on its
  -- own loop. The copy owns one reference to the function, sent ahead.
  function WrappedGen.__synchro(g)
    core.post(g._ud, OP_RETAIN_FN, g._id)
    return "synchro.gen", ("%d#%d#%s"):format(core.identity(g._ud), g._id,
      tostring(g._close_timeout or ""))
  end
  kinds.own(WrappedGen.__synchro)

  function WrappedGen.__tostring(g)
    return ("synchro.Generator(#%d)"):format(g._id)
  end

  local function payload_timeout(s)
    return s ~= "" and tonumber(s) or nil
  end

  do
    local ext = debug.getregistry()["synchro.ext"] or {}
    debug.getregistry()["synchro.ext"] = ext
    ext["synchro.gen"] = function(payload)
      local ident, id, t = payload:match("^(%d+)#(%d+)#(.*)$")
      if ident == nil then error("malformed synchro.gen payload", 0) end
      return make_generator(P.synchronizer_of(tonumber(ident)), tonumber(id),
        payload_timeout(t))
    end
    ext["synchro.iter"] = function(payload)
      local ident, gid, t = payload:match("^(%d+)#(%d+)#(.*)$")
      if ident == nil then error("malformed synchro.iter payload", 0) end
      if ident == "0" then -- a closed iterator: ended here too
        return setmetatable({ closed = true, released = true }, Iterator)
      end
      return make_iterator(P.synchronizer_of(tonumber(ident)), tonumber(gid),
        false, payload_timeout(t))
    end
  end

  --- Wraps an async generator: in it, `synchro.emit(...)` hands items out.
  --- `for v in g(...) do ... end` runs it lazily, one item per step (leaving
  --- the loop closes it on 5.4; `it:close()` everywhere); `g.aio(...)`
  --- iterates inside async code. The iterator has next, send, throw, close.
  --- `opts.close_timeout` (seconds, default the Synchronizer's grace)
  --- bounds how long `it:close()` waits for the generator's cleanup.
  ---@param fn async fun(...)
  ---@param opts? {close_timeout?: number}
  ---@return synchro.Generator
  function Synchronizer:wrap_generator(fn, opts)
    check_self(self, "wrap_generator")
    if getmetatable(fn) == WrappedGen and opts == nil then return fn end
    if type(fn) ~= "function" then
      argerror(1, "wrap_generator", "function expected, got " .. type(fn))
    end
    opts = check.opts(opts, 2, "wrap_generator", { "close_timeout" })
    local close_timeout = check.time(opts.close_timeout, 2, "wrap_generator",
      "close_timeout")
    if opts.close_timeout == nil then close_timeout = self.grace end
    local g = make_generator(self._ud, core.define(self._ud, fn),
      close_timeout)
    g.synchronizer = self
    return g
  end
  P.WrappedGen, P.Iterator = WrappedGen, Iterator

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
