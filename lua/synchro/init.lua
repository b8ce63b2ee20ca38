--- synchro: call async Lua code (coroutines on a libuv loop thread) from
--- ordinary blocking code, from other async code, or through futures.
local core = require "synchro.core"
local sched = require "synchro.sched"
local aio = require "synchro.aio"

local synchro = {
  _VERSION = "0.1.0",
  aio = aio,
  Cancelled = sched.Cancelled,
  -- identity -> synchronizer userdata, for proxies that come back
  _known = setmetatable({}, { __mode = "v" }),
  -- functions marked in async modules (see synchro.generator, nowrap)
  _marks = {
    generator = setmetatable({}, { __mode = "k" }),
    plain = setmetatable({}, { __mode = "k" }),
  },
}

local core_call, core_submit = core.call, core.submit
local in_task = sched.in_task

---@class synchro.Synchronizer
---@field name string
local Synchronizer = {}
Synchronizer.__index = Synchronizer

---@class synchro.Future
---@field result fun(self: synchro.Future, timeout?: number): ...
---@field wait fun(self: synchro.Future, timeout?: number): boolean
---@field done fun(self: synchro.Future): boolean
---@field cancel fun(self: synchro.Future): boolean
local Future = core.Future

---@class synchro.Wrapped
---@field aio async fun(...): ...
---@field future fun(...): synchro.Future
---@field sync fun(...): ...
local Wrapped = {}
Wrapped.__index = Wrapped

local check = require "synchro.check"
local argerror =
  check.argerror

--- Creates a Synchronizer: one loop thread (started on first call) with
--- its own Lua VM.
---@param opts? {name?: string, grace?: number}
---@return synchro.Synchronizer
function synchro.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(1, "new", "table expected, got " .. type(opts))
  end
  opts = opts or {}
  if opts.name ~= nil and type(opts.name) ~= "string" then
    argerror(1, "new", "'name' must be a string")
  end
  if opts.grace ~= nil and type(opts.grace) ~= "number" then
    argerror(1, "new", "'grace' must be a number")
  end
  local S = setmetatable({
    name = opts.name or "synchro",
    grace = opts.grace or 5,
    _ud = core.new(opts.name or "synchro", package.path, package.cpath),
  }, Synchronizer)
  synchro._known[core.identity(S._ud)] = S._ud
  return S
end

local default
--- The shared Synchronizer of this Lua state, created on first use.
---@return synchro.Synchronizer
function synchro.default()
  if default == nil or core.state(default._ud) == "closed" then
    default = synchro.new({ name = "default" })
  end
  return default
end

local function check_self(S, fname)
  if getmetatable(S) ~= Synchronizer then
    error(("bad self to '%s' (Synchronizer expected; use S:%s)")
      :format(fname, fname), 3)
  end
end

-- How the running code can await a future, if it can: a task of a synchro
-- scheduler, or a coroutine driven by a registered adapter (synchro.luv,
-- synchro.cqueues). A plain coroutine (an iterator, say) cannot: calls
-- block there.
local adapters = {}

local function current_awaiter()
  local task = sched.current
  if task ~= nil and in_task() and task.sched.backend.notifier ~= nil then
    return sched.await_future
  end
  for i = 1, #adapters do
    local await = adapters[i]()
    if await then return await end
  end
  return nil
end

