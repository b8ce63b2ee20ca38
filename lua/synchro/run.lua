--- synchro.run: a scheduler on the calling thread (Python's asyncio.run)
--- in which .aio calls, gather, race and spawn await. Installed into
--- synchro by init.lua.
local core = require "synchro.core"
local sched = require "synchro.sched"
local check = require "synchro.check"
local argerror = check.argerror

return function(synchro)
  local aio = require "synchro.aio"
  local ypcall, yxpcall = sched.yieldable_pcalls()

  -- synchro.run: a scheduler on the calling thread --------------------------

  -- Timers for synchro.run, kept in a list sorted by deadline.
  local function new_timers()
    local list = {}
    local timers = {}
    local Timer = {}
    Timer.__index = Timer
    function Timer:start(seconds)
      self:stop()
      self.deadline = core.now() + math.max(seconds, 0)
      local i = #list
      while i > 0 and list[i].deadline > self.deadline do i = i - 1 end
      table.insert(list, i + 1, self)
    end
    function Timer:stop()
      for i = 1, #list do
        if list[i] == self then table.remove(list, i) return end
      end
    end
    Timer.close = Timer.stop
    function timers.new(fn) return setmetatable({ fn = fn }, Timer) end
    function timers.next_timeout()
      if list[1] == nil then return nil end
      return math.max(list[1].deadline - core.now(), 0)
    end
    function timers.fire()
      local now = core.now()
      while list[1] and list[1].deadline <= now do
        local t = table.remove(list, 1)
        t.fn()
      end
    end
    function timers.empty() return list[1] == nil end
    return timers
  end

  -- Runs a callback call (from a task of a loop) as a task here.
  local function serve_callback(rcall)
    local run = debug.getregistry()["synchro.run_callback"]
    core.rreply(rcall, run(core.rargs(rcall)))
  end

  local function run_loop(s, main_task, backend, timers)
    local interrupted = false
    local taken_keys, taken_calls = {}, {} -- reused by every take
    while s.nlive > 0 do
      s:run_ready()
      if s.nlive == 0 then break end
      local timeout = timers.next_timeout()
      if timeout == nil and next(backend.waiting) == nil then
        error("synchro.run: every task is waiting and nothing can wake " ..
          "them (deadlock)", 0)
      end
      local why = backend.notifier:wait(timeout)
      if why == "interrupted" and not interrupted then
        interrupted = true
        -- Ctrl-C: cancel everything, let cleanup run, then re-raise.
        for task in pairs(s.live) do s:cancel(task) end
      end
      local keys, callbacks = backend.notifier:take(taken_keys, taken_calls)
      for i = 1, #callbacks do s:spawn(serve_callback, callbacks[i]) end
      sched.wake_waiting(backend.waiting, keys)
      timers.fire()
    end
    if interrupted then error("interrupted!", 0) end
    if not main_task.ok then error(main_task.err, 0) end
    local r = main_task.result
    return (table.unpack or unpack)(r, 1, r.n)
  end

  --- Runs `main(...)` as a task of a scheduler on the calling thread and
  --- returns its results: `.aio` calls, `synchro.gather`, `synchro.race`,
  --- `synchro.spawn` and `synchro.aio.sleep` work inside it. Returns once
  --- main and every task it spawned have finished.
  ---@param main async fun(...): ...
  ---@return ...
  function synchro.run(main, ...)
    if type(main) ~= "function" then
      argerror(1, "run", "function expected, got " .. type(main))
    end
    if sched.current_task() ~= nil then
      error("synchro.run cannot be nested inside async code; await instead",
        2)
    end
    local timers = new_timers()
    -- the VM's inbox: completed calls, and callbacks this scheduler runs
    local backend = { notifier = core.inbox(), inbox = true, waiting = {},
      timer = timers.new, now = core.now }
    local s = sched.new(backend)
    local main_task = s:spawn(main, ...)
    -- PUC 5.1: while it runs, tasks get the pcall and xpcall they may
    -- yield through, as on a loop (outside a task they are the plain ones)
    local plain_pcall, plain_xpcall = pcall, xpcall
    if ypcall ~= plain_pcall then _G.pcall, _G.xpcall = ypcall, yxpcall end
    core.inbox_enter()
    local r = sched.pack(plain_pcall(run_loop, s, main_task, backend, timers))
    core.inbox_leave()
    if ypcall ~= plain_pcall then
      if rawget(_G, "pcall") == ypcall then _G.pcall = plain_pcall end
      if rawget(_G, "xpcall") == yxpcall then _G.xpcall = plain_xpcall end
    end
    if not r[1] then error(r[2], 0) end
    return (table.unpack or unpack)(r, 2, r.n)
  end

  --- Like aio.gather, inside synchro.run.
  synchro.gather = aio.gather
  --- Like aio.race, inside synchro.run.
  synchro.race = aio.race
  --- Like aio.spawn, inside synchro.run.
  synchro.spawn = aio.spawn
end
