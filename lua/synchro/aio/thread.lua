--- synchro.aio.thread: run a blocking Lua function on a worker thread, so
--- that it does not stall the loop (`aio.run_in_thread`).
---
--- Each loop has a pool of worker threads (4 by default, see `configure`),
--- each with its own Lua VM that has the loop VM's package.path and
--- package.cpath. The function crosses like a wrapped function: its code
--- and upvalues are copied (globals are the worker's own); arguments and
--- results are copied like a call's. A worker keeps the functions it has
--- decoded, keyed by their code and upvalue values, so calling the same
--- function again does not reload it.
local core = require "synchro.core"
local sched = require "synchro.sched"

local M = {}

local unpack = table.unpack or unpack
local SHORT_FRAMES = 6

--- The worker's traceback, in the style of the loop's remote tracebacks.
local function format_traceback(tb)
  if type(tb) ~= "string" or tb == "" then return "" end
  local full = os.getenv("SYNCHRO_TRACEBACK") == "full"
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if line ~= "stack traceback:" and
      (full or not line:find("^%s*%[C%]: in %?$")) then
      lines[#lines + 1] = line
    end
  end
  if not full and #lines > SHORT_FRAMES then
    local n = #lines
    for i = n, SHORT_FRAMES + 1, -1 do lines[i] = nil end
    lines[#lines + 1] = ("\t(%d more; SYNCHRO_TRACEBACK=full shows all)")
      :format(n - SHORT_FRAMES)
  end
  if #lines == 0 then return "" end
  return "[worker thread] stack traceback:\n" .. table.concat(lines, "\n")
end

local function pack(...) return { n = select("#", ...), ... } end

local function worker_error(err, tb)
  tb = format_traceback(tb)
  if type(err) == "string" and tb ~= "" then err = err .. "\n" .. tb end
  return err
end

local function in_loop_task()
  return sched.loop and sched.in_task() and
    sched.current_task().sched == sched.loop
end

local function check_fn(fn, n, name)
  if type(fn) ~= "function" then
    error(("bad argument #%d to '%s' (function expected, got %s)")
      :format(n, name, type(fn)), 3)
  end
end

-- Runs fn(...) on pool (nil: the loop's) and waits for it.
local function run_on(pool, what, fn, ...)
  local task, token = sched.prepare(what)
  local outcome
  local function done(...)
    outcome = pack(...)
    task.sched:wake(task, token)
  end
  local id
  if pool then
    id = core.workers_submit_on(pool, fn, done, ...)
  else
    id = core.workers_submit(fn, done, ...)
  end
  sched.suspend(task, function()
    -- not started: dropped, stop waiting; else it is interrupted, and
    -- the task waits for its cleanup to end
    return not core.workers_cancel(id, pool)
  end)
  if outcome[1] then return unpack(outcome, 2, outcome.n) end
  error(worker_error(outcome[2], outcome[3]), 0)
end

--- Runs `fn(...)` on a worker thread and waits (without blocking the loop)
--- for its results. An error raised by `fn` is raised here (a string gets
--- the worker's traceback appended). A cancelled task stops waiting at
--- once if `fn` has not started yet; a running `fn` is interrupted (the
--- worker raises `ECANCELED` inside it, so its `pcall` cleanup runs), and
--- the task waits for it to end, then raises the cancellation. Code inside
--- a C function, or in a loop LuaJIT compiled, cannot be interrupted.
---@param fn fun(...): ...
---@return ...
function M.run_in_thread(fn, ...)
  check_fn(fn, 1, "run_in_thread")
  if not in_loop_task() then
    -- outside a loop's task: on the default synchronizer's loop
    return require("synchro").to_thread(fn, ...)
  end
  return run_on(nil, "aio.run_in_thread", fn, ...)
end

-- Blocking generators -------------------------------------------------------

local DEFAULT_BUFFER = 64

---@class synchro.aio.ThreadIterator
---@field close fun(self: synchro.aio.ThreadIterator)
local Iter = {}
Iter.__index = Iter

-- Waits (in the current task) until notify() runs for it.
local function wait_notify(it, what)
  local task, token = sched.prepare(what)
  it.waiter = { task = task, token = token }
  local ok, err = pcall(sched.suspend, task)
  it.waiter = nil
  if not ok then error(err, 0) end
end

-- Stops the generator and waits for its cleanup on the worker (shielded).
local function stop(it)
  if it.state ~= "more" then return end
  it.state = "end"
  it.buf, it.pos, it.count = {}, 1, 0
  local handle = it.handle
  if not handle:stop() and sched.in_task() then
    sched.shield(function()
      while handle:take() == "more" do wait_notify(it, "iterator:close") end
    end)
  end
  handle:close()
end

function Iter.__call(it)
  while it.pos > it.count do
    if it.state == "end" then return nil end
    if it.state == "error" then
      it.state = "end"
      error(it.err, 0)
    end
    local state, items, tb = it.handle:take()
    if state == "more" then
      if #items > 0 then
        it.buf, it.pos, it.count = items, 1, #items
      else
        local ok, err = pcall(wait_notify, it, "iterator")
        if not ok then
          stop(it) -- cancelled: the generator's cleanup runs first
          error(err, 0)
        end
      end
    elseif state == "end" then
      it.state = "end"
      it.handle:close()
    else
      it.state, it.err = "error", worker_error(items, tb)
      it.handle:close()
    end
  end
  local item = it.buf[it.pos]
  it.buf[it.pos] = nil
  it.pos = it.pos + 1
  return unpack(item, 1, item.n)
end

--- The next item (nil at the end); the same as calling the iterator (Lua
--- 5.1 cannot yield inside a `for` iterator: step with `it:next()` there).
---@return ...
function Iter:next() return Iter.__call(self) end

--- Stops the generator (its cleanup runs on the worker and is waited for);
--- later calls return nil.
function Iter:close() stop(self) end
Iter.__close = Iter.close

-- iter_in_thread's arguments: ([opts,] fn, ...) -> opts, fn, the index
-- of fn (1 or 2). Raises at the user's line on misuse.
local function iter_args(name, opts_or_fn, ...)
  local opts, fn, n = {}, opts_or_fn, 1
  if type(opts_or_fn) == "table" and getmetatable(opts_or_fn) == nil then
    opts = require("synchro.check").opts(opts_or_fn, 1, name, { "buffer" })
    fn, n = ..., 2
  end
  local buffer = opts.buffer or DEFAULT_BUFFER
  if type(buffer) ~= "number" or buffer ~= math.floor(buffer) or
    buffer < 1 or buffer > 1000000 then
    require("synchro.check").argerror(1, name,
      "buffer must be an integer between 1 and 1000000")
  end
  if type(fn) ~= "function" then
    require("synchro.check").argerror(n, name,
      "function expected, got " .. type(fn))
  end
  return { buffer = buffer }, fn, n
end

--- Runs the blocking generator `fn(...)` on a worker thread: each
--- `coroutine.yield(...)` inside it is an item, and the result iterates
--- them from async code (`for v in aio.iter_in_thread(fn) do`). At most
--- `opts.buffer` items (default 64) wait for the consumer; then the worker
--- waits (back pressure). Leaving the loop early: `it:close()` (a `break`
--- does it on Lua 5.4) interrupts the generator and waits for its cleanup;
--- so does a cancellation of the consuming task. Outside a loop's task
--- (plain code, `synchro.run`...) it is `synchro.iter_in_thread`.
---@param opts_or_fn table|fun(...)
---@return synchro.aio.ThreadIterator
function M.iter_in_thread(opts_or_fn, ...)
  if not in_loop_task() then
    -- outside a loop's task: on the default synchronizer's loop
    return require("synchro").iter_in_thread(opts_or_fn, ...)
  end
  local opts, fn, n = iter_args("iter_in_thread", opts_or_fn, ...)
  local buffer = opts.buffer
  sched.task("aio.iter_in_thread")
  local it = setmetatable({ buf = {}, pos = 1, count = 0,
    state = "more" }, Iter)
  -- notify stays in the registry while the handle lives: it must not
  -- hold the iterator, or a dropped iterator would never be collected
  local weak = setmetatable({ it = it }, { __mode = "v" })
  local function notify()
    local self = weak.it
    local w = self and self.waiter
    if w then
      self.waiter = nil
      w.task.sched:wake(w.task, w.token)
    end
  end
  if n == 2 then
    it.handle = core.workers_gen(nil, buffer, fn, notify, select(2, ...))
  else
    it.handle = core.workers_gen(nil, buffer, fn, notify, ...)
  end
  return it, nil, nil, it
end

--- Sets the pool's options for the current loop: `workers` (>= 1), the
--- most worker threads that run at once (default 4).
---@param opts { workers: integer? }
function M.configure(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'configure' (table expected, got " ..
      type(opts) .. ")", 2)
  end
  require("synchro.check").opts(opts, 1, "configure", { "workers" })
  local n = opts.workers
  if n ~= nil then
    if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
      error("bad argument #1 to 'configure' (workers must be an integer " ..
        ">= 1)", 2)
    end
    core.workers_configure(n)
  end
end

---@class synchro.aio.ThreadStats
---@field workers integer
---@field idle integer
---@field busy integer
---@field queued integer
---@field max integer
---@field vms integer

--- The pool's state, for tests and debugging: `workers` (threads alive),
--- `idle`, `busy`, `queued` (jobs waiting for a worker), `max`, and `vms`
--- (worker VMs created so far).
---@return synchro.aio.ThreadStats
function M.stats()
  return core.workers_stats()
end


-- Offloaded objects --------------------------------------------------------
-- An object built on a private pool of one worker, whose VM keeps it: its
-- methods run there, in order, so its state lasts across calls.

local SELF = "\0synchro.offloaded.self"
local offloaded, next_offloaded = {}, 0

-- The worker's side: runs a method of the object (no upvalues: this code
-- is decoded once by the worker and cached). A result that is the object
-- comes back as SELF.
local function call_method(key, with_self, ...)
  local obj = debug.getregistry()["synchro.offloaded"]
  local f = obj[key]
  if f == nil then error(("no method '%s'"):format(tostring(key)), 0) end
  local function pk(...) return { n = select("#", ...), ... } end
  local r
  if with_self then r = pk(f(obj, ...)) else r = pk(f(...)) end
  for i = 1, r.n do
    if rawequal(r[i], obj) then r[i] = "\0synchro.offloaded.self" end
  end
  return (table.unpack or unpack)(r, 1, r.n)
end

--- The loop's side of S:offload: builds the object with ctor(...) on a
--- new pool of one worker and returns its id and its method names.
function M._offload_open(ctor, ...)
  local pool = core.workers_pool(1)
  local names = run_on(pool, "S:offload", function(...)
    local obj = ctor(...)
    if type(obj) ~= "table" and type(obj) ~= "userdata" then
      error("the object to offload must be a table or a userdata, got " ..
        type(obj), 0)
    end
    debug.getregistry()["synchro.offloaded"] = obj
    -- its callable fields, its metatables' __index tables' too
    local list, seen, t = {}, {}, obj
    for _ = 1, 16 do
      if type(t) == "table" then
        for k, v in pairs(t) do
          local mt = getmetatable(v)
          if type(k) == "string" and not seen[k] and (type(v) ==
            "function" or (type(mt) == "table" and mt.__call)) then
            seen[k] = true
            list[#list + 1] = k
          end
        end
      end
      local mt = getmetatable(t)
      t = type(mt) == "table" and mt.__index or nil
      if type(t) ~= "table" then break end
    end
    table.sort(list)
    return list
  end, ...)
  next_offloaded = next_offloaded + 1
  offloaded[next_offloaded] = pool
  return next_offloaded, names
end

--- The loop's side of an offloaded object's method call.
local inflight, released = {}, {} -- id -> calls running; id -> true

local function shutdown(id)
  local pool = offloaded[id]
  offloaded[id], inflight[id], released[id] = nil, nil, nil
  if pool then getmetatable(pool).__gc(pool) end
end

local function call_done(id, ok, ...)
  inflight[id] = inflight[id] - 1
  if inflight[id] == 0 and released[id] then shutdown(id) end
  if not ok then error((...), 0) end
  return ...
end

function M._offload_call(id, key, with_self, ...)
  local pool = offloaded[id]
  if pool == nil or released[id] then
    error("this offloaded object was released", 0)
  end
  inflight[id] = (inflight[id] or 0) + 1
  return call_done(id, pcall(run_on, pool, "offloaded method", call_method,
    key, with_self, ...))
end

--- Lets an offloaded object go: its worker ends once its calls are done.
function M._offload_release(id)
  if (inflight[id] or 0) > 0 then
    released[id] = true
  else
    shutdown(id)
  end
end

--- How many offloaded objects are alive (for leak checks).
function M._offload_count() return sched.count(offloaded) end

--- Installs the user side: synchro.to_thread, S:to_thread, S:offload,
--- S:offload_module (called by init.lua).
function M._install(synchro, Synchronizer)
  local check = require "synchro.check"

  --- Runs the blocking `fn(...)` on a worker thread of this synchronizer's
  --- loop and returns its results: blocks plain code, and awaits (without
  --- stalling the scheduler) inside `synchro.run`, a task, or a
  --- `synchro.luv`/cqueues coroutine. `fn` crosses as code, like a
  --- wrapped function (its upvalues are copied).
  ---@param fn fun(...): ...
  ---@return ...
  function Synchronizer:to_thread(fn, ...)
    check_fn(fn, 1, "to_thread")
    local w = self:wrap(function(...)
      return require("synchro.aio.thread").run_in_thread(fn, ...)
    end, { name = "to_thread" })
    w._argname, w._argshift = "to_thread", 1 -- fn is argument 1
    return synchro._call_as(w, ...)
  end

  --- Like S:to_thread on the default synchronizer; inside a task of a
  --- loop, `aio.run_in_thread` on that loop.
  ---@param fn fun(...): ...
  ---@return ...
  function synchro.to_thread(fn, ...)
    check_fn(fn, 1, "to_thread")
    if in_loop_task() then
      return run_on(nil, "synchro.to_thread", fn, ...)
    end
    if sched.loop then
      error("synchro.to_thread: in a loop's VM, call it from a task", 2)
    end
    return synchro.default():to_thread(fn, ...)
  end

  --- Runs the blocking generator `fn(...)` on a worker thread of this
  --- synchronizer's loop and iterates its items (each
  --- `coroutine.yield(...)` in `fn`) from anywhere: plain code blocks for
  --- each item, `synchro.run` and the other schedulers await it. The
  --- iterator is a wrapped generator's (next, close; a `break` closes it
  --- on 5.4): at most `opts.buffer` items (default 64) wait; closing it
  --- interrupts `fn` and waits for its cleanup.
  ---@param opts_or_fn {buffer?: integer}|fun(...)
  ---@return synchro.Iterator
  function Synchronizer:iter_in_thread(opts_or_fn, ...)
    local opts, fn, n = iter_args("iter_in_thread", opts_or_fn, ...)
    local g = self:wrap_generator(function(...)
      local thread = require("synchro.aio.thread")
      local it = thread.iter_in_thread(opts, fn, ...)
      local emit = require("synchro").emit
      local function forward(...) -- nil at the end; an item leaves "more"
        if it.state ~= "more" then return false end
        emit(...)
        return true
      end
      return require("synchro.aio").finally(function()
        while forward(it:next()) do end
      end, function() it:close() end)
    end)
    g._argname, g._argshift = "iter_in_thread", n
    if n == 2 then return g(select(2, ...)) end
    return g(...)
  end

  --- Like S:iter_in_thread on the default synchronizer; inside a task of a
  --- loop, `aio.iter_in_thread` on that loop.
  ---@param opts_or_fn {buffer?: integer}|fun(...)
  ---@return synchro.Iterator|synchro.aio.ThreadIterator
  function synchro.iter_in_thread(opts_or_fn, ...)
    if in_loop_task() then return M.iter_in_thread(opts_or_fn, ...) end
    if sched.loop then
      check.error("synchro.iter_in_thread: in a loop's VM, call it from a task")
    end
    return synchro.default():iter_in_thread(opts_or_fn, ...)
  end

  --- Builds a blocking object with `ctor(...)` on a worker thread of its
  --- own, which keeps it: the table returned has one function per method
  --- of the object (its callable fields, and those of its metatables'
  --- `__index` tables), each running there, in order, so that the
  --- object's state lasts across calls. Called plainly they block; in
  --- async code they await. `obj:method(...)` passes the object; a result
  --- that is the object comes back as the proxy. The worker ends when the
  --- proxy is collected or the synchronizer closes.
  ---@param ctor fun(...): table|userdata
  ---@return table
  function Synchronizer:offload(ctor, ...)
    check_fn(ctor, 1, "offload")
    local open = self:wrap(function(...)
      return require("synchro.aio.thread")._offload_open(ctor, ...)
    end, { name = "offload" })
    local call = self:wrap(function(...)
      return require("synchro.aio.thread")._offload_call(...)
    end, { name = "offloaded method" })
    local release = self:wrap(function(i)
      require("synchro.aio.thread")._offload_release(i)
    end, { name = "offload release" })
    open._argname, open._argshift = "offload", 1 -- ctor is argument 1
    local id, names = synchro._call_as(open, ...)
    local proxy = {}
    local function fix(...)
      local r = pack(...)
      for i = 1, r.n do
        if r[i] == SELF then r[i] = proxy end
      end
      return unpack(r, 1, r.n)
    end
    for _, key in ipairs(names) do
      -- its own wrapper of call, named for the method; id, key and
      -- with_self come before the user's arguments (obj:m(x): x is #1)
      local m = self:wrap(call, { name = key })
      m._argname, m._argshift = key, -3
      proxy[key] = function(...)
        if select("#", ...) > 0 and rawequal((...), proxy) then
          return fix(synchro._call_as(m, id, key, true, select(2, ...)))
        end
        return fix(synchro._call_as(m, id, key, false, ...))
      end
    end
    local function gc() pcall(release.future, id) end
    if _VERSION == "Lua 5.1" and newproxy then -- no __gc on 5.1 tables
      local u = newproxy(true)
      getmetatable(u).__gc = gc
      rawset(proxy, "\0synchro.anchor", u)
    else
      setmetatable(proxy, { __gc = gc })
    end
    return proxy
  end

  --- `S:offload` of `require(name)` in the worker's VM: a blocking module
  --- whose functions become awaitable, its state kept across calls.
  ---@param name string
  ---@return table
  function Synchronizer:offload_module(name)
    if type(name) ~= "string" then
      check.argerror(1, "offload_module", "string expected, got " ..
        type(name))
    end
    return self:offload(function(n) return require(n) end, name)
  end
end

return M
