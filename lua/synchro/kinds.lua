--- Kinds of values that cross between VMs through `__synchro`: those
--- named "synchro.*" are reserved to synchro's own marshallers, which
--- say so here (the encoder in src/core/marshal.c checks the list).
local M = {}

local registry = debug.getregistry()

--- Marks fn (a `__synchro` metamethod of synchro's own code) as allowed
--- to produce "synchro.*" kinds; returns fn.
---@param fn function
---@return function
function M.own(fn)
  local own = registry["synchro.own_marshallers"]
  if own == nil then
    own = setmetatable({}, { __mode = "k" })
    registry["synchro.own_marshallers"] = own
  end
  own[fn] = true
  return fn
end

return M
