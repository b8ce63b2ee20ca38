--- The loop VM's runtime: the C side hands it the mailbox's messages
--- (define, call, cancel, close) and it runs each call as a task of the
--- loop's scheduler, replying through core.reply.
local core = require "synchro.core"
local sched = require "synchro.sched"

local R = {}

local backend = { timer = core.timer, now = core.now, waiting = {},
  watch = core.watch, rearm_watch = core.rearm_watch }
local loop = sched.new(backend)
-- Futures of other synchronizers that this loop's tasks await complete
-- into the loop's notifier, which wakes the loop to take them.
local taken_keys, taken_calls = {}, {} -- reused by every take
backend.notifier = core.loop_notifier(function()
  sched.wake_waiting(backend.waiting,
    backend.notifier:take(taken_keys, taken_calls))
end)
R.sched = loop
sched.loop = loop

-- Lua 5.1: let tasks yield through pcall and xpcall.
pcall, xpcall = sched.yieldable_pcalls() -- luacheck: ignore 121

local fns = {}         -- function id -> function, or an error message
local fn_refs = {}     -- function id -> wrappers of it alive (see release_fn)
local calls = {}       -- call key -> task
loop.by_tag = calls    -- Sched:start registers calls' tasks here
local closing = false
local SHORT_FRAMES = 6

