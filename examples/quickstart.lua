-- A plain, blocking script that calls async code through synchro.
-- Run it with `make demo`.
local synchro = require "synchro"

local S = synchro.new({ name = "quickstart" })

-- An async function: it runs as a task on S's loop thread, where
-- synchro.aio is available. Here it runs ten 0.2 s operations at once.
local fetch_all = S:wrap(function(n)
  local aio = require "synchro.aio"
  local function fetch(i)
    aio.sleep(0.2) -- stands for real I/O: a request, a query, a file read
    return ("item %d"):format(i)
  end
  local jobs = {}
  for i = 1, n do jobs[i] = function() return fetch(i) end end
  return { aio.gather((table.unpack or unpack)(jobs)) }
end)

local now = require("synchro.core").now

-- 1. A blocking call, from plain code.
local t0 = now()
local items = fetch_all(10)
print(("fetched %d items in %.2f s (10 x 0.2 s, concurrently):")
  :format(#items, now() - t0))
print("  " .. table.concat(items, ", "))

-- 2. A future: start the call, do other things, then collect it.
local square = S:wrap(function(x)
  require("synchro.aio").sleep(0.1)
  return x * x
end)
local future = square.future(12)
print("future done right away?", future:done())
print("future result:", future:result())

-- 3. An error raised by async code crosses back as a Lua error, with the
--    remote frames in its traceback.
local fail = S:wrap(function(what)
  error("cannot fetch " .. what)
end)
local ok, err = pcall(fail, "the moon")
print("error crossed back:", ok)
print(err)

S:close()
