--- Objects, modules and callbacks across VMs: proxies of loop objects,
--- S:wrap_module, synchro.with, and functions passed to calls (callbacks).
--- Installed into synchro by init.lua.
local core = require "synchro.core"
local sched = require "synchro.sched"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro, Synchronizer, P)
  local core_call, core_submit = core.call, core.submit
  local check_self, call_op = P.check_self, P.call_op
  local OP = {}
  for k, v in pairs(core) do
    local name = type(k) == "string" and k:match("^OP_(.*)$")
    if name then OP[name] = v end
  end
  local current_awaiter, start = P.current_awaiter, P.start_generator
  local submit_await = P.submit_await
  local ypcall = sched.yieldable_pcalls()

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
      pcall(core.post, info.ud, OP.RELEASE_OBJECT, info.id, info.exports)
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
      p.aio = function(...) return start({ _ud = ud, _start_op =
        OP.GEN_START_OBJECT, _id = id }, true, ...) end
    else
      p = setmetatable({ ["\0synchro"] = info }, FnProxy)
      local target = { _ud = ud, _op = OP.CALL_OBJECT, _id = id,
        _name = "method" }
      p.aio = function(...)
        local await = current_awaiter()
        if not await then
          error("'.aio' must be called from async code", 2)
        end
        return submit_await(await, ud, target, nil, ...)
      end
      p.future = function(...) return core_submit(ud, target, ...) end
      p.sync = function(...) return core_call(target, ...) end
    end
    anchor_gc(info)
    proxies[ident .. "#" .. id] = p
    return p
  end

  -- "identity#id#kind" (see runtime.lua's export and proxy_marshal)
  local function decode_object(payload)
    local ident, id, kind = payload:match("^(%d+)#(%d+)#([ofg])$")
    if ident == nil then error("malformed synchro.obj payload", 0) end
    ident, id = tonumber(ident), tonumber(id)
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

  -- "inbox#id": the handle of the caller VM's inbox (the inbox object
  -- holds a reference to it) and the callback's number there.
  local function decode_callback(payload)
    local inbox, id = payload:match("^(%d+)#(%d+)$")
    if inbox == nil then error("malformed synchro.cb payload", 0) end
    return setmetatable({ inbox = core.inbox_open(tonumber(inbox)),
      id = tonumber(id) }, Callback)
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
        return "synchro.cb", core.inbox_handle() .. "#" .. next_id
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

  --- Says how a value of your own kind arrives in this VM: a table or
  --- userdata whose metatable has `__synchro(v)` returning two strings,
  --- kind and payload, crosses as decode(payload), run in the receiving
  --- VM (register it there: on the loop, from async code). Kinds named
  --- "synchro.*" are synchro's own.
  ---@param kind string
  ---@param decode fun(payload: string): any
  function synchro.register_kind(kind, decode)
    check.type(kind, "string", 1, "register_kind")
    check.type(decode, "function", 2, "register_kind")
    if kind:sub(1, 8) == "synchro." then
      argerror(1, "register_kind", "kinds named 'synchro.*' are synchro's own")
    end
    debug.getregistry()["synchro.ext"][kind] = decode
  end

  -- How a proxy goes back to its loop: as the object it stands for.
  local function proxy_marshal(p)
    local info = pinfo(p)
    return "synchro.obj", core.identity(info.ud) .. "#" .. info.id .. "#o"
  end
  Proxy.__synchro, FnProxy.__synchro, GenProxy.__synchro =
    proxy_marshal, proxy_marshal, proxy_marshal
  require("synchro.kinds").own(proxy_marshal)

  local function remote(info, op, ...)
    return call_op(info.ud, false, op, info.id, "method", ...)
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
    local v = remote(info, OP.GET_FIELD, key)
    if synchro.is_proxy(v) and getmetatable(v) ~= Proxy then
      info.methods[key] = v -- methods rarely change: one round trip each
    end
    return v
  end

  function Proxy.__newindex(p, key, value)
    local info = pinfo(p)
    info.methods[key] = nil
    remote(info, OP.SET_FIELD, key, value)
  end

  function Proxy.__call(p, ...)
    return remote(pinfo(p), OP.CALL_OBJECT, ...)
  end

  function FnProxy.__call(p, ...)
    return remote(pinfo(p), OP.CALL_OBJECT, ...)
  end

  function GenProxy.__call(p, ...)
    local info = pinfo(p)
    return start({ _ud = info.ud, _start_op = OP.GEN_START_OBJECT,
      _id = info.id }, false, ...)
  end

  --- Runs the remote object's __close (else its close method), once.
  function Proxy.__close(p)
    local info = pinfo(p)
    if info.closed then return end
    info.closed = true
    remote(info, OP.CLOSE_OBJECT)
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
    return call_op(self._ud, false, OP.REQUIRE_MODULE, 0, "wrap_module", name)
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
end
