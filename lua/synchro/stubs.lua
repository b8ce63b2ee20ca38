--- synchro.stubs: writes LuaCATS stubs for the public face of an async
--- module (synchronicity's type_stubs, for synchro). Given `mylib`, whose
--- source is `return S:wrap_module("mylib.impl")`, it reads mylib.impl's
--- annotations and writes a `---@meta mylib` file in which each wrapped
--- function has its blocking signature, an `aio` member with the awaiting
--- one, a `future` member returning `synchro.Future<T>` and `sync`;
--- generators become iterators; classes declared in the impl (as
--- `mylib.impl.Name`) become `mylib.Name` proxies whose methods are
--- translated the same way. It reads sources only: nothing is loaded.
---
--- Use: `synchro-stubs mylib [-o mylib.lua]`, or `lua -l synchro.stubs
--- mylib [-o mylib.lua]`, or `require("synchro.stubs").generate("mylib")`.
local M = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function search(name)
  local path = package.path
  for template in path:gmatch("[^;]+") do
    local p = template:gsub("%?", (name:gsub("%.", "/")))
    local text = read(p)
    if text then return text, p end
  end
  return nil
end

-- A LuaCATS type at the start of s (brackets balanced, `fun(...): R` and
-- `A, B` lists kept whole): the type, and the rest of s.
local function scan_type(s, list)
  local depth, i, n = 0, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c == "(" or c == "{" or c == "<" or c == "[" then
      depth = depth + 1
    elseif c == ")" or c == "}" or c == ">" or c == "]" then
      depth = depth - 1
      if depth == 0 and s:sub(i + 1):match("^:%s*") then
        i = i + #s:sub(i + 1):match("^:%s*")
      end
    elseif c == '"' or c == "'" then
      local close = s:find(c, i + 1, true)
      i = close or n
    elseif depth == 0 and c:match("%s") then
      local after_sep = s:sub(1, i - 1):match(list and "[,|]$" or "|$")
      local before_sep = s:sub(i):match(list and "^%s*[,|]" or "^%s*|")
      if not after_sep and not before_sep then break end
      i = i + #s:sub(i):match("^%s*") - 1
    elseif depth == 0 and c == "," and not list then
      break
    end
    i = i + 1
  end
  return s:sub(1, i - 1), s:sub(i)
end

-- One doc block: description lines, params (by name), returns, class.
local function parse_doc(block)
  local doc = { text = {}, params = {}, returns = {}, type = nil }
  for _, line in ipairs(block) do
    local tag, rest = line:match("^%-%-%-%s*@(%w+)%s*(.*)$")
    if not tag then
      doc.text[#doc.text + 1] = line
    elseif tag == "param" then
      local name, after = rest:match("^([%w_.]+%??)%s+(.*)$")
      if name then
        local t = scan_type(after)
        doc.params[(name:gsub("%?$", ""))] = name:match("%?$") and
          (t .. "|nil") or t
      end
    elseif tag == "return" then
      local t = scan_type(rest, true)
      for one in (t .. ","):gmatch("%s*(.-)%s*,") do
        doc.returns[#doc.returns + 1] = one
      end
    elseif tag == "class" then
      doc.class = rest:match("^([%w_.]+)")
    elseif tag == "type" then
      doc.type = scan_type(rest)
    end
  end
  return doc
end

local function split_params(s)
  local out = {}
  for p in s:gmatch("[^,%s]+") do out[#out + 1] = p end
  return out
end

-- The declarations of an impl source, in order.
local function parse(source)
  local decls, block, classes = {}, {}, {}
  local ret = source:match("\nreturn%s+([%w_]+)%s*$") or
    source:match("\nreturn%s+([%w_]+)%s*\n")
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%-%-%-") then
      block[#block + 1] = line
    else
      local doc = parse_doc(block)
      block = {}
      local var = line:match("^local ([%w_]+)%s*=%s*[{s]")
      local owner, dot, name, params =
        line:match("^function ([%w_.]+)([.:])([%w_]+)%s*%((.-)%)")
      local aowner, aname, rhs = line:match("^([%w_.]+)%.([%w_]+)%s*=%s*(.*)$")
      if var then
        classes[var] = { class = doc.class, doc = doc }
      elseif owner then
        decls[#decls + 1] = { owner = owner, name = name, doc = doc,
          params = split_params(params), method = dot == ":",
          kind = "function" }
      elseif aowner and aname:sub(1, 2) ~= "__" then
        local gen, gparams = rhs:match("^synchro%.(%w+)%(function%s*%((.-)%)")
        if gen == "generator" or gen == "nowrap" then
          local ps = split_params(gparams)
          local method = classes[aowner] ~= nil and ps[1] == "self"
          if method then table.remove(ps, 1) end
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            params = ps, method = method,
            kind = gen == "generator" and "generator" or "plain" }
        elseif rhs:match("^{%s*}") then
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            kind = "module" }
        elseif rhs:match("^[\"']") then
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            kind = "field", type = doc.type or "string" }
        elseif rhs:match("^%-?%d") then
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            kind = "field", type = doc.type or "number" }
        elseif rhs:match("^true") or rhs:match("^false") then
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            kind = "field", type = doc.type or "boolean" }
        elseif rhs:match("^{") then
          decls[#decls + 1] = { owner = aowner, name = aname, doc = doc,
            kind = "field", type = doc.type or "table" }
        end
      end
    end
  end
  return decls, classes, ret
