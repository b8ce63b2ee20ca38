-- A plain (blocking) script using the async Redis client through its sync
-- face. Usage: lua demo.lua [port]   (a redis-server on 127.0.0.1:port,
-- default 6379; the script's directory is put on package.path).
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path

local synchro = require "synchro"
local redis = require "redis_async" -- before any other synchronizer
local port = tonumber(arg and arg[1]) or 6379

local conn = assert(redis.connect("127.0.0.1", port))
print("set", conn:set("demo:greeting", "hello"))
print("get", conn:get("demo:greeting"))
conn:del("demo:counter")
print("incr", conn:incr("demo:counter"), conn:incr("demo:counter"))
print("missing", conn:get("demo:missing"))

-- a pipeline: 100 commands written at once, then 100 replies read
local cmds = {}
for i = 1, 100 do cmds[i] = { "INCR", "demo:counter" } end
local replies = conn:pipeline(cmds)
print("pipeline", replies.n, replies[1], replies[100])

-- a server error is raised with the server's text
local ok, err = pcall(conn.command, conn, "INCR", "demo:greeting")
print("error", ok, (tostring(err):match("^[^\n]*")))

-- synchro.with closes the connection however the function ends
-- (on Lua 5.4, `local c <close> = redis.connect(...)` does the same)
print("with", synchro.with(redis.connect("127.0.0.1", port), function(c)
  return c:command("PING")
end))

-- a subscription: messages published from a task of another synchronizer,
-- once the subscription is in place
local S = synchro.new({ name = "publisher" })
local publish = S:wrap(function(p, channel, n)
  local aio = require "synchro.aio"
  local pub = require("redis_async.impl").connect("127.0.0.1", p)
  for _ = 1, 500 do
    if pub:command("PUBSUB", "NUMSUB", channel)[2] > 0 then break end
    aio.sleep(0.01)
  end
  for i = 1, n do pub:command("PUBLISH", channel, "message " .. i) end
  pub:close()
end)
local done = publish.future(port, "demo:news", 3)
local it = conn:subscribe("demo:news")
local got = 0
for channel, message in it do
  print("received", channel, message)
  got = got + 1
  if got == 3 then break end
end
it:close() -- unsubscribes (leaving the loop does it on Lua 5.4)
done:result()
print("still usable", conn:get("demo:greeting"))
conn:close()
S:close()
