--- Argument checks shared by synchro's modules: misuse raises at the
--- caller's caller with "bad argument #n to 'name' (...)".
local check = {}

--- Raises "bad argument #n to 'name' (msg)" at level (default 2),
--- counted from the function that calls argerror.
---@param n integer
---@param name string
---@param msg string
---@param level? integer
function check.argerror(n, name, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, name, msg),
    (level or 2) + 1)
end
local argerror = check.argerror

--- Raises unless type(v) is want.
function check.type(v, want, n, name)
  if type(v) ~= want then
    argerror(n, name, want .. " expected, got " .. type(v), 3)
  end
end

--- Raises unless port is an integer from 0 to 65535.
function check.port(port, n, name)
  if type(port) ~= "number" or port % 1 ~= 0 or port < 0 or
      port > 65535 then
    argerror(n, name, type(port) == "number" and "port out of range" or
      "number expected, got " .. type(port), 3)
  end
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
    argerror(n, name, "table expected, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    local ok = false
    for i = 1, #known do
      if known[i] == k then ok = true break end
    end
    if not ok then
      argerror(n, name, ("unknown option '%s' (options: %s)")
        :format(tostring(k), table.concat(known, ", ")), 3)
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
      .. type(v), 3)
  end
  if v ~= v then
    argerror(n, name, (what or "seconds") .. " is NaN", 3)
  end
  return check_time(v, name, what)
end

return check