end

--- The stub text for module `public` (its impl: `impl`, whose source is
--- `source`).
---@param public string
---@param impl string
---@param source string
---@return string
function M.render(public, impl, source)
  local decls, classes, ret = parse(source)
  assert(ret, impl .. ": no `return <table>` at its end")
  local out = {}
  local function emit(s) out[#out + 1] = (s:gsub("%s+$", "")) end
  local function tr(t)
    -- impl classes are the public classes' proxies
    t = t:gsub("([%w_.]+)", function(name)
      if name:sub(1, #impl + 1) == impl .. "." then
        return public .. name:sub(#impl + 1)
      end
      return name
    end)
    return t
  end

  -- class name (public) of each owner variable or path
  local owners = { [ret] = { class = public, var = "M" } }
  local vars = { M = true }
  local function var_for(class)
    local v = class:gsub("^" .. public:gsub("%p", "%%%0") .. "%.?", "")
      :gsub("%.", "_")
    v = (v == "" and "M" or v)
    while vars[v] do v = v .. "_" end
    vars[v] = true
    return v
  end
  -- a local table is a class if annotated so or if it has methods
  local has_methods = {}
  for _, d in ipairs(decls) do has_methods[d.owner] = true end
  for var, c in pairs(classes) do
    if var ~= ret and (c.class or has_methods[var]) then
      local class = tr(c.class or (impl .. "." .. var))
      owners[var] = { class = class, var = nil, doc = c.doc, object = true }
    end
  end
  for _, d in ipairs(decls) do
    if d.kind == "module" then
      local path = d.owner .. "." .. d.name
      local parent = owners[d.owner]
      if parent then
        owners[path] = { class = parent.class .. "." .. d.name }
      end
    end
  end

  local function signature(d, class, with_self)
    local ps = {}
    if with_self then ps[1] = "self: " .. class end
    for _, p in ipairs(d.params) do
      ps[#ps + 1] = p .. ": " .. tr(d.doc.params[p] or "any")
    end
    return table.concat(ps, ", ")
  end
  local function returns(d)
    local r = {}
    for i, t in ipairs(d.doc.returns) do r[i] = tr(t) end
    return r
  end
  local function doc_lines(d)
    for _, l in ipairs(d.doc.text) do emit(l) end
  end
  local function param_lines(d, class, with_self)
    if with_self then emit("---@param self " .. class) end
    for _, p in ipairs(d.params) do
      emit(("---@param %s %s"):format(p, tr(d.doc.params[p] or "any")))
    end
  end
  local function names(d, with_self)
    local n = {}
    if with_self then n[1] = "self" end
    for _, p in ipairs(d.params) do n[#n + 1] = p end
    return table.concat(n, ", ")
  end

  emit("---@meta " .. public)
  emit(("-- Generated by synchro-stubs from %s: the blocking face that")
    :format(impl))
  emit(("-- S:wrap_module(%q) gives. Do not edit; generate it again.")
    :format(impl))
  emit("-- luacheck: no unused")
  emit("")

  -- the module and its nested modules, with their fields
  local function declare_table(key, o)
    emit("---@class " .. o.class)
    for _, d in ipairs(decls) do
      if d.owner == key and d.kind == "field" then
        emit(("---@field %s %s%s"):format(d.name, tr(d.type),
          d.doc.text[1] and (" " .. d.doc.text[1]:gsub("^%-%-%-%s*", "")) or ""))
      elseif d.owner == key and d.kind == "module" then
        emit(("---@field %s %s"):format(d.name, o.class .. "." .. d.name))
      end
    end
    o.var = o.var or var_for(o.class)
    emit(("local %s = {}"):format(o.var))
    emit("")
  end
  declare_table(ret, owners[ret])
  for _, d in ipairs(decls) do
    local path = d.owner .. "." .. d.name
    if d.kind == "module" and owners[path] then
      declare_table(path, owners[path])
      emit(("%s.%s = %s"):format(owners[d.owner].var, d.name, owners[path].var))
      emit("")
    end
  end
  local order = {}
  for var, o in pairs(owners) do
    if o.object then order[#order + 1] = var end
  end
  table.sort(order)
  for _, var in ipairs(order) do
    local o = owners[var]
    for _, l in ipairs(o.doc and o.doc.text or {}) do emit(l) end
    emit(("---@class %s: synchro.Proxy"):format(o.class))
    emit(("---@field aio %s.aio the same object, with methods that await")
      :format(o.class))
    o.var = var_for(o.class)
    emit(("local %s = {}"):format(o.var))
    emit("")
    emit(("---@class %s.aio"):format(o.class))
    o.aio_var = o.var .. "_aio"
    emit(("local %s = {}"):format(o.aio_var))
    emit("")
  end

  for _, d in ipairs(decls) do
    local o = owners[d.owner]
    if o and (d.kind == "function" or d.kind == "generator" or
      d.kind == "plain") then
      local self_ = o.object and d.method
      local fq = o.class .. "." .. d.name
      local r = returns(d)
      local rlist = table.concat(r, ", ")
      if d.kind == "plain" then
        -- copied as plain code: it runs in the caller's VM, as written
        doc_lines(d)
        param_lines(d, o.class, self_)
        for _, t in ipairs(r) do emit("---@return " .. t) end
        emit(("function %s.%s(%s) end"):format(o.var, d.name, names(d, self_)))
        emit("")
      elseif d.kind == "generator" then
        local it = fq .. ".Iterator"
        emit(("---@class %s: synchro.Iterator"):format(it))
        emit(("---@overload fun(): %s"):format(rlist ~= "" and rlist or "any"))
        emit("")
        doc_lines(d)
        emit("---@class " .. fq)
        emit(("---@overload fun(%s): %s"):format(signature(d, o.class, self_), it))
        local gvar = o.var .. "_" .. d.name
        emit(("local %s = {}"):format(gvar))
        emit("")
        emit("--- Iterates inside async code.")
        param_lines(d, o.class, self_)
        emit("---@return " .. it)
        emit(("function %s.aio(%s) end"):format(gvar, names(d, self_)))
        emit("")
        emit(("%s.%s = %s"):format(o.var, d.name, gvar))
        emit("")
        if o.object then
          emit("--- Iterates inside async code.")
          param_lines(d, o.class, false)
          emit("---@return " .. it)
          emit(("function %s:%s(%s) end"):format(o.aio_var, d.name, names(d)))
          emit("")
        end
      else
        doc_lines(d)
        emit("---@class " .. fq)
        emit(("---@overload fun(%s)%s"):format(signature(d, o.class, self_),
          rlist ~= "" and (": " .. rlist) or ""))
        local fvar = o.var .. "_" .. d.name
        emit(("local %s = {}"):format(fvar))
        emit("")
        local variants = {
          { "aio", "Awaits (only in async code).", true },
          { "sync", "Always blocks, even in async code.", false },
        }
        for _, v in ipairs(variants) do
          emit("--- " .. v[2])
          if v[3] then emit("---@async") end
          param_lines(d, o.class, self_)
          for _, t in ipairs(r) do emit("---@return " .. t) end
          emit(("function %s.%s(%s) end"):format(fvar, v[1], names(d, self_)))
          emit("")
        end
        emit("--- Starts the call now; the Future gives its results.")
        param_lines(d, o.class, self_)
        emit(("---@return synchro.Future<%s>"):format(r[1] or "nil"))
        emit(("function %s.future(%s) end"):format(fvar, names(d, self_)))
        emit("")
        emit(("%s.%s = %s"):format(o.var, d.name, fvar))
        emit("")
        if o.object then
          doc_lines(d)
          emit("---@async")
          param_lines(d, o.class, false)
          for _, t in ipairs(r) do emit("---@return " .. t) end
          emit(("function %s:%s(%s) end"):format(o.aio_var, d.name, names(d)))
          emit("")
        end
      end
    end
  end
  emit("return M")
  return table.concat(out, "\n") .. "\n"
end

--- The stubs of public module `name`: finds its source on package.path,
--- the impl it wraps (`wrap_module("...")`, or `opts.impl`), and renders.
---@param name string
---@param opts? {impl?: string}
---@return string|nil stubs
---@return string|nil message
function M.generate(name, opts)
  if type(name) ~= "string" then
    error("bad argument #1 to 'generate' (string expected, got " ..
      type(name) .. ")", 2)
  end
  opts = opts or {}
  local impl = opts.impl
  if not impl then
    local wrapper = search(name)
    if not wrapper then return nil, "module '" .. name .. "' not found" end
    impl = wrapper:match("wrap_module%s*%(?%s*[\"']([^\"']+)[\"']")
    if not impl then
      return nil, name .. " does not call wrap_module(\"...\"): give the impl"
    end
  end
  local source = search(impl)
  if not source then return nil, "module '" .. impl .. "' not found" end
  return M.render(name, impl, source)
end

local usage = "usage: synchro-stubs MODULE [-o FILE] [--impl IMPL]\n"

--- The command line: `MODULE [-o FILE] [--impl IMPL]`; returns the exit
--- status.
---@param args string[]
---@return integer
function M.main(args)
  local name, output, impl
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "-o" then
      output, i = args[i + 1], i + 1
    elseif a == "--impl" then
      impl, i = args[i + 1], i + 1
    elseif a == "-h" or a == "--help" then
      io.stdout:write(usage)
      return 0
    elseif not name then
      name = a
    else
      io.stderr:write(usage)
      return 2
    end
    i = i + 1
  end
  if not name then
    io.stderr:write(usage)
    return 2
  end
  local text, err = M.generate(name, { impl = impl })
  if not text then
    io.stderr:write("synchro-stubs: ", err, "\n")
    return 1
  end
  if output then
    local f, ferr = io.open(output, "wb")
    if not f then
      io.stderr:write("synchro-stubs: ", ferr, "\n")
      return 1
    end
    f:write(text)
    f:close()
  else
    io.stdout:write(text)
  end
  return 0
end

-- `lua -l synchro.stubs MODULE ...`: loaded by the interpreter itself (no
-- Lua caller), it runs the command line and exits before the interpreter
-- would take MODULE for a script. The arguments come from the command
-- line, since Lua 5.1 has no `arg` yet at that point.
local caller = debug.getinfo(3, "S")
if caller == nil or caller.what == "C" then
  local f = io.open("/proc/self/cmdline", "rb")
  local cmdline = f and f:read("*a") or ""
  if f then f:close() end
  local argv = {}
  for a in cmdline:gmatch("([^%z]*)%z") do argv[#argv + 1] = a end
  for j = 1, #argv - 1 do
    if (argv[j] == "-l" and argv[j + 1] == "synchro.stubs") or
      argv[j] == "-lsynchro.stubs" then
      local rest = {}
      for k = (argv[j] == "-l" and j + 2 or j + 1), #argv do
        rest[#rest + 1] = argv[k]
      end
      if rest[1] ~= nil and rest[1]:sub(1, 1) ~= "-" or rest[1] == "-o" then
        os.exit(M.main(rest))
      end
    end
  end
end

return M