--- The remote frames of a failed task, marked as coming from the loop.
local function format_traceback(task)
  local tb = task.traceback
  if tb == nil then return "" end
  local full_traceback = os.getenv("SYNCHRO_TRACEBACK") == "full"
  local info = debug.getinfo(task.fn, "S")
  local main = ("in function <%s:%d>"):format(info.short_src,
    info.linedefined)
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if line ~= "stack traceback:" then
      -- the scheduler calls the task's function as task.fn
      line = line:gsub("in %a+ 'fn'$", main)
      local internal = line:find("synchro/sched.lua", 1, true) or
        line:find("synchro/runtime.lua", 1, true) or
        line:find("(...tail calls...)", 1, true) or
        line:find("^%s*%(tail call%)") or
        line:find("^%s*%[C%]: in %?$")
      if full_traceback or not internal then lines[#lines + 1] = line end
    end
  end
  if not full_traceback and #lines > SHORT_FRAMES then
    local n = #lines
    for i = n, SHORT_FRAMES + 1, -1 do lines[i] = nil end
    lines[#lines + 1] = ("\t(%d more; SYNCHRO_TRACEBACK=full shows all)")
      :format(n - SHORT_FRAMES)
  end
  return "[loop thread] stack traceback:\n" .. table.concat(lines, "\n")
end

local function reply(task, ok, ...)
  local key = task.tag
  calls[key] = nil
  if ok then
    core.reply(key, true, ...)
  elseif task.cancelled and sched.is_cancelled(task.err) then
    if rawequal(task.err, sched.CancelledAwait) then
      -- its cleanup awaited outside a shield: say so, or nobody sees it
      io.stderr:write(("synchro: %s\n%s\n"):format(tostring(task.err),
        format_traceback(task)))
    end
    core.reply(key, "cancelled")
  else
    core.reply(key, false, task.err, format_traceback(task))
  end
end

function R.define(id, fn, err)
  fns[id] = fn or tostring(err)
  fn_refs[id] = 1 -- the wrapper S:wrap made
end

-- Every wrapper of a function holds one reference: S:wrap's, and one per
-- copy that crossed (Wrapped.__synchro sends RETAIN_FN before its payload
-- leaves). A wrapper's __gc sends RELEASE_FN after every call it made, so
-- the last release comes after the last call; running tasks hold the
-- function itself.
local function retain_fn(id)
  if fn_refs[id] then fn_refs[id] = fn_refs[id] + 1 end
end

local function release_fn(id)
  local n = fn_refs[id]
  if n == nil then return end
  if n > 1 then
    fn_refs[id] = n - 1
  else
    fns[id], fn_refs[id] = nil, nil
  end
end

--- How many functions are defined (for leak checks).
function R.fn_count() return sched.count(fns) end

-- Functions called by path (from the C API): "mod.fn", "mod.sub.fn" or a
-- global name; resolved once.
local by_path = {}

local function resolve(path)
  local fn = by_path[path]
  if fn then return fn end
  if type(path) ~= "string" then return nil, "path must be a string" end
  local function walk(value, rest)
    for part in rest:gmatch("[^.]+") do
      value = type(value) == "table" and value[part] or nil
    end
    return value
  end
  local value = walk(_G, path) -- a global, or a field of one
  local dot = #path + 1
  while value == nil do
    dot = path:sub(1, dot - 1):find("%.[^.]*$")
    if not dot then break end
    local ok, mod = pcall(require, path:sub(1, dot - 1))
    if ok and type(mod) == "table" then value = walk(mod, path:sub(dot + 1)) end
  end
  if type(value) ~= "function" and
    not (getmetatable(value) or {}).__call then
    return nil, ("no function '%s' in the loop VM"):format(path)
  end
  by_path[path] = value
  return value
end

-- The handler of each op (core.OP_*; see SYNCHRO_OP_MAP in core.h):
-- ops[op](key, id, ...) runs the call and replies through core.reply.
local ops = {}
R.ops = ops

local function start(key, fn, ...)
  local task = loop:start(fn, reply, key, ...)
  if task.state ~= "done" then calls[key] = task end
end

-- The fast path (src/vm/dispatch.c) -----------------------------------------
-- A call of a defined function, taken by the loop itself, runs on a pooled
-- coroutine that C resumes directly; when it returns without suspending,
-- C replies, and no task is ever made. The task is made (adopted) only
-- when the running code asks for it (sched.current_task(): to wait, spawn,
-- be cancelled by the watch hook), or when the call yields or fails.

R.fns = fns
R.pool = loop.pool
R.DONE = sched.DONE
R.POOL_MAX = sched.POOL_MAX

local function adopt(co, fn, key)
  local task = loop:adopt(co, fn, reply, key)
  calls[key] = task
  return task
end

sched.materialize = function()
  local co, fn, key = core.fast_take()
  if co == nil then return nil end
  local task = adopt(co, fn, key)
  sched.current = task
  return task
end

--- A coroutine for the fast path when the pool is empty.
function R.new_coroutine() return loop:new_coroutine() end

--- The fast call on co ended its first run with the outcome of resume
--- (ok, values...) other than a plain return: it suspended, yielded,
--- failed, or its task was made meanwhile. From here it is a task like
--- any other.
function R.fast_after(co, fn, key, ...)
  local task = calls[key] or adopt(co, fn, key)
  local ok, err = pcall(loop.after, loop, task, co, ...)
  loop.running = false
  if not ok then error(err, 0) end
  loop:run_ready()
end

ops[core.OP_CALL] = function(key, id, ...)
  local fn = fns[id]
  if type(fn) ~= "function" then
    core.reply(key, false, fn or ("no function with id " .. tostring(id)), "")
    return
  end
  start(key, fn, ...)
end

ops[core.OP_PATH] = function(key, _, path, ...)
  local fn, err = resolve(path)
  if not fn then
    core.reply(key, false, err, "")
    return
  end
  start(key, fn, ...)
end

-- An internal op: fn(id, ...) runs as the call's task.
local function op(name, fn)
  ops[core["OP_" .. name]] = function(key, id, ...) start(key, fn, id, ...) end
end

op("RETAIN_FN", retain_fn)
op("RELEASE_FN", release_fn)

--- For C hosts: load a module in the loop VM.
function R.require(name)
  require(name)
end

--- For C hosts: run a chunk of Lua source in the loop VM.
function R.load_chunk(code, chunkname)
  local fn, err = (loadstring or load)(code, chunkname or "=chunk")
  if not fn then error(err, 0) end
  fn()
end

function R.cancel(key)
  -- the call running on the fast path has no task until asked for it
  local task = calls[key] or (sched.current_task() and calls[key])
  if task then loop:cancel(task) end
end

function R.close()
  if closing then return end
  closing = true
  local tasks = {}
  for task in pairs(loop.live) do tasks[#tasks + 1] = task end
  for i = 1, #tasks do loop:cancel(tasks[i]) end
  if loop.nlive == 0 then
    core.stop()
  else
    loop.on_empty = core.stop
  end
end

-- The watch hook (src/vm/watch.c) of a task that never yields --------------

--- Where a task was defined, for messages: "function <src:line>".
local function task_name(task)
  local info = debug.getinfo(task.fn, "S")
  if info == nil then return "?" end
  return ("function <%s:%d>"):format(info.short_src, info.linedefined)
end

local slow_warned = setmetatable({}, { __mode = "k" })

local watchers = {
  -- a cancel or a close was sent: take it now; returns the error to raise
  attend = function(task)
    core.attend()
    if task.cancelled and task.shield == 0 and not task.cancel_delivered then
      return sched.cancellation(task)
    end
  end,
  -- the close's grace is over and the task still runs: raise again
  overdue = function(task)
    if task.cancelled then return sched.Cancelled end
  end,
  slow = function(task, where, seconds)
    if slow_warned[task.fn] then return end
    slow_warned[task.fn] = true
    io.stderr:write(("synchro: a task held the loop thread for %.2f s " ..
      "without yielding: %s, now at %s (run CPU-bound work with " ..
      "aio.run_in_thread; synchro.new{slow=0} turns this warning off)\n")
      :format(seconds, task_name(task), where))
  end,
}

--- Called by the watch hook from inside the running code; does nothing
--- unless that code is a task's.
function R.watch(event, where, seconds)
  if not sched.in_task() then return nil end
  return watchers[event](sched.current_task(), where, seconds)
end
debug.getregistry()["synchro.watch"] = R.watch

function R.shutdown()
  for key in pairs(calls) do
    calls[key] = nil
    core.reply(key, "closed")
  end
end

-- Generators ---------------------------------------------------------------
-- A generator (S:wrap_generator) runs as a task that emits items with
-- synchro.emit(...). Each step of the consumer is a call of gen_next, which
-- resumes the generator up to its next emit: strict interleaving.

local gens, next_gen = {}, 0
local unpack = table.unpack or unpack

-- An error sent by the consumer (it:throw, a context manager's body
-- error): a cancellation crosses as its message and is one again here.
local function received_error(value, cancelled)
  if cancelled then return sched.cancelled(value) end
  return value
end
R.received_error = received_error

local function gen_start(id, ...)
  local fn = fns[id]
  if type(fn) ~= "function" then
    error(fn or ("no function with id " .. tostring(id)), 0)
  end
  next_gen = next_gen + 1
  gens[next_gen] = { fn = fn, args = sched.pack(...), state = "new",
    refs = 1 }
  return next_gen
end

-- Hands kind (and values) to the consumer step waiting for them, if any.
local function deliver(gen, ...)
  local consumer = gen.consumer
  gen.consumer = nil
  if consumer then
    loop:wake(consumer.task, consumer.token, sched.pack(...))
  end
end

local function gen_done(task, ok)
  local gen = task.gen
  gen.state = "done"
  if ok then
    deliver(gen, "end")
  else
    -- results cross as data: a cancellation as its message (and a flag)
    local err = task.err
    if sched.is_cancelled(err) then
      deliver(gen, "error", tostring(err), format_traceback(task), true)
    else
      deliver(gen, "error", err, format_traceback(task))
    end
  end
end

--- A step of the consumer: how is "next", "send" (value is what emit
--- returns) or "throw" (value is raised at the emit). Returns "item",
--- values... or "end", or "error", err, traceback.
local function gen_next(gid, how, value, cancelled)
  value = received_error(value, cancelled)
  local gen = gens[gid]
  if gen == nil or gen.state == "done" then
    gens[gid] = nil
    return "end"
  end
  if gen.consumer then error("generator is already being stepped", 0) end
  local me, token = sched.prepare("generator")
  gen.consumer = { task = me, token = token }
  if gen.state == "new" then
    if how == "throw" then
      gens[gid] = nil
      gen.consumer = nil
      if sched.is_cancelled(value) then
        return "error", tostring(value), "", true
      end
      return "error", value, ""
    end
    gen.state = "running"
    local task = loop:spawn(gen.fn, unpack(gen.args, 1, gen.args.n))
    task.gen = gen
    task.on_done = gen_done
    gen.task = task
  else
    loop:wake(gen.task, gen.emit_token, { how = how, value = value })
  end
  local r = sched.suspend(me, function()
    -- the consumer gave up (Ctrl-C, timeout): so does the generator
    gen.consumer = nil
    loop:cancel(gen.task)
  end)
  if r[1] ~= "item" then gens[gid] = nil end
  return unpack(r, 1, r.n)
end

--- Inside a generator: hands the values to the consumer and waits for the
--- next step; returns what the consumer sent (it:send), or raises what it
--- threw (it:throw).
function R.emit(...)
  local task = sched.task("emit")
  local gen = task.gen
  if gen == nil then
    error("synchro.emit must be called by a generator's own task " ..
      "(see S:wrap_generator)", 2)
  end
  local _, token = sched.prepare("emit")
  gen.emit_token = token
  deliver(gen, "item", ...)
  local r = sched.suspend(task)
  if r.how == "throw" then error(r.value, 0) end
  return r.value
end

-- Waits (shielded) for task to end, at most seconds (nil: no limit).
local function settle_within(task, seconds)
  if task.state == "done" then return end
  local me = sched.task("generator close")
  local token, expired = nil, false
  local timer = backend.timer(function()
    expired = true
    if token then loop:wake(me, token) end
  end)
  if seconds then timer:start(seconds) end
  local joiners = task.joiners or {}
  task.joiners = joiners
  joiners[#joiners + 1] = function() if token then loop:wake(me, token) end end
  sched.shield(function()
    while task.state ~= "done" and not expired do
      local _
      _, token = sched.prepare("generator close")
      sched.suspend(me)
      token = nil
    end
  end)
  timer:close()
end

--- Closes a generator: cancels it if it runs and waits for its cleanup,
--- at most timeout seconds (nil: no limit); after that it finishes on
--- its own.
local function gen_close(gid, timeout)
  local gen = gens[gid]
  gens[gid] = nil
  if gen and gen.task and gen.task.state ~= "done" then
    loop:cancel(gen.task)
    settle_within(gen.task, timeout)
  end
end

-- An iterator crossed to another VM (see Iterator.__synchro): one more
-- holder. The last holder's release closes the generator (in the
-- background: nobody waits for a collected iterator).
local function gen_retain(gid)
  local gen = gens[gid]
  if gen then gen.refs = gen.refs + 1 end
end

local function gen_release(gid, timeout)
  local gen = gens[gid]
  if gen == nil then return end
  gen.refs = gen.refs - 1
  if gen.refs <= 0 then gen_close(gid, timeout) end
end

--- A generator given as a function (a proxy of a marked module function).
local function gen_start_object(oid, ...)
  local fn = R.object(oid)
  next_gen = next_gen + 1
  gens[next_gen] = { fn = fn, args = sched.pack(...), state = "new",
    refs = 1 }
  return next_gen
end

op("GEN_START", gen_start)
op("GEN_START_OBJECT", gen_start_object)
op("GEN_NEXT", gen_next)
op("GEN_CLOSE", gen_close)
op("GEN_RETAIN", gen_retain)
op("GEN_RELEASE", gen_release)

--- The number of generators alive (for leak checks).
function R.gen_count() return sched.count(gens) end

-- Objects ----------------------------------------------------------------
-- What cannot be copied into the caller's VM (a function, a table or
-- userdata with a metatable) crosses as a proxy: the object stays here,
-- named by an id, until every proxy the caller got for it is released.

local objects, exports = {}, {} -- id -> object; id -> exports unreleased
local object_ids = setmetatable({}, { __mode = "k" })
local next_object = 0
local identity = core.loop_identity()

local function marks() return require("synchro")._marks end

local function export(v)
  local m = marks()
  if m.plain[v] then return "synchro.code", string.dump(v) end
  local id = object_ids[v]
  if id == nil then
    next_object = next_object + 1
    id = next_object
    object_ids[v] = id
    objects[id] = v
    exports[id] = 0
  end
  exports[id] = exports[id] + 1
  local kind = "o"
  if type(v) == "function" then kind = m.generator[v] and "g" or "f" end
  return "synchro.obj", ("%d#%d#%s"):format(identity, id, kind)
end

--- The object behind a proxy id (a proxy that came back).
function R.object(id)
  local v = id ~= nil and objects[id] or nil
  if v == nil then error("the object behind this proxy was released", 0) end
  return v
end

op("GET_FIELD", function(id, key) return R.object(id)[key] end)

op("SET_FIELD", function(id, key, value) R.object(id)[key] = value end)

op("CALL_OBJECT", function(id, ...) return R.object(id)(...) end)

-- A context manager's exit and enter, by synchro.with's rule (proxy.lua).
op("CLOSE_OBJECT", function(id, err, cancelled)
  return require("synchro")._cm_exit(R.object(id),
    received_error(err, cancelled))
end)

op("ENTER_OBJECT", function(id)
  return require("synchro")._cm_enter(R.object(id))
end)

--- One more proxy of object id exists elsewhere (a proxy forwarded by a
--- VM that holds one): sent before that proxy's payload leaves.
op("RETAIN_OBJECT", function(id)
  if exports[id] then exports[id] = exports[id] + 1 end
end)

--- Gives back the reference a proxy's payload brought home (see
--- proxy_marshal): the object itself is what the receiver gets.
function R.object_home(id)
  local v = R.object(id)
  local left = (exports[id] or 0) - 1
  if left > 0 then
    exports[id] = left
  else
    objects[id], exports[id] = nil, nil
    object_ids[v] = nil
  end
  return v
end

-- Operators on a proxy, run here on the objects (the proxy operands
-- arrive as the objects themselves).
local operators = {
  len = function(a) -- # on a table ignores __len on 5.1 and LuaJIT
    local mt = getmetatable(a)
    if type(mt) == "table" and rawget(mt, "__len") then
      return rawget(mt, "__len")(a)
    end
    return #a
  end,
  unm = function(a) return -a end,
  concat = function(a, b) return a .. b end,
  add = function(a, b) return a + b end,
  sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end,
  div = function(a, b) return a / b end,
  mod = function(a, b) return a % b end,
  pow = function(a, b) return a ^ b end,
  lt = function(a, b) return a < b end,
  le = function(a, b) return a <= b end,
  tostring = function(a)
    local mt = getmetatable(a)
    if type(mt) == "table" and rawget(mt, "__tostring") then
      return tostring(a)
    end
    return nil
  end,
  -- the object's own keys and values (through __pairs where Lua honours
  -- it), as two lists
  pairs = function(a)
    local keys, values, n = {}, {}, 0
    local iter, state, init
    local mt = getmetatable(a)
    if type(mt) == "table" and rawget(mt, "__pairs") then
      iter, state, init = rawget(mt, "__pairs")(a)
    elseif type(a) == "table" then
      iter, state, init = next, a, nil
    else
      error("attempt to iterate over a " .. type(a) .. " value", 0)
    end
    local k, v = iter(state, init)
    while k ~= nil do
      n = n + 1
      keys[n], values[n] = k, v
      k, v = iter(state, k)
    end
    return keys, values, n
  end,
}
for name, src in pairs({ idiv = "a // b", band = "a & b", bor = "a | b",
  bxor = "a ~ b", shl = "a << b", shr = "a >> b", bnot = "~a" }) do
  local fn = (loadstring or load)("local a, b = ... return " .. src)
  if fn then operators[name] = fn end -- Lua 5.3+
