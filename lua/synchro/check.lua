--- Argument checks shared by synchro's modules. Misuse raises at the
--- user's line: the first function on the stack that is not synchro's own
--- Lua code (nor a C function), however many of synchro's functions lie
--- between it and the check. That one rule replaces error levels counted
--- by hand at each call site.
local check = {}

local getinfo = debug.getinfo

-- synchro's own Lua files live beside this one.
local own_dir = (getinfo(1, "S").source or ""):match("^@(.*[/\\])")

local function is_own(info)
  if info.what == "C" or info.what == "tail" then return true end
  local src = info.source
  return own_dir ~= nil and src:sub(1, 1) == "@" and
    src:sub(2, #own_dir + 1) == own_dir
end

--- The error level (as error() counts it from the caller of user_level)
--- of the user's frame: the first one outside synchro's own code; 1 (the
--- function that called the check) if every frame is synchro's.
---@return integer
function check.user_level()
  local level = 3 -- 1: user_level, 2: its caller
  while true do
    local info = getinfo(level, "S")
    if info == nil then return 2 end
    if not is_own(info) then return level - 1 end
    level = level + 1
  end
end

--- The position ("file:line: ") of the user's frame, as error() would
--- prefix it, or "" when it has none. The C binding raises its "bad
--- argument" errors with it (through the registry), by the same rule.
---@return string
function check.where()
  local info = getinfo(check.user_level(), "Sl")
  if info == nil or info.currentline == nil or info.currentline <= 0 then
    return ""
  end
  return ("%s:%d: "):format(info.short_src, info.currentline)
end
debug.getregistry()["synchro.user_where"] = check.where

--- Raises msg (a misuse error) at the user's line.
---@param msg string
function check.error(msg)
  error(msg, check.user_level())
end

--- Raises "bad argument #n to 'name' (msg)" at the user's line. level is
--- accepted for old callers and ignored.
---@param n integer
---@param name string
---@param msg string
---@param level? integer
function check.argerror(n, name, msg, level) -- luacheck: ignore level
  error(("bad argument #%d to '%s' (%s)"):format(n, name, msg),
    check.user_level())
end
local argerror = check.argerror

--- Raises unless type(v) is want.
function check.type(v, want, n, name)
  if type(v) ~= want then
    argerror(n, name, want .. " expected, got " .. type(v))
  end
end

--- Raises unless port is an integer from 0 to 65535.
function check.port(port, n, name)
  if type(port) ~= "number" or port % 1 ~= 0 or port < 0 or
      port > 65535 then
    argerror(n, name, type(port) == "number" and "port out of range" or
      "number expected, got " .. type(port))
  end
end

-- Sets of the long option lists (kept by the list: those are constants of
-- their modules; a short list, often a literal made per call, is scanned).
local known_sets = setmetatable({}, { __mode = "k" })

local function is_known(known, k)
  local n = #known
  if n <= 4 then
    for i = 1, n do
      if known[i] == k then return true end
    end
    return false
  end
  local set = known_sets[known]
  if set == nil then
    set = {}
    for i = 1, n do set[known[i]] = true end
    known_sets[known] = set
  end
  return set[k] == true
end

--- Raises unless opts is nil or a table whose keys are all in known (a
--- list of option names); returns it, or {}.
---@param opts any
---@param n integer
---@param name string
---@param known string[]
---@return table
function check.opts(opts, n, name, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(n, name, "table expected, got " .. type(opts))
  end
  for k in pairs(opts) do
    if not is_known(known, k) then
      argerror(n, name, ("unknown option '%s' (options: %s)")
        :format(tostring(k), table.concat(known, ", ")))
    end
  end
  return opts
end

local check_time = require("synchro.core").check_time

--- A time in seconds by the one rule (shared with the C core): NaN
--- raises; a negative value means 0; math.huge, or anything too large,
--- means no limit and gives nil. what names the value in the message
--- (default "seconds"); nil passes as nil.
---@param v any
---@param n integer
---@param name string
---@param what? string
---@return number|nil
function check.time(v, n, name, what)
  if v == nil then return nil end
  if type(v) ~= "number" then
    argerror(n, name, (what and what .. ": " or "") .. "number expected, got "
      .. type(v))
  end
  if v ~= v then
    argerror(n, name, (what or "seconds") .. " is NaN")
  end
  return check_time(v, name, what)
end

--- The require of a module whose C part needs an optional library (libcurl,
--- libpq): raises, naming the Debian package, when synchro was built
--- without it (`present`, the core function its C part registers, is nil).
---@param present any
---@param module string
---@param library string
---@param package string
function check.built_with(present, module, library, package)
  if present == nil then
    error(("%s is not available: synchro was built without %s " ..
      "(Debian: apt install %s, then rebuild synchro)"):format(module,
      library, package), 0)
  end
end

return check
