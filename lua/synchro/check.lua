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

--- Raises unless opts is nil or a table; returns it, or {}.
function check.opts(opts, n, name)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(n, name, "table expected, got " .. type(opts))
  end
  return opts or {}
end

return check