end

op("META_OBJECT", function(_, event, a, b)
  local fn = operators[event]
  if fn == nil then error("unknown operator " .. tostring(event), 0) end
  return fn(a, b)
end)

--- The caller dropped n proxies of object id.
op("RELEASE_OBJECT", function(id, n)
  local left = (exports[id] or 0) - n
  if left > 0 then
    exports[id] = left
  else
    local v = objects[id]
    objects[id], exports[id] = nil, nil
    if v ~= nil then object_ids[v] = nil end
  end
end)

--- How many objects are held for proxies (for leak checks).
function R.object_count() return sched.count(objects) end

--- require(name), to be sent back (functions and objects as proxies).
op("REQUIRE_MODULE", function(_, name) return require(name) end)

-- A function wrapped by this loop's synchronizer, met in a wrapped
-- function's upvalues: calls it in place, in the calling task.
local LoopWrapped = {}
LoopWrapped.__index = LoopWrapped

local function defined(id)
  local fn = fns[id]
  if type(fn) ~= "function" then
    error(fn or ("no function with id " .. tostring(id)), 3)
  end
  return fn
end

function LoopWrapped.__call(self, ...)
  return self.get()(...)
end

-- The copy holds the function itself (a release of the id cannot take it
-- away); the reference its payload brought is given back at once.
local function loop_wrapped(id)
  local fn = fns[id]
  release_fn(id)
  local function get()
    if type(fn) == "function" then return fn end
    return defined(id)
  end
  local w = setmetatable({ id = id, get = get }, LoopWrapped)
  w.aio = function(...) return get()(...) end
  -- "always blocks": here the function runs in the calling task, to its
  -- end (a blocking call of the loop into itself could never return)
  w.sync = function(...) return get()(...) end
  w.future = function(...) return loop:spawn(get(), ...) end
  return w
end

-- A wrapped function of this loop decoded here (synchro.fn, see wrap.lua).
R.loop_wrapped = loop_wrapped

-- Forwarded from here (to another loop, back to a caller): it is this
-- synchronizer's wrapped function there, owning one more reference.
function LoopWrapped.__synchro(w)
  retain_fn(w.id)
  return "synchro.fn", ("%d#%d#%s"):format(identity, w.id, "function")
end
require("synchro.kinds").own(LoopWrapped.__synchro)

-- Objects passed on whole as proxies (see R.as_object).
local AsObject = {}
function AsObject.__synchro(ref) return export(ref.v) end
require("synchro.kinds").own(AsObject.__synchro)

--- v (a table without a metatable, say a class) crossing as a proxy
--- rather than as a copy.
function R.as_object(v) return setmetatable({ v = v }, AsObject) end

do
  local registry = debug.getregistry()
  local ext = registry["synchro.ext"] or {}
  registry["synchro.ext"] = ext
  registry["synchro.proxy_exporter"] = export
end

-- Proxies coming back are decoded by the synchro module's decoders.
require "synchro"

return R
