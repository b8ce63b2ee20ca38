--- Wrapped functions: S:wrap, how a call blocks or awaits (the awaiter of
--- the running code: a synchro scheduler or a registered adapter), and
--- Future:result. Installed into synchro by init.lua.
local core = require "synchro.core"
local sched = require "synchro.sched"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro, Synchronizer, P)
  local core_call, core_submit = core.call, core.submit
  local core_submit_cb = core.submit_cb
  local core_deadline = core.deadline
  local OP_RETAIN_FN, OP_RELEASE_FN = core.OP_RETAIN_FN, core.OP_RELEASE_FN
  local in_task = sched.in_task
  local check_self = P.check_self

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

  -- How the running code can await a future, if it can: a task of a synchro
  -- scheduler, or a coroutine driven by a registered adapter (synchro.luv,
  -- synchro.cqueues). A plain coroutine (an iterator, say) cannot: calls
  -- block there.
  local adapters = {}

  local function current_awaiter()
    local task = sched.current_task()
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
  -- timeout: the wrapped function's (normalised), or nil for none.
  local function submit_await(await, ud, id, timeout, ...)
    local server = callback_servers[await]
    if server == nil and await == sched.await_future and
      sched.current_task().sched.backend.inbox then
      server = in_run -- the run scheduler serves its VM's inbox throughout
    end
    if server == nil then
      local fut = core_submit(ud, id, ...)
      if timeout then core_deadline(fut, timeout) end
      return await(fut)
    end
    local ok, fut, cbs
    if server == in_run then -- nothing to enter or leave: no pcall
      fut, cbs = core_submit_cb(ud, id, ...)
      if timeout then core_deadline(fut, timeout) end
      if cbs == nil then return await(fut) end
    else
      server.enter()
      ok, fut, cbs = pcall(core_submit_cb, ud, id, ...)
      if ok and timeout then core_deadline(fut, timeout) end
      if not ok or cbs == nil then
        server.leave()
        if not ok then error(fut, 0) end
        return await(fut)
      end
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
    if sched.current_task() ~= nil or adapters[1] ~= nil then
      local await = current_awaiter()
      if await then
        return submit_await(await, self._ud, self._id, self._timeout, ...)
      end
    end
    return core_call(self, ...)
  end

  -- Calls w as synchro's own wrappers (to_thread, offload...) do: like
  -- w(...), but the call carries w itself, so that a bad argument is
  -- reported with the wrapper's _argname and _argshift (its numbering).
  -- (Wrapped.__call passes only the id: one field lookup fewer per call.)
  function synchro._call_as(w, ...)
    if sched.current_task() ~= nil or adapters[1] ~= nil then
      local await = current_awaiter()
      if await then return submit_await(await, w._ud, w, w._timeout, ...) end
    end
    return core_call(w, ...)
  end

  function Wrapped.__tostring(self)
    return ("synchro.Wrapped(%s#%d)"):format(self._name, self._id)
  end

  -- How a wrapped function crosses into its own loop (as an upvalue of
  -- another wrapped function): by identity, called in place there.
  -- Elsewhere (another synchronizer's loop) it is that synchronizer's
  -- wrapped function. The copy made from the payload owns one reference
  -- to the loop side's function, sent ahead of the payload (from this
  -- thread, so it arrives before any release of ours).
  function Wrapped.__synchro(self)
    core.post(self._ud, OP_RETAIN_FN, self._id)
    return "synchro.fn", ("%d#%d#%s"):format(core.identity(self._ud),
      self._id, self._name)
  end
  -- only synchro's own marshallers may produce "synchro.*" kinds
  require("synchro.kinds").own(Wrapped.__synchro)

  -- The last wrapper of a function gone, the loop side lets the function
  -- (and its upvalues) go: sent after every call this wrapper made, never
  -- blocking, and nothing once the synchronizer is closed.
  local function release_wrapped(w)
    if not w._released then
      w._released = true
      pcall(core.post, w._ud, OP_RELEASE_FN, w._id)
    end
  end
  Wrapped.__gc = release_wrapped

  -- A wrapped function object for function id of the synchronizer ud; it
  -- owns one reference to the function on the loop (see release_wrapped).
  local function make_wrapped(ud, id, name, timeout)
    local w = setmetatable({ _ud = ud, _id = id, _timeout = timeout,
      _name = name }, Wrapped)
    if _VERSION == "Lua 5.1" and newproxy then -- no __gc on 5.1 tables
      local u = newproxy(true)
      getmetatable(u).__gc = function() release_wrapped(w) end
      w._anchor = u
    end
    w.aio = function(...)
      local await = current_awaiter()
      if not await then
        error("'.aio' must be called from async code (inside synchro.run, " ..
          "a task, or a synchro.luv or synchro.cqueues coroutine); call the " ..
          "function plainly to block", 2)
      end
      return submit_await(await, ud, id, timeout, ...)
    end
    -- always blocks, even in async code (blocking that scheduler)
    w.sync = function(...) return core_call(w, ...) end
    w.future = function(...)
      local fut = core_submit(ud, id, ...)
      if timeout then core_deadline(fut, timeout) end
      return fut
    end
    return w
  end
  synchro._make_wrapped = make_wrapped

  -- The synchronizer (its userdata) that identity names, in any VM: one
  -- made here, or a reference taken from the process-wide table (a
  -- payload forwarded from a third VM).
  local function synchronizer_of(ident)
    local ud = synchro._known[ident]
    if ud == nil then
      local ok, found = pcall(core.synchronizer, ident)
      if not ok then
        error("no such synchronizer (made up, or closed and collected)", 0)
      end
      ud = found
      synchro._known[ident] = ud
    end
    return ud
  end
  P.synchronizer_of = synchronizer_of

  -- The grace of the synchronizer ud, for bounds that default to it.
  function P.grace_of(ud)
    local g = synchro._graces[core.identity(ud)]
    return check.time(g or 5, 1, "grace")
  end

  -- "identity#id#name" (see Wrapped.__synchro): the payload brought one
  -- reference to function id, which the copy made here owns. On its own
  -- loop it is called in place (see runtime.loop_wrapped).
  do
    local registry = debug.getregistry()
    local ext = registry["synchro.ext"] or {}
    registry["synchro.ext"] = ext
    ext["synchro.fn"] = function(payload)
      local ident, id, name = payload:match("^(%d+)#(%d+)#(.*)$")
      if ident == nil then error("malformed synchro.fn payload", 0) end
      ident, id = tonumber(ident), tonumber(id)
      if ident == core.loop_identity() then
        return require("synchro.runtime").loop_wrapped(id)
      end
      return make_wrapped(synchronizer_of(ident), id, name)
    end
  end

  --- Wraps an async function: `f(...)` blocks until it returns (or awaits,
  --- inside async code), `f.aio(...)` awaits, `f.future(...)` returns a
  --- Future. The function's code and upvalues are copied to the loop VM now.
  --- Wrapping what is wrapped already (a wrapped function or generator, a
  --- proxy) returns it (with opts, a wrapper of the same function with
  --- those options); a table is a class (see S:wrap_class).
  ---@param fn async fun(...): ...
  ---@param opts? {timeout?: number, name?: string}
  ---@return synchro.Wrapped
  function Synchronizer:wrap(fn, opts)
    check_self(self, "wrap")
    local mt = getmetatable(fn)
    if mt == Wrapped then
      if opts == nil then return fn end
      opts = check.opts(opts, 2, "wrap", { "timeout", "name" })
      local timeout = check.time(opts.timeout, 2, "wrap", "timeout")
      if opts.name ~= nil and type(opts.name) ~= "string" then
        argerror(2, "wrap", "name: string expected, got " .. type(opts.name))
      end
      core.post(fn._ud, OP_RETAIN_FN, fn._id)
      local w = make_wrapped(fn._ud, fn._id, opts.name or fn._name, timeout)
      w.synchronizer = fn.synchronizer
      return w
    end
    if mt ~= nil and (mt == P.WrappedGen or synchro.is_proxy(fn)) then
      if opts ~= nil then
        argerror(2, "wrap", "no options for a wrapped generator or a proxy")
      end
      return fn
    end
    if type(fn) == "table" then
      if opts ~= nil then argerror(2, "wrap", "no options for a class") end
      return self:wrap_class(fn)
    end
    if type(fn) ~= "function" then
      argerror(1, "wrap", "function expected, got " .. type(fn))
    end
    opts = check.opts(opts, 2, "wrap", { "timeout", "name" })
    -- the one time rule: nil (math.huge too) is no limit
    local timeout = check.time(opts.timeout, 2, "wrap", "timeout")
    if opts.name ~= nil and type(opts.name) ~= "string" then
      argerror(2, "wrap", "name: string expected, got " .. type(opts.name))
    end
    local ud = self._ud
    local id = core.define(ud, fn)
    local name = opts.name
    if name == nil then
      local info = debug.getinfo(fn, "S")
      name = ("function <%s:%d>"):format(info.short_src, info.linedefined)
    end
    local w = make_wrapped(ud, id, name, timeout)
    w.synchronizer = self
    return w
  end

  -- Arguments an op takes before the user's (a generator step's "how"):
  -- a bad argument is numbered as the user counts.
  local op_argshift = { [core.OP_GEN_NEXT] = -1 }

  -- Runs an internal op (core.OP_*) on id in ud's loop VM: blocks, or
  -- awaits in async code. what names it in errors.
  -- shift: added to a bad argument's number (nil: the op's own).
  local function call_op_as(ud, force_await, op, id, what, shift, ...)
    local target = { _ud = ud, _op = op, _id = id, _name = what,
      _argname = what, _argshift = shift or op_argshift[op] }
    local await = current_awaiter()
    if await then return submit_await(await, ud, target, nil, ...) end
    if force_await then
      error("'.aio' generators must be iterated from async code", 3)
    end
    return core_call(target, ...)
  end
  local function call_op(ud, force_await, op, id, what, ...)
    return call_op_as(ud, force_await, op, id, what, nil, ...)
  end

  -- Futures ---------------------------------------------------------------

  --- Waits for the result: returns the call's results or raises its error.
  --- With a timeout, returns `nil, "ETIMEDOUT: ...", "ETIMEDOUT"` if the call
  --- is still running then (the call goes on; cancel() stops it). Inside
  --- async code it awaits instead of blocking.
  function Future:result(timeout)
    local given = timeout
    timeout = check.time(timeout, 1, "result", "timeout") -- nil: no limit
    local await = current_awaiter()
    if await then return await(self) end
    if not self:wait(timeout) then
      return nil, ("ETIMEDOUT: future not done after %g s"):format(given),
        "ETIMEDOUT"
    end
    return self:outcome()
  end

  P.current_awaiter, P.submit_await = current_awaiter, submit_await
  P.make_wrapped, P.call_op = make_wrapped, call_op
  P.call_op_as = call_op_as
end
