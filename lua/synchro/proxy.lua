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
  local unpack = table.unpack or unpack

  -- Objects and modules -----------------------------------------------------
  -- A loop object that cannot be copied arrives as a proxy: reading a field
  -- reads it remotely, calling a method calls it remotely (blocking, .aio,
  -- .future like a wrapped function), and a proxy passed back becomes the
  -- object again. The same remote object gives the same proxy while it
  -- lives; collecting the last one releases the object on the loop.

  -- A proxy holds nothing itself (pairs shows only the object's keys):
  -- what it needs is in infos[proxy]. On PUC 5.1 and LuaJIT a proxy is a
  -- userdata, so that #, __gc and the rest apply to it as they do to
  -- tables on 5.2+.
  local use_udata = _VERSION == "Lua 5.1" and newproxy ~= nil
  local protos = {}
  local function proxy_class()
    if not use_udata then return {} end
    local proto = newproxy(true)
    local mt = getmetatable(proto)
    protos[mt] = proto
    return mt
  end
  local function new_proxy(mt)
    if use_udata then return newproxy(protos[mt]) end
    return setmetatable({}, mt)
  end

  local Proxy = proxy_class()    -- object proxies
  local FnProxy = proxy_class()  -- function proxies
  local GenProxy = proxy_class() -- generator function proxies
  local proxies = setmetatable({}, { __mode = "v" }) -- "identity#id" -> proxy
  local infos = setmetatable({}, { __mode = "k" })   -- proxy -> its info

  local function pinfo(p) return infos[p] end

  local function release(info)
    if not info.released and core.state(info.ud) == "running" then
      info.released = true
      pcall(core.post, info.ud, OP.RELEASE_OBJECT, info.id, info.exports)
    end
  end

  -- How many proxies this VM holds (for leak checks in tests).
  function synchro._proxy_count() return sched.count(proxies) end

  --- True when x is a proxy of an object of a synchronizer's loop.
  ---@param x any
  ---@return boolean
  function synchro.is_proxy(x)
    local mt = getmetatable(x)
    return mt ~= nil and (mt == Proxy or mt == FnProxy or mt == GenProxy)
  end

  -- Whether code run by a metamethod of each kind may yield on this Lua
  -- (PUC 5.1 cannot; tostring() is a C function everywhere): where it
  -- cannot, a proxy's metamethod blocks for its answer, even in async
  -- code, rather than fail with "attempt to yield across a C-call
  -- boundary".
  local function yields_in(event, make, action)
    local obj = new_proxy(proxy_class())
    getmetatable(obj)[event] = function()
      coroutine.yield()
      return make()
    end
    if not use_udata then setmetatable(obj, getmetatable(obj)) end
    local co = coroutine.create(function() return action(obj) end)
    local ok = coroutine.resume(co)
    if not ok or coroutine.status(co) ~= "suspended" then return false end
    return (coroutine.resume(co))
  end
  local function one() return 1 end
  local yieldable = {
    index = yields_in("__index", one, function(o) return o.x end),
    newindex = yields_in("__newindex", one, function(o) o.x = 1 end),
    call = yields_in("__call", one, function(o) return o() end),
    len = yields_in("__len", one, function(o) return #o end),
    concat = yields_in("__concat", one, function(o) return o .. "" end),
    arith = yields_in("__add", one, function(o) return o + 1 end),
    compare = yields_in("__lt", function() return true end,
      function(o) return o < o end),
    tostring = yields_in("__tostring", function() return "" end, tostring),
  }

  -- Runs op on the proxy's object: awaits in async code where a yield is
  -- possible (how: a key of yieldable), else blocks.
  local function remote_in(how, info, op, ...)
    if yieldable[how] or not sched.in_task() then
      return call_op(info.ud, false, op, info.id, "method", ...)
    end
    return core_call({ _ud = info.ud, _op = op, _id = info.id,
      _name = "method" }, ...)
  end

  local function make_proxy(ud, ident, id, kind)
    local info = { ud = ud, id = id, exports = 1, key = ident .. "#" .. id }
    local p
    if kind == "o" then
      p = new_proxy(Proxy)
      info.methods = {}
    elseif kind == "g" then
      p = new_proxy(GenProxy)
      info.fields = { aio = function(...) return start({ _ud = ud,
        _start_op = OP.GEN_START_OBJECT, _id = id }, true, ...) end }
    else
      p = new_proxy(FnProxy)
      local target = { _ud = ud, _op = OP.CALL_OBJECT, _id = id,
        _name = "method" }
      info.fields = {
        aio = function(...)
          local await = current_awaiter()
          if not await then
            error("'.aio' must be called from async code", 2)
          end
          return submit_await(await, ud, target, nil, ...)
        end,
        future = function(...) return core_submit(ud, target, ...) end,
        sync = function(...) return core_call(target, ...) end,
      }
    end
    infos[p] = info
    if not use_udata and _VERSION == "Lua 5.1" then -- no __gc on 5.1 tables
      local u = newproxy(true)
      getmetatable(u).__gc = function() release(info) end
      info.anchor = u
    end
    proxies[info.key] = p
    return p
  end

  -- "identity#id#kind" (see runtime.lua's export and proxy_marshal)
  local function decode_object(payload)
    local ident, id, kind = payload:match("^(%d+)#(%d+)#([ofg])$")
    if ident == nil then error("malformed synchro.obj payload", 0) end
    ident, id = tonumber(ident), tonumber(id)
    if ident == core.loop_identity() then -- back home on its own loop
      return require("synchro.runtime").object_home(id)
    end
    local ud = P.synchronizer_of(ident)
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
  --- userdata whose metatable has `__synchro(v)` returning a kind (a
  --- string) and a payload (a string, or a table of values that cross)
  --- crosses as decode(payload), run in the receiving
  --- VM (register it there: on the loop, from async code). Kinds named
  --- "synchro.*" are synchro's own.
  ---@param kind string
  ---@param decode fun(payload: string|table): any
  function synchro.register_kind(kind, decode)
    check.type(kind, "string", 1, "register_kind")
    check.type(decode, "function", 2, "register_kind")
    if kind:sub(1, 8) == "synchro." then
      argerror(1, "register_kind", "kinds named 'synchro.*' are synchro's own")
    end
    debug.getregistry()["synchro.ext"][kind] = decode
  end

  -- How a proxy crosses: back to its loop, as the object it stands for;
  -- anywhere else, as a proxy of it that owns one more reference, sent
  -- ahead (and given back when it arrives home: runtime.object_home).
  local function proxy_marshal(p)
    local info = pinfo(p)
    pcall(core.post, info.ud, OP.RETAIN_OBJECT, info.id)
    local kind = "o"
    local mt = getmetatable(p)
    if mt == FnProxy then kind = "f" elseif mt == GenProxy then kind = "g" end
    return "synchro.obj", ("%d#%d#%s"):format(core.identity(info.ud), info.id,
      kind)
  end
  Proxy.__synchro, FnProxy.__synchro, GenProxy.__synchro =
    proxy_marshal, proxy_marshal, proxy_marshal
  require("synchro.kinds").own(proxy_marshal)

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
    local v = remote_in("index", info, OP.GET_FIELD, key)
    if synchro.is_proxy(v) and getmetatable(v) ~= Proxy then
      info.methods[key] = v -- methods rarely change: one round trip each
    end
    return v
  end

  function Proxy.__newindex(p, key, value)
    local info = pinfo(p)
    info.methods[key] = nil
    remote_in("newindex", info, OP.SET_FIELD, key, value)
  end

  local function fields_index(p, key) return pinfo(p).fields[key] end
  FnProxy.__index, GenProxy.__index = fields_index, fields_index

  local function refuse_newindex()
    error("a proxy of a remote function has no fields to set", 2)
  end
  FnProxy.__newindex, GenProxy.__newindex = refuse_newindex, refuse_newindex

  function Proxy.__call(p, ...)
    return remote_in("call", pinfo(p), OP.CALL_OBJECT, ...)
  end

  function FnProxy.__call(p, ...)
    return remote_in("call", pinfo(p), OP.CALL_OBJECT, ...)
  end

  function GenProxy.__call(p, ...)
    local info = pinfo(p)
    return start({ _ud = info.ud, _start_op = OP.GEN_START_OBJECT,
      _id = info.id }, false, ...)
  end

  --- Runs the remote object's exit (see synchro.with) with the error the
  --- block raised (nil when none), once; on Lua 5.4 a `<close>` variable.
  function Proxy.__close(p, err)
    local info = pinfo(p)
    if info.closed then return end
    info.closed = true
    local value, cancelled = P.sendable_error(err)
    remote_in("call", info, OP.CLOSE_OBJECT, value, cancelled)
  end

  local function proxy_gc(p)
    local info = pinfo(p)
    if info then release(info) end
  end
  Proxy.__gc, FnProxy.__gc, GenProxy.__gc = proxy_gc, proxy_gc, proxy_gc

  -- Two proxies of one object are equal (in one VM they are one proxy);
  -- a proxy equals nothing else.
  local function proxy_eq(a, b)
    local ia, ib = pinfo(a), pinfo(b)
    return ia ~= nil and ib ~= nil and ia.key == ib.key
  end
  Proxy.__eq, FnProxy.__eq, GenProxy.__eq = proxy_eq, proxy_eq, proxy_eq

  local function default_text(p)
    local mt = getmetatable(p)
    local what = mt == Proxy and "Proxy" or mt == FnProxy and "Function" or
      "Generator"
    return ("synchro.%s(#%d)"):format(what, pinfo(p).id)
  end

  -- The object's own tostring if its metatable has __tostring.
  function Proxy.__tostring(p)
    local text = remote_in("tostring", pinfo(p), OP.META_OBJECT, "tostring", p)
    if type(text) == "string" then return text end
    return default_text(p)
  end
  FnProxy.__tostring, GenProxy.__tostring = default_text, default_text

  -- Operators run on the loop, on the objects (the proxy operand crosses
  -- home as its object; the other operand is copied, or is an object too).
  local function operator(name, how)
    return function(a, b)
      local p = synchro.is_proxy(a) and a or b
      return remote_in(how, pinfo(p), OP.META_OBJECT, name, a, b)
    end
  end
  Proxy.__len = operator("len", "len")
  Proxy.__concat = operator("concat", "concat")
  Proxy.__unm = operator("unm", "arith")
  Proxy.__lt = operator("lt", "compare")
  Proxy.__le = operator("le", "compare")
  for _, name in ipairs({ "add", "sub", "mul", "div", "mod", "pow", "idiv",
    "band", "bor", "bxor", "shl", "shr", "bnot" }) do
    Proxy["__" .. name] = operator(name, "arith")
  end

  -- The object's own keys and values, read at once (one round trip), then
  -- iterated here.
  local function proxy_pairs(p)
    local keys, values, n = remote_in("call", pinfo(p), OP.META_OBJECT,
      "pairs", p)
    local i = 0
    return function()
      i = i + 1
      if i <= n then return keys[i], values[i] end
    end, p, nil
  end
  Proxy.__pairs = proxy_pairs

  --- pairs() that also iterates a proxy's remote object (its own keys and
  --- values) on every Lua (PUC 5.1 and LuaJIT's pairs() ignore __pairs).
  ---@param t any
  ---@return function, any, any
  function synchro.pairs(t)
    if getmetatable(t) == Proxy then return proxy_pairs(t) end
    return pairs(t)
  end

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

  -- Context managers ----------------------------------------------------------

  -- A local object's method: the metamethod meta, else the field name.
  local function cm_method(v, meta, name)
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, meta) ~= nil then
      return rawget(mt, meta)
    end
    if type(v) == "table" or type(mt) == "table" then
      local ok, m = pcall(function() return v[name] end)
      if ok then return m end
    end
  end

  --- The enter of a context manager: __enter(v), else v:enter(); their
  --- results are the body's arguments. Without either, v itself.
  local function cm_enter(v)
    if getmetatable(v) == Proxy then
      return remote_in("call", pinfo(v), OP.ENTER_OBJECT)
    end
    local enter = cm_method(v, "__enter", "enter")
    if enter == nil then return v end
    return enter(v)
  end

  --- The exit of a context manager, given the body's error (nil when it
  --- returned): __exit(v, err), else v:exit(err), whose result true
  --- suppresses the error; else __close(v, err), else v:close(err), whose
  --- result is ignored. Returns whether err is suppressed.
  local function cm_exit(v, err)
    if getmetatable(v) == Proxy then
      local value, cancelled = P.sendable_error(err)
      return remote_in("call", pinfo(v), OP.CLOSE_OBJECT, value, cancelled)
        == true
    end
    local exit = cm_method(v, "__exit", "exit")
    if exit ~= nil then return exit(v, err) == true end
    local close = cm_method(v, "__close", "close")
    if close ~= nil then close(v, err) end
    return false
  end
  -- the loop side's ENTER_OBJECT and CLOSE_OBJECT (runtime.lua)
  synchro._cm_enter, synchro._cm_exit = cm_enter, cm_exit

  --- Runs fn with what obj's enter gives (obj itself by default), then
  --- obj's exit with fn's error (nil if fn returned), also when fn raised
  --- or its task was cancelled (the exit runs shielded). An exit
  --- (`__exit`/`exit`) that returns true suppresses the error; a
  --- `__close`/`close` is called with it. Returns fn's results (nothing
  --- when an error was suppressed). An error in enter is raised without
  --- running exit; an error in exit is raised in place of fn's.
  ---@param obj any
  ---@param fn fun(...): ...
  ---@return ...
  function synchro.with(obj, fn)
    if type(fn) ~= "function" then
      argerror(2, "with", "function expected, got " .. type(fn))
    end
    local entered = sched.pack(cm_enter(obj))
    local r = sched.pack(ypcall(fn, unpack(entered, 1, entered.n)))
    local err = nil
    if not r[1] then err = r[2] end
    local suppressed
    if sched.in_task() then
      suppressed = sched.shield(cm_exit, obj, err)
    else
      suppressed = cm_exit(obj, err)
    end
    if not r[1] then
      if suppressed then return end
      error(r[2], 0)
    end
    return unpack(r, 2, r.n)
  end

  -- Context managers made of generators (synchro.contextmanager).
  local GenCM = {}
  GenCM.__index = GenCM

  local raise_remote = P.raise_remote

  function GenCM.__enter(cm)
    if cm.it ~= nil then
      error("a context manager of synchro.contextmanager is entered once " ..
        "(call the factory again for another)", 0)
    end
    local it = cm.gen(unpack(cm.args, 1, cm.args.n))
    cm.it = it
    local r = P.step_raw(it, "next")
    if r[1] == "end" then
      error("the generator of a context manager ended without emitting", 0)
    elseif r[1] == "error" then
      raise_remote(r[2], r[3])
    end
    return unpack(r, 2, r.n)
  end

  -- Whether what the generator raised is the error thrown into it.
  local function same_error(raised, thrown)
    if rawequal(raised, thrown) then return true end
    if sched.is_cancelled(raised) and sched.is_cancelled(thrown) then
      return true
    end
    local ok, text = pcall(tostring, thrown)
    return ok and raised == text
  end

  function GenCM.__exit(cm, err)
    local it = cm.it
    if it == nil or it.closed then return false end
    local r
    if err == nil then
      r = P.step_raw(it, "next")
    else
      r = P.step_raw(it, "throw", err)
    end
    if r[1] == "item" then
      it:close()
      error("the generator of a context manager emitted more than once", 0)
    elseif r[1] == "end" then
      return err ~= nil -- it handled the error: suppressed
    elseif err ~= nil and same_error(r[2], err) then
      return false -- it let the body's error go on
    end
    raise_remote(r[2], r[3])
  end

  -- `local c <close> = cm(...)` (5.4) runs only the exit part: with the
  -- error, which it cannot suppress. Entering needs synchro.with.
  function GenCM.__close(cm, err) GenCM.__exit(cm, err) end

  --- Python's asynccontextmanager: gen is a wrapped generator (or one of
  --- a wrapped module) that emits once. `synchro.with(cm(...), body)`
  --- starts it, passes what it emits to body, then resumes it: where it
  --- emitted, it gets nothing if body returned, or body's error raised
  --- there (a pcall around synchro.emit sees it; handling it without
  --- raising suppresses it).
  ---@param gen synchro.Generator
  ---@return fun(...): table
  function synchro.contextmanager(gen)
    local mt = getmetatable(gen)
    if mt ~= P.WrappedGen and mt ~= GenProxy then
      argerror(1, "contextmanager", "wrapped generator expected, got " ..
        type(gen))
    end
    return function(...)
      return setmetatable({ gen = gen, args = sched.pack(...) }, GenCM)
    end
  end

  -- Classes -----------------------------------------------------------------

  --- Copies a class (a table of methods, used as its objects' metatable,
  --- with the tables it inherits from through metatables) into the loop
  --- VM and returns a proxy of it there: `Cls.new(...)` (any field that is
  --- a function) runs on the loop, and the objects it makes are proxies.
  ---@param cls table
  ---@return table
  function Synchronizer:wrap_class(cls)
    check_self(self, "wrap_class")
    if type(cls) ~= "table" then
      argerror(1, "wrap_class", "table expected, got " .. type(cls))
    end
    local chain, mts = {}, {}
    local t = cls
    while type(t) == "table" and #chain < 64 do
      local seen = false
      for i = 1, #chain do seen = seen or rawequal(chain[i], t) end
      if seen then break end
      chain[#chain + 1] = t
      t = debug.getmetatable(t)
    end
    -- the copy takes the chain without its links, then links it again
    for i = 1, #chain do
      mts[i] = debug.getmetatable(chain[i])
      debug.setmetatable(chain[i], nil)
    end
    local n = #chain
    local ok, id = pcall(core.define, self._ud, function()
      for i = 1, n - 1 do setmetatable(chain[i], chain[i + 1]) end
      return require("synchro.runtime").as_object(chain[1])
    end)
    for i = 1, #chain do debug.setmetatable(chain[i], mts[i]) end
    if not ok then
      argerror(1, "wrap_class", (tostring(id):gsub("^bad argument #%d+ " ..
        "to '%w+' %((.*)%)$", "%1")))
    end
    local w = P.make_wrapped(self._ud, id, "class")
    return w()
  end
end
