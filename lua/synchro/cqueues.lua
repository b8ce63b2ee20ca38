--- synchro.cqueues: await synchro calls from coroutines of a cqueues
--- controller. A Future speaks cqueues' poll protocol (pollfd, events,
--- timeout), so inside a controller's coroutine `f.aio(...)`, a plain
--- `f(...)` and `future:result()` yield to the controller with the future
--- as the pollable, and the other coroutines keep running.
local synchro = require "synchro"
local cqueues = require "cqueues"

local M = {}

local function await(fut)
  if not fut:done() then
    repeat
      cqueues.poll(fut)
    until fut:done()
    -- The future's fd is closed when it is collected, and its number may
    -- then be reused: cqueues must forget it first.
    cqueues.cancel(fut:pollfd())
  end
  return fut:outcome()
end

--- Waits for a future from a cqueues coroutine; returns its results or
--- raises its error.
---@param fut synchro.Future
---@return ...
M.await = await

synchro.register_adapter(function()
  local _, managed = cqueues.running()
  if managed then return await end
  return nil
end)

return M
