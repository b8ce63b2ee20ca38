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

--- Raises unless opts is nil or a table; returns it, or {}.
function check.opts(opts, n, name)
  if opts ~= nil and type(opts) ~= "table" then
    argerror(n, name, "table expected, got " .. type(opts), 3)
  end
  return opts or {}
end

return check
