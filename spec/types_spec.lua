-- Annotation coverage: every public module (found from the files under
-- lua/synchro/, so that a new one is checked as soon as it lands) and every
-- public object class is loaded, and each public function and field it has
-- at run time must be declared in the LuaCATS meta files under types/.
local synchro = require "synchro"
local util = require "spec.helpers.util"

-- Modules that are parts of others, not an API (docs/design.md).
local internal = {
  ["synchro.wrap"] = true, ["synchro.generator"] = true,
  ["synchro.proxy"] = true, ["synchro.run"] = true,
  ["synchro.sched"] = true, ["synchro.runtime"] = true,
  ["synchro.check"] = true, ["synchro.kinds"] = true,
  ["synchro.aio.request"] = true,
  ["synchro.http_response"] = true, -- its class is synchro.aio.http.Response
}

local function lines_of(cmd)
  local p = io.popen(cmd)
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  table.sort(out)
  return out
end

local function public_modules()
  local mods = {}
  for _, path in ipairs(lines_of("find lua/synchro -name '*.lua'")) do
    local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", "")
      :gsub("/", ".")
    if not internal[name] then mods[#mods + 1] = name end
  end
  mods[#mods + 1] = "synchro"
  return mods
end

-- What types/ declares: class -> { name = true }, and functions that have
-- no doc line at all.
local function declared()
  local classes, undocumented = {}, {}
  for _, path in ipairs(lines_of("find types -name '*.lua'")) do
    local locals, current = {}, nil
    local prev = ""
    for line in io.lines(path) do
      local class = line:match("^%-%-%-@class ([%w_.]+)")
      if class then
        current = class
        classes[class] = classes[class] or {}
      end
      local field = line:match("^%-%-%-@field ([%w_]+)")
      if field and current then classes[current][field] = true end
      local var = line:match("^local ([%w_]+) = {}")
      if var and current then locals[var] = current end
      if not line:match("^%-%-%-") then current = nil end
      local v, name = line:match("^function ([%w_]+)[.:]([%w_]+)%(")
      if not v then v, name = line:match("^([%w_]+)%.([%w_]+) = ") end
      if v and locals[v] then
        classes[locals[v]][name] = true
        if not prev:match("^%-%-%-") then
          undocumented[#undocumented + 1] = path .. ": " .. line
        end
      end
      prev = line
    end
  end
  return classes, undocumented
end

local function public_keys(t, into)
  into = into or {}
  for k in pairs(t) do
    if type(k) == "string" and (k:sub(1, 1) ~= "_" or k == "_VERSION") then
      into[#into + 1] = k
    end
  end
  return into
end

local function methods(obj)
  local mt = getmetatable(obj)
  local index = type(mt) == "table" and mt.__index
  return type(index) == "table" and public_keys(index) or {}
end

-- The public names of every module and object class, found at run time.
-- A module that does not load in the caller's VM is looked at on the loop.
local function runtime_names(S)
  local names = {}
  local on_loop = S:wrap(function(name)
    local ok, m = pcall(require, name)
    if not ok then return nil, tostring(m) end
    local keys = {}
    for k in pairs(m) do
      if type(k) == "string" and k:sub(1, 1) ~= "_" then keys[#keys + 1] = k end
    end
    return keys
  end)
  for _, name in ipairs(public_modules()) do
    local ok, m = pcall(require, name)
    if ok and type(m) == "table" then
      names[name] = public_keys(m)
    else
      local keys, err = on_loop(name)
      names[name] = keys or ("does not load: " .. tostring(err or m))
    end
  end

  local w = S:wrap(function() end)
  local fut = w.future()
  fut:result()
  local g = S:wrap_generator(function() synchro.emit(1) end)
  local it = g()
  names["synchro.Synchronizer"] = public_keys(S, methods(S))
  names["synchro.Wrapped"] = public_keys(w, methods(w))
  names["synchro.Generator"] = public_keys(g, methods(g))
  names["synchro.Iterator"] = methods(it)
  names["synchro.Future"] = methods(fut)
  it:close()

  local loop_objects = S:wrap(function()
    local aio = require "synchro.aio"
    local out = {}
    local function methods_of(obj)
      local keys = {}
      local index = (getmetatable(obj) or {}).__index
      for k in pairs(type(index) == "table" and index or {}) do
        if type(k) == "string" and k:sub(1, 1) ~= "_" then keys[#keys + 1] = k end
      end
      return keys
    end
    out["synchro.Task"] = methods_of(aio.spawn(function() end))
    out["synchro.Channel"] = methods_of(aio.channel(1))
    out["synchro.Event"] = methods_of(aio.event())
    out["synchro.Semaphore"] = methods_of(aio.semaphore(1))
    out["synchro.Lock"] = methods_of(aio.lock())
    local interval = aio.interval(10)
    out["synchro.Interval"] = methods_of(interval)
    interval:stop()
    local server = assert(aio.tcp.listen("127.0.0.1", 0, function(c) c:close() end))
    local stream = assert(aio.tcp.connect("127.0.0.1", server:port()))
    out["synchro.tcp.Server"] = methods_of(server)
    out["synchro.tcp.Stream"] = methods_of(stream)
    stream:close()
    server:close()
    if require("synchro.core").tls_session then
      -- a TLS server and stream (no certificate needed to list methods)
      local tls = aio.tls
      local ts = setmetatable({}, tls.Server)
      out["synchro.tls.Server"] = methods_of(ts)
      out["synchro.tls.Stream"] = methods_of(
        require("synchro.aio.stream").new({}, tls.Stream))
    end
    local sock = assert(aio.udp.bind("127.0.0.1", 0))
    out["synchro.udp.Socket"] = methods_of(sock)
    sock:close()
    local proc = assert(aio.process.spawn("cat", {}, { stdin = "pipe",
      stdout = "pipe" }))
    out["synchro.aio.Process"] = methods_of(proc)
    out["synchro.aio.Stream"] = methods_of(proc.stdout)
    proc.stdin:close()
    proc:wait()
    proc:close()
    local dir = assert(aio.fs.mkdtemp("/tmp/synchro-types-XXXXXX"))
    local file = assert(aio.fs.open(dir .. "/f", "w"))
    out["synchro.fs.File"] = methods_of(file)
    file:close()
    aio.fs.unlink(dir .. "/f")
    aio.fs.rmdir(dir)
    return out
  end)
  for class, keys in pairs(loop_objects()) do names[class] = keys end
  return names
end

describe("LuaCATS coverage (types/)", function()
  local S
  setup(function() S = synchro.new({ name = "types-spec" }) end)
  teardown(function() S:close() end)

  it("declares every public function and field of every module and class",
    function()
      local classes = declared()
      local missing = {}
      local names = runtime_names(S)
      for class, keys in pairs(names) do
        if type(keys) == "string" then
          missing[#missing + 1] = class .. " " .. keys
        else
          for _, k in ipairs(keys) do
            if not (classes[class] and classes[class][k]) then
              missing[#missing + 1] = class .. "." .. k
            end
          end
        end
      end
      table.sort(missing)
      assert.are.same({}, missing)
    end)

  it("finds the modules from the files, the lazy aio ones included", function()
    local mods = {}
    for _, m in ipairs(public_modules()) do mods[m] = true end
    for _, m in ipairs { "synchro", "synchro.aio", "synchro.aio.tcp",
      "synchro.aio.fs", "synchro.luv", "synchro.cqueues" } do
      assert.is_true(mods[m], m)
    end
    assert.is_nil(mods["synchro.sched"])
  end)

  it("has a doc line above every declared function", function()
    local _, undocumented = declared()
    assert.are.same({}, undocumented)
  end)

  it("meta files are valid Lua that luacheck accepts", function()
    local ok = os.execute("luacheck -q --no-unused --no-global types >/dev/null")
    assert.is_true(ok == true or ok == 0)
    for _, path in ipairs(lines_of("find types -name '*.lua'")) do
      assert.is_truthy((loadstring or load)(util.read(path)), path)
    end
  end)
end)
