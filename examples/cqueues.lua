-- A cqueues program awaiting synchro calls: 20 concurrent 0.2 s calls
-- take about 0.2 s, and a cqueues timer keeps ticking meanwhile.
local cqueues = require "cqueues"
local synchro = require "synchro"
require "synchro.cqueues" -- lets calls await inside cqueues coroutines

local S = synchro.new({ name = "cqueues-example" })
local fetch = S:wrap(function(id)
  require("synchro.aio").sleep(0.2) -- stands for real async I/O
  return "item " .. id
end)

local cq = cqueues.new()
local now = require("synchro.core").now
local t0 = now()
local results, ticks = {}, 0
for i = 1, 20 do
  cq:wrap(function()
    local item = fetch(i) -- awaits: the controller runs the others
    results[#results + 1] = item
  end)
end
cq:wrap(function()
  while #results < 20 do
    cqueues.sleep(0.01)
    ticks = ticks + 1
  end
end)
assert(cq:loop())
print(("%d results in %.2f s; the timer ticked %d times meanwhile")
  :format(#results, now() - t0, ticks))
S:close()
