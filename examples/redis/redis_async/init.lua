-- The blocking face of redis_async.impl for plain code:
-- `local redis = require "redis_async"`.
local synchro = require "synchro"
local S = synchro.new({ name = "redis" })
return S:wrap_module("redis_async.impl")
