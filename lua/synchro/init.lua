--- synchro: call async Lua code (coroutines on a libuv loop thread) from
--- ordinary blocking code, from other async code, or through futures.
local core = require "synchro.core"
local sched = require "synchro.sched"
local aio = require "synchro.aio"

local synchro = {
  _VERSION = "0.1.0",
  aio = aio,
  Cancelled = sched.Cancelled,
  -- identity -> synchronizer userdata, for proxies that come back
  _known = setmetatable({}, { __mode = "v" }),
  -- identity -> grace, for bounds that default to it
  _graces = {},
  -- functions marked in async modules (see synchro.generator, nowrap)
  _marks = {
    generator = setmetatable({}, { __mode = "k" }),
    plain = setmetatable({}, { __mode = "k" }),
  },
}

---@class synchro.Synchronizer
---@field name string
local Synchronizer = {}
Synchronizer.__index = Synchronizer

local check = require "synchro.check"
local argerror =
  check.argerror

--- Creates a Synchronizer: one loop thread (started on first call) with
--- its own Lua VM.
---@param opts? {name?: string, grace?: number, slow?: number}
--- `grace` (seconds, default 5) bounds every wait for a cancelled task's
--- cleanup: at close, after a timeout, after Ctrl-C. `slow` (seconds,
--- default 0.1; 0 is off): a task that holds the loop longer gets one
--- warning.
---@return synchro.Synchronizer
function synchro.new(opts)
  opts = check.opts(opts, 1, "new", { "name", "grace", "slow" })
  if opts.name ~= nil and type(opts.name) ~= "string" then
    argerror(1, "new", "'name' must be a string")
  end
  if opts.grace ~= nil and type(opts.grace) ~= "number" then
    argerror(1, "new", "'grace' must be a number")
  end
  -- the one time rule (NaN raises, math.huge waits as long as it takes)
  local grace = check.time(opts.grace, 1, "new", "grace")
  if opts.grace ~= nil and grace == nil then grace = opts.grace end
  if opts.slow ~= nil and (type(opts.slow) ~= "number" or
      opts.slow ~= opts.slow) then
    argerror(1, "new", "'slow' must be a number (seconds; 0 is off)")
  end
  local S = setmetatable({
    name = opts.name or "synchro",
    grace = grace or 5,
    _ud = core.new(opts.name or "synchro", package.path, package.cpath,
      grace or 5),
  }, Synchronizer)
  core.set_slow(S._ud, opts.slow or 0.1)
  synchro._known[core.identity(S._ud)] = S._ud
  synchro._graces[core.identity(S._ud)] = S.grace
  return S
end

local default
--- The shared Synchronizer of this Lua state, created on first use.
---@return synchro.Synchronizer
function synchro.default()
  if default == nil or core.state(default._ud) == "closed" then
    default = synchro.new({ name = "default" })
  end
  return default
end

local function check_self(S, fname)
  if getmetatable(S) ~= Synchronizer then
    error(("bad self to '%s' (Synchronizer expected; use S:%s)")
      :format(fname, fname), 3)
  end
end

-- What the parts share; not public.
local P = { check_self = check_self }
require("synchro.wrap")(synchro, Synchronizer, P)
require("synchro.generator")(synchro, Synchronizer, P)
require("synchro.proxy")(synchro, Synchronizer, P)
require("synchro.run")(synchro)
require("synchro.aio.thread")._install(synchro, Synchronizer)

do -- HTTP responses cross by value (lua/synchro/http_response.lua)
  local ext = debug.getregistry()["synchro.ext"]
  ext["synchro.http.response"] = function(payload)
    return require("synchro.http_response").decode(payload)
  end
end

--- Closes the Synchronizer: cancels its tasks, lets their cleanup run for
--- up to `grace` seconds, then stops its thread. Idempotent.
---@param grace? number
function Synchronizer:close(grace)
  check_self(self, "close")
  if grace ~= nil and type(grace) ~= "number" then
    argerror(1, "close", "number expected, got " .. type(grace))
  end
  if grace ~= nil and grace ~= grace then argerror(1, "close", "grace is NaN") end
  core.close(self._ud, grace or self.grace)
end
Synchronizer.__close = function(self) self:close() end

--- A reference to this Synchronizer that another Lua state (on another
--- OS thread) turns back into a Synchronizer with synchro.import: an
--- integer, checked when imported. Import each exported reference once
--- (a second import is an error).
---@return integer
function Synchronizer:export()
  check_self(self, "export")
  return core.export(self._ud)
end

--- The Synchronizer behind a reference from S:export(). Collecting the
--- imported object does not close the Synchronizer; close() does.
---@param ref integer
---@return synchro.Synchronizer
function synchro.import(ref)
  if type(ref) ~= "number" then
    argerror(1, "import", "reference from S:export() expected, got " ..
      type(ref))
  end
  local ok, ud = pcall(core.import, ref)
  if not ok then
    argerror(1, "import", "not a reference from S:export(), or imported " ..
      "already (import each reference once)")
  end
  local S = setmetatable({ name = "imported", grace = 5, _ud = ud },
    Synchronizer)
  synchro._known[core.identity(S._ud)] = S._ud
  return S
end

--- "new", "running", "closing" or "closed".
---@return string
function Synchronizer:state()
  check_self(self, "state")
  return core.state(self._ud)
end

function Synchronizer.__tostring(self)
  return ("synchro.Synchronizer(%s, %s)"):format(self.name,
    core.state(self._ud))
end

--- The remote traceback of a table error that came back from a call.
---@param err table
---@return string|nil
function synchro.traceback(err)
  if type(err) ~= "table" then return nil end
  return core.traceback(err)
end

--- True when err is synchro's own cancellation error: a cancelled or
--- closed call, a cancelled task's (synchro.Cancelled), from whichever VM.
--- Not for other errors that mention ECANCELED, such as a user's
--- error("ECANCELED: ...") or a closed stream's nil, "ECANCELED: ...".
--- A cancellation error is a table; tostring() and .. give its message,
--- which starts with "ECANCELED: ".
---@param err any
---@return boolean
synchro.is_cancelled = sched.is_cancelled

return synchro
