---@meta synchro.cqueues

---@class synchro.cqueues
local M = {}

--- Waits for a future from a cqueues coroutine; returns its results or
--- raises its error.
---@param fut synchro.Future
---@return ...
---@param fut synchro.Future
---@return ...
function M.await(fut) end

return M