--- For adapters of foreign schedulers: detect() returns a function that
--- awaits a Future from the running coroutine, or nil when the running
--- code is not one of the adapter's coroutines.
---@param detect fun(): (fun(f: synchro.Future): ...)|nil
function synchro.register_adapter(detect)
  if type(detect) ~= "function" then
    argerror(1, "register_adapter", "function expected, got " .. type(detect))
  end
  adapters[#adapters + 1] = detect
end

--- The awaiter for the running code, or nil (see register_adapter).
synchro.current_awaiter = current_awaiter

local ypcall = sched.yieldable_pcalls()

-- Awaiters that run callbacks while they wait: awaiter -> { enter =
-- fn, leave = fn } (bracketing the call, so that the VM's inbox takes its
-- callback calls). synchro.luv registers its own.
local callback_servers = setmetatable({}, { __mode = "k" })
synchro._callback_servers = callback_servers
local in_run = { enter = function() end, leave = function() end }

-- Submits a call and awaits it. Function arguments are callbacks where the
-- awaiter can serve them (synchro.run, synchro.luv); others refuse them.
local function submit_await(await, ud, id, ...)
  local server = callback_servers[await]
  if server == nil and await == sched.await_future and
    sched.current.sched.backend.inbox then
    server = in_run -- the run scheduler serves its VM's inbox throughout
  end
  if server == nil then return await(core_submit(ud, id, ...)) end
  server.enter()
  local ok, fut, cbs = pcall(core.submit_cb, ud, id, ...)
  if not ok or cbs == nil then
    server.leave()
    if not ok then error(fut, 0) end
    return await(fut)
  end
  if server.wait then
    -- waits without raising (no pcall needed around a yield: PUC 5.1)
    server.wait(fut)
    server.leave()
    debug.getregistry()["synchro.cb_release"](cbs)
    return await(fut) -- done by now: gives the outcome
  end
  local r = sched.pack(ypcall(await, fut))
  server.leave()
  debug.getregistry()["synchro.cb_release"](cbs)
  if not r[1] then error(r[2], 0) end
  return (table.unpack or unpack)(r, 2, r.n)
end

function Wrapped.__call(self, ...)
  if sched.current ~= nil or adapters[1] ~= nil then
    local await = current_awaiter()
    if await then return submit_await(await, self._ud, self._id, ...) end
  end
  return core_call(self, ...)
end

function Wrapped.__tostring(self)
  return ("synchro.Wrapped(%s#%d)"):format(self._name, self._id)
end

-- How a wrapped function crosses into its own loop (as an upvalue of
-- another wrapped function): by identity, called in place there.
-- Elsewhere (another synchronizer's loop) it is that synchronizer's
-- wrapped function; the payload carries a reference to it.
function Wrapped.__synchro(self)
  return "synchro.fn", ("%s#%d#%s#%s"):format(core.identity(self._ud),
    self._id, core.export_string(self._ud), self._name)
end

-- A wrapped function object for function id of the synchronizer ud.
local function make_wrapped(ud, id, name, timeout)
  local w = setmetatable({ _ud = ud, _id = id, _timeout = timeout,
    _name = name }, Wrapped)
  w.aio = function(...)
    local await = current_awaiter()
    if not await then
      error("'.aio' must be called from async code (inside synchro.run, " ..
        "a task, or a synchro.luv or synchro.cqueues coroutine); call the " ..
        "function plainly to block", 2)
    end
    return submit_await(await, ud, id, ...)
  end
  -- always blocks, even in async code (blocking that scheduler)
  w.sync = function(...) return core_call(w, ...) end
  w.future = function(...) return core_submit(ud, id, ...) end
  return w
end
synchro._make_wrapped = make_wrapped

--- Wraps an async function: `f(...)` blocks until it returns (or awaits,
--- inside async code), `f.aio(...)` awaits, `f.future(...)` returns a
--- Future. The function's code and upvalues are copied to the loop VM now.
---@param fn async fun(...): ...
---@param opts? {timeout?: number, name?: string}
---@return synchro.Wrapped
function Synchronizer:wrap(fn, opts)
  check_self(self, "wrap")
  if type(fn) ~= "function" then
    argerror(1, "wrap", "function expected, got " .. type(fn))
  end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(2, "wrap", "table expected, got " .. type(opts))
  end
  opts = opts or {}
  if opts.timeout ~= nil and
    (type(opts.timeout) ~= "number" or opts.timeout < 0) then
    argerror(2, "wrap", "'timeout' must be a non-negative number")
  end
  local ud = self._ud
  local id = core.define(ud, fn)
  local name = opts.name
  if name == nil then
    local info = debug.getinfo(fn, "S")
    name = ("function <%s:%d>"):format(info.short_src, info.linedefined)
  end
  local w = make_wrapped(ud, id, name, opts.timeout)
  w.synchronizer = self
  return w
end

-- Generators -------------------------------------------------------------

---@class synchro.Generator
---@field aio fun(...): synchro.Iterator
local WrappedGen = {}
WrappedGen.__index = WrappedGen

---@class synchro.Iterator
local Iterator = {}
Iterator.__index = Iterator

-- Calls a loop-VM function by path: blocks, or awaits in async code.
local function call_path(ud, force_await, path, ...)
  local await = current_awaiter()
  if await then return await(core_submit(ud, -1, path, ...)) end
  if force_await then
    error("'.aio' generators must be iterated from async code", 3)
  end
  return core_call({ _ud = ud, _id = -1, _name = path }, path, ...)
end

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

-- Objects and modules -----------------------------------------------------
-- A loop object that cannot be copied arrives as a proxy: reading a field
-- reads it remotely, calling a method calls it remotely (blocking, .aio,
-- .future like a wrapped function), and a proxy passed back becomes the
-- object again. The same remote object gives the same proxy while it
-- lives; collecting the last one releases the object on the loop.

local Proxy = {}    -- object proxies
local FnProxy = {}  -- function proxies
local GenProxy = {} -- generator function proxies
local proxies = setmetatable({}, { __mode = "v" }) -- "identity#id" -> proxy

local function pinfo(p) return rawget(p, "\0synchro") end

local function release(info)
  if not info.released and core.state(info.ud) == "running" then
    info.released = true
    pcall(core_submit, info.ud, -1, "synchro.runtime.release", info.id,
      info.exports)
  end
end

local function anchor_gc(info)
  if _VERSION == "Lua 5.1" and newproxy then -- no __gc on 5.1 tables
    local u = newproxy(true)
    getmetatable(u).__gc = function() release(info) end
    info.anchor = u
  end
end

-- How many proxies this VM holds (for leak checks in tests).
function synchro._proxy_count() return sched.count(proxies) end

--- True when x is a proxy of an object of a synchronizer's loop.
---@param x any
---@return boolean
function synchro.is_proxy(x)
  local mt = getmetatable(x)
  return mt == Proxy or mt == FnProxy or mt == GenProxy
end

local function make_proxy(ud, ident, id, kind)
  local info = { ud = ud, id = id, exports = 1 }
  local p
  if kind == "o" then
    p = setmetatable({ ["\0synchro"] = info }, Proxy)
    info.methods = {}
  elseif kind == "g" then
    p = setmetatable({ ["\0synchro"] = info }, GenProxy)
    p.aio = function(...) return start({ _ud = ud, _start =
      "synchro.runtime.gen_start_object", _id = id }, true, ...) end
  else
    p = setmetatable({ ["\0synchro"] = info }, FnProxy)
    p.aio = function(...)
      local await = current_awaiter()
      if not await then
        error("'.aio' must be called from async code", 2)
      end
      return await(core_submit(ud, -1, "synchro.runtime.call_object", id, ...))
    end
    p.future = function(...)
      return core_submit(ud, -1, "synchro.runtime.call_object", id, ...)
    end
    p.sync = function(...)
      return core_call({ _ud = ud, _id = -1, _name = "method" },
        "synchro.runtime.call_object", id, ...)
    end
  end
  anchor_gc(info)
  proxies[ident .. "#" .. id] = p
  return p
end

local function decode_object(payload)
  local ident, id, kind = payload:match("^(.-)#(%d+)#(%a)$")
  id = tonumber(id)
  if ident == core.loop_identity() then -- back home on its own loop
    return require("synchro.runtime").object(id)
  end
  local ud = synchro._known[ident]
  if ud == nil then error("a proxy of an unknown synchronizer", 0) end
  local p = proxies[ident .. "#" .. id]
  if p then
    local info = pinfo(p)
    info.exports = info.exports + 1
    return p
  end
  return make_proxy(ud, ident, id, kind)
end

local function decode_code(payload)
  local fn = assert((loadstring or load)(payload, "=nowrap", "b"))
  if setfenv then
    setfenv(fn, _G)
  elseif debug.getupvalue(fn, 1) == "_ENV" then
    debug.setupvalue(fn, 1, _G)
  end
  return fn
end

-- Callbacks ----------------------------------------------------------------
-- A function passed to a blocking call crosses as a callback: calling it
-- from the task runs it back here, in this VM, while the caller waits.
-- It is valid until that call returns.

local Callback = {}
Callback.__index = Callback

function Callback.__call(self, ...)
  return sched.await_future(core.rcall(self.inbox, self.id, ...))
end

local function release_callback(self)
  if not self.released then
    self.released = true
    core.inbox_unref(self.inbox)
  end
end
Callback.__gc = release_callback

local function decode_callback(payload)
  local inbox, id = payload:match("^(.-)#(%d+)$")
  local cb = setmetatable({ inbox = inbox, id = tonumber(id) }, Callback)
  if _VERSION == "Lua 5.1" and newproxy then
    local u = newproxy(true)
    getmetatable(u).__gc = function() release_callback(cb) end
    cb.anchor = u
  end
  return cb
end

do
  local registry = debug.getregistry()
  local ext = registry["synchro.ext"] or {}
  registry["synchro.ext"] = ext
  ext["synchro.obj"] = decode_object
  ext["synchro.code"] = decode_code
  ext["synchro.cb"] = decode_callback
  if not core.loop_identity() then -- a caller's VM: export callbacks
    local callbacks, next_id = {}, 0
    registry["synchro.cb_pending"] = {}
    registry["synchro.proxy_exporter"] = function(v)
      if type(v) ~= "function" then return nil end
      next_id = next_id + 1
      callbacks[next_id] = v
      local pending = registry["synchro.cb_pending"]
      pending[#pending + 1] = next_id
      return "synchro.cb", core.inbox_ref() .. "#" .. next_id
    end
    registry["synchro.run_callback"] = function(id, ...)
      local fn = callbacks[id]
      if fn == nil then
        return false, "callback called after the call that passed it " ..
          "returned", ""
      end
      local r = sched.pack(ypcall(fn, ...))
      if r[1] then return (table.unpack or unpack)(r, 1, r.n) end
      return false, r[2], ""
    end
    registry["synchro.cb_release"] = function(list)
      for i = 1, #list do callbacks[list[i]] = nil end
    end
  end
end

-- How a proxy goes back to its loop: as the object it stands for.
local function proxy_marshal(p)
  local info = pinfo(p)
  return "synchro.obj", core.identity(info.ud) .. "#" .. info.id .. "#o"
end
Proxy.__synchro, FnProxy.__synchro, GenProxy.__synchro =
  proxy_marshal, proxy_marshal, proxy_marshal

local function remote(info, path, ...)
  return call_path(info.ud, false, path, info.id, ...)
end

function Proxy.__index(p, key)
  local info = pinfo(p)
  if key == "aio" then
    -- obj.aio:m(...) awaits the method
    return setmetatable({}, { __index = function(_, k)
      local m = p[k]
      return function(_, ...) return m.aio(p, ...) end
    end })
  end
  local cached = info.methods[key]
  if cached ~= nil then return cached end
  local v = remote(info, "synchro.runtime.get_field", key)
  if synchro.is_proxy(v) and getmetatable(v) ~= Proxy then
    info.methods[key] = v -- methods rarely change: one round trip each
  end
  return v
end

function Proxy.__newindex(p, key, value)
  local info = pinfo(p)
  info.methods[key] = nil
  remote(info, "synchro.runtime.set_field", key, value)
end

function Proxy.__call(p, ...)
  return remote(pinfo(p), "synchro.runtime.call_object", ...)
end

function FnProxy.__call(p, ...)
  return remote(pinfo(p), "synchro.runtime.call_object", ...)
end

function GenProxy.__call(p, ...)
  local info = pinfo(p)
  return start({ _ud = info.ud, _start = "synchro.runtime.gen_start_object",
    _id = info.id }, false, ...)
end

--- Runs the remote object's __close (else its close method), once.
function Proxy.__close(p)
  local info = pinfo(p)
  if info.closed then return end
  info.closed = true
  remote(info, "synchro.runtime.close_object")
end

local function proxy_gc(p) release(pinfo(p)) end
Proxy.__gc, FnProxy.__gc, GenProxy.__gc = proxy_gc, proxy_gc, proxy_gc

local function proxy_tostring(p)
  local info = pinfo(p)
  return ("synchro.Proxy(#%d)"):format(info.id)
end
Proxy.__tostring, FnProxy.__tostring, GenProxy.__tostring =
  proxy_tostring, proxy_tostring, proxy_tostring

--- require(name) on the loop and return it for plain code: its functions
--- become wrapped functions (blocking, .aio, .future), functions marked
--- with synchro.generator become generators, objects it hands out become
--- proxies. The recommended layout: mylib/init.lua is
--- `return S:wrap_module("mylib.impl")`.
---@param name string
---@return table
function Synchronizer:wrap_module(name)
  check_self(self, "wrap_module")
  if type(name) ~= "string" then
    argerror(1, "wrap_module", "string expected, got " .. type(name))
  end
  return call_path(self._ud, false, "synchro.runtime.require_module", name)
end

--- Marks fn, in an async module, as a generator (see wrap_module).
---@param fn async fun(...)
---@return function
function synchro.generator(fn)
  if type(fn) ~= "function" then
    argerror(1, "generator", "function expected, got " .. type(fn))
  end
  synchro._marks.generator[fn] = true
  return fn
end

--- Marks fn, in an async module, to be copied as plain code rather than
--- wrapped (it runs in the caller's VM; upvalues other than globals are
--- not copied).
---@param fn function
---@return function
function synchro.nowrap(fn)
  if type(fn) ~= "function" then
    argerror(1, "nowrap", "function expected, got " .. type(fn))
  end
  synchro._marks.plain[fn] = true
  return fn
end

--- Runs fn(obj) and then closes obj (a proxy's remote __close or close,
--- or obj:close()), also when fn raises; returns fn's results.
---@param obj any
---@param fn fun(obj: any): ...
---@return ...
function synchro.with(obj, fn)
  if type(fn) ~= "function" then
    argerror(2, "with", "function expected, got " .. type(fn))
  end
  local r = sched.pack(pcall(fn, obj))
  local close
  if getmetatable(obj) == Proxy then
    close = Proxy.__close
  else
    local mt = getmetatable(obj)
    close = (type(mt) == "table" and mt.__close) or
      (type(obj) == "table" and obj.close)
  end
  if close then
    local ok, err = pcall(close, obj)
    if r[1] and not ok then error(err, 0) end
  end
  if not r[1] then error(r[2], 0) end
  return (table.unpack or unpack)(r, 2, r.n)
end

--- Closes the Synchronizer: cancels its tasks, lets their cleanup run for
--- up to `grace` seconds, then stops its thread. Idempotent.
---@param grace? number
function Synchronizer:close(grace)
  check_self(self, "close")
  if grace ~= nil and type(grace) ~= "number" then
    argerror(1, "close", "number expected, got " .. type(grace))
  end
  core.close(self._ud, grace or self.grace)
end
Synchronizer.__close = function(self) self:close() end

--- A reference to this Synchronizer that another Lua state (on another
--- OS thread) turns back into a Synchronizer with synchro.import. Import
--- each exported reference exactly once.
---@return lightuserdata
function Synchronizer:export()
  check_self(self, "export")
  return core.export(self._ud)
end

--- The Synchronizer behind a reference from S:export(). Collecting the
--- imported object does not close the Synchronizer; close() does.
---@param ref lightuserdata
---@return synchro.Synchronizer
function synchro.import(ref)
  if type(ref) ~= "userdata" then
    argerror(1, "import", "reference from S:export() expected, got " ..
      type(ref))
  end
  local S = setmetatable({ name = "imported", grace = 5,
    _ud = core.import(ref) }, Synchronizer)
  synchro._known[core.identity(S._ud)] = S._ud
  return S
end

--- "new", "running", "closing" or "closed".
---@return string
function Synchronizer:state()
  check_self(self, "state")
  return core.state(self._ud)
end

function Synchronizer.__tostring(self)
  return ("synchro.Synchronizer(%s, %s)"):format(self.name,
    core.state(self._ud))
end

-- Futures ---------------------------------------------------------------

--- Waits for the result: returns the call's results or raises its error.
--- With a timeout, returns `nil, "ETIMEDOUT: ...", "ETIMEDOUT"` if the call
--- is still running then (the call goes on; cancel() stops it). Inside
--- async code it awaits instead of blocking.
function Future:result(timeout)
  if timeout ~= nil and type(timeout) ~= "number" then
    argerror(1, "result", "number expected, got " .. type(timeout))
  end
  local await = current_awaiter()
  if await then return await(self) end
  if not self:wait(timeout) then
    return nil, ("ETIMEDOUT: future not done after %g s"):format(timeout),
      "ETIMEDOUT"
  end
  return self:outcome()
end

-- synchro.run: a scheduler on the calling thread --------------------------

-- Timers for synchro.run, kept in a list sorted by deadline.
local function new_timers()
  local list = {}
  local timers = {}
  local Timer = {}
  Timer.__index = Timer
  function Timer:start(seconds)
    self:stop()
    self.deadline = core.now() + math.max(seconds, 0)
    local i = #list
    while i > 0 and list[i].deadline > self.deadline do i = i - 1 end
    table.insert(list, i + 1, self)
  end
  function Timer:stop()
    for i = 1, #list do
      if list[i] == self then table.remove(list, i) return end
    end
  end
  Timer.close = Timer.stop
  function timers.new(fn) return setmetatable({ fn = fn }, Timer) end
  function timers.next_timeout()
    if list[1] == nil then return nil end
    return math.max(list[1].deadline - core.now(), 0)
  end
  function timers.fire()
    local now = core.now()
    while list[1] and list[1].deadline <= now do
      local t = table.remove(list, 1)
      t.fn()
    end
  end
  function timers.empty() return list[1] == nil end
  return timers
end

-- Runs a callback call (from a task of a loop) as a task here.
local function serve_callback(rcall)
  local run = debug.getregistry()["synchro.run_callback"]
  core.rreply(rcall, run(core.rargs(rcall)))
end

local function run_loop(s, main_task, backend, timers)
  local interrupted = false
  while s.nlive > 0 do
    s:run_ready()
    if s.nlive == 0 then break end
    local timeout = timers.next_timeout()
    if timeout == nil and next(backend.waiting) == nil then
      error("synchro.run: every task is waiting and nothing can wake " ..
        "them (deadlock)", 0)
    end
    local why = backend.notifier:wait(timeout)
    if why == "interrupted" and not interrupted then
      interrupted = true
      -- Ctrl-C: cancel everything, let cleanup run, then re-raise.
      for task in pairs(s.live) do s:cancel(task) end
    end
    local keys, callbacks = backend.notifier:take()
    for i = 1, #callbacks do s:spawn(serve_callback, callbacks[i]) end
    for i = 1, #keys do
      local list = backend.waiting[keys[i]]
      backend.waiting[keys[i]] = nil
      if list then
        for j = 1, #list do list[j]() end
      end
    end
    timers.fire()
  end
  if interrupted then error("interrupted!", 0) end
  if not main_task.ok then error(main_task.err, 0) end
  local r = main_task.result
  return (table.unpack or unpack)(r, 1, r.n)
end

--- Runs `main(...)` as a task of a scheduler on the calling thread and
--- returns its results: `.aio` calls, `synchro.gather`, `synchro.race`,
--- `synchro.spawn` and `synchro.aio.sleep` work inside it. Returns once
--- main and every task it spawned have finished.
---@param main async fun(...): ...
---@return ...
function synchro.run(main, ...)
  if type(main) ~= "function" then
    argerror(1, "run", "function expected, got " .. type(main))
  end
  if sched.current ~= nil then
    error("synchro.run cannot be nested inside async code; await instead",
      2)
  end
  local timers = new_timers()
  -- the VM's inbox: completed calls, and callbacks this scheduler runs
  local backend = { notifier = core.inbox(), inbox = true, waiting = {},
    timer = timers.new, now = core.now }
  local s = sched.new(backend)
  local main_task = s:spawn(main, ...)
  core.inbox_enter()
  local r = sched.pack(pcall(run_loop, s, main_task, backend, timers))
  core.inbox_leave()
  if not r[1] then error(r[2], 0) end
  return (table.unpack or unpack)(r, 2, r.n)
end

--- Like aio.gather, inside synchro.run.
synchro.gather = aio.gather
--- Like aio.race, inside synchro.run.
synchro.race = aio.race
--- Like aio.spawn, inside synchro.run.
synchro.spawn = aio.spawn

--- The remote traceback of a table error that came back from a call.
---@param err table
---@return string|nil
function synchro.traceback(err)
  if type(err) ~= "table" then return nil end
  return core.traceback(err)
end

--- True when err is a cancellation (of a task or of a call).
---@param err any
---@return boolean
function synchro.is_cancelled(err)
  return err == sched.Cancelled or
    (type(err) == "string" and err:find("ECANCELED", 1, true) ~= nil)
end

return synchro
