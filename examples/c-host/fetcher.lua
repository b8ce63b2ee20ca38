-- An async Lua module that a C program calls through synchro.
local aio = require "synchro.aio"

local fetcher = {}

--- Pretends to fetch item id, taking `delay` seconds of (async) waiting.
function fetcher.fetch(id, delay)
  aio.sleep(delay)
  return "item " .. id, id * id
end

--- Fetches n items concurrently; returns them as a list.
function fetcher.fetch_many(n, delay)
  local jobs = {}
  for i = 1, n do
    jobs[i] = function() return (fetcher.fetch(i, delay)) end
  end
  return { aio.gather((table.unpack or unpack)(jobs)) }
end

return fetcher
