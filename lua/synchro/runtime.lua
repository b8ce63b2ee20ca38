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
backend.notifier = core.loop_notifier(function()
  local keys = backend.notifier:take()
  for i = 1, #keys do
    local list = backend.waiting[keys[i]]
    backend.waiting[keys[i]] = nil
    if list then
      for j = 1, #list do list[j]() end
    end
  end
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
  local task = calls[key]
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
  return watchers[event](sched.current, where, seconds)
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

local function gen_start(id, ...)
  local fn = fns[id]
  if type(fn) ~= "function" then
    error(fn or ("no function with id " .. tostring(id)), 0)
  end
  next_gen = next_gen + 1
  gens[next_gen] = { fn = fn, args = sched.pack(...), state = "new" }
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
    deliver(gen, "error", task.err, format_traceback(task))
  end
end

--- A step of the consumer: how is "next", "send" (value is what emit
--- returns) or "throw" (value is raised at the emit). Returns "item",
--- values... or "end", or "error", err, traceback.
local function gen_next(gid, how, value)
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

--- Closes a generator: cancels it if it runs and waits for its cleanup.
local function gen_close(gid)
  local gen = gens[gid]
  gens[gid] = nil
  if gen and gen.task and gen.task.state ~= "done" then
    loop:cancel(gen.task)
    sched.shield(function() pcall(gen.task.join, gen.task) end)
  end
end

--- A generator given as a function (a proxy of a marked module function).
local function gen_start_object(oid, ...)
  local fn = R.object(oid)
  next_gen = next_gen + 1
  gens[next_gen] = { fn = fn, args = sched.pack(...), state = "new" }
  return next_gen
end

op("GEN_START", gen_start)
op("GEN_START_OBJECT", gen_start_object)
op("GEN_NEXT", gen_next)
op("GEN_CLOSE", gen_close)

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

--- Runs an object's __close metamethod, else its close method.
op("CLOSE_OBJECT", function(id)
  local v = R.object(id)
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__close then return mt.__close(v) end
  local close = v.close
  if close ~= nil then return close(v) end
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
  w.future = function(...) return loop:spawn(get(), ...) end
  return w
end

R.ext = {
  -- "identity#id#name" (see Wrapped.__synchro): the payload brought one
  -- reference to function id, which the copy made here owns.
  ["synchro.fn"] = function(payload)
    local ident, id, name = payload:match("^(%d+)#(%d+)#(.*)$")
    if ident == nil then error("malformed synchro.fn payload", 0) end
    ident, id = tonumber(ident), tonumber(id)
    if ident == core.loop_identity() then return loop_wrapped(id) end
    -- another synchronizer's function: awaited from this loop's tasks
    return require("synchro")._make_wrapped(core.synchronizer(ident), id,
      name)
  end,
}

do
  local registry = debug.getregistry()
  local ext = registry["synchro.ext"] or {}
  registry["synchro.ext"] = ext
  for name, decode in pairs(R.ext) do ext[name] = decode end
  registry["synchro.proxy_exporter"] = export
end

-- Proxies coming back are decoded by the synchro module's decoders.
require "synchro"

return R
