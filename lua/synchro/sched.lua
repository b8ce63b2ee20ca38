--- The task scheduler shared by the loop VM (synchro.runtime) and by
--- synchro.run on a calling thread. Tasks are coroutines; a task waits by
--- yielding SUSPEND and is resumed by wake(). Cancellation is level
--- triggered: once a task is cancelled, every wait outside a shield raises
--- the cancellation error again.
local M = {}

local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running,
  coroutine.status
local co_close = coroutine.close -- 5.4 only
local unpack = table.unpack or unpack
local traceback = debug.traceback
-- The originals: runtime.lua replaces the globals with ypcall on 5.1.
local pcall, xpcall = pcall, xpcall

local check = require "synchro.check"

local SUSPEND, DONE, WAKE, CANCEL = {}, {}, {}, {}
local POOL_MAX = 64

--- The class of synchro's own cancellation errors: a table whose message
--- ("ECANCELED: ...") tostring() and .. give. Being a metatable in a loaded
--- module, it crosses between VMs as itself, so is_cancelled() tells a
--- cancellation from any text that merely mentions ECANCELED.
local CancelledError = { __name = "synchro.Cancelled" }
CancelledError.__tostring = function(e) return e.message end
CancelledError.__concat = function(a, b) return tostring(a) .. tostring(b) end
M.CancelledError = CancelledError
require("synchro.core").set_cancelled_class(CancelledError)

--- A new cancellation error with message msg.
---@param msg string
---@return table
function M.cancelled(msg)
  return setmetatable({ message = msg }, CancelledError)
end

--- True when err is a cancellation error of synchro (of a task or a call),
--- whichever VM raised it.
---@param err any
---@return boolean
function M.is_cancelled(err)
  return type(err) == "table" and getmetatable(err) == CancelledError
end

--- The error raised at a cancelled task's wait points.
--- Cancelled is what a task gets the first time; a later await outside a
--- shield (its cleanup, most often, which then silently never ran) gets
--- CancelledAwait, whose message says to use aio.shield. Both are
--- cancellation errors, and the two are == (CancelledError's __eq), so
--- that every test for a task's own cancellation holds for both.
M.Cancelled = M.cancelled("ECANCELED: task cancelled")
M.CancelledAwait = M.cancelled("ECANCELED: task cancelled, and this await " ..
  "comes after the cancellation: cleanup that awaits must run inside " ..
  "aio.shield(fn, ...) (or aio.finally(body, cleanup))")
CancelledError.__eq = function(a, b)
  return (rawequal(a, M.Cancelled) or rawequal(a, M.CancelledAwait)) and
    (rawequal(b, M.Cancelled) or rawequal(b, M.CancelledAwait))
end

--- The cancellation error for task, now: Cancelled the first time.
local function cancellation(task)
  if task.cancel_delivered then return M.CancelledAwait end
  task.cancel_delivered = true
  return M.Cancelled
end
M.cancellation = cancellation

local function pack(...) return { n = select("#", ...), ... } end
M.pack = pack

--- The number of keys of table t (for leak checks).
function M.count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

--- The running task, or nil. Read it through M.current_task(): in the
--- loop VM a call that has not suspended runs with no task made yet (see
--- the fast path in src/vm/dispatch.c), and current_task() makes it.
M.current = nil
--- Set by the loop VM's runtime: makes the task of the call running on
--- the fast path, if any, and returns it.
M.materialize = nil

--- The running task, or nil.
function M.current_task()
  local task = M.current
  if task == nil and M.materialize ~= nil then task = M.materialize() end
  return task
end
local current_task = M.current_task
--- Coroutines that run on behalf of a task (5.1's yield-safe pcall).
M.children = setmetatable({}, { __mode = "k" })

local Task = {}
Task.__index = Task
M.Task = Task

local Sched = {}
Sched.__index = Sched

--- new(backend): backend.timer(fn) returns an object with start(seconds),
--- stop() and close(); backend.now() gives monotonic seconds; the optional
--- backend.watch(co) arms a new task coroutine (the loop VM's watch hook).
function M.new(backend)
  return setmetatable({
    backend = backend,
    ready = {}, head = 1, tail = 0,
    pool = {},
    live = {}, nlive = 0,
    running = false,
  }, Sched)
end

-- A pooled coroutine runs one task after another: it is resumed with
-- (fn, args...) and yields (DONE, results...) when fn returns. The loop's
-- fast path (src/vm/dispatch.c) resumes the same coroutines the same way.
local function worker(fn, ...)
  return worker(co_yield(DONE, fn(...)))
end
M.DONE = DONE
M.POOL_MAX = POOL_MAX

function Sched:push(task, sig, value)
  local tail = self.tail + 1
  self.tail = tail
  self.ready[tail] = task
  task.state = "ready"
  task.sig, task.value = sig, value
end

local function new_task(self, fn)
  local task = setmetatable({
    sched = self, fn = fn, cancelled = false, shield = 0, token = 0,
  }, Task)
  self.live[task] = true
  self.nlive = self.nlive + 1
  return task
end

--- Creates a task running fn(...); it starts at the next run_ready().
function Sched:spawn(fn, ...)
  local task = new_task(self, fn)
  task.args = pack(...)
  self:push(task, task, nil)
  return task
end

-- Structured tasks: a child (spawned inside a task of the same scheduler)
-- is cancelled with its parent, and a cancelled parent's outcome goes out
-- only once its children have ended. A parent that ends without being
-- cancelled hands the children still running to its own parent (or lets
-- them go on as roots): they outlive it, as a spawned task always did.

local function adopt(parent, task)
  task.parent = parent
  local kids = parent.kids
  if kids == nil then
    kids = {}
    parent.kids = kids
  end
  kids[task] = true
  parent.nkids = (parent.nkids or 0) + 1
end

--- Creates a task running fn(...) as a child of parent (nil: a root).
--- A child of a cancelled parent outside a shield is born cancelled.
function Sched:spawn_child(parent, fn, ...)
  local task = self:spawn(fn, ...)
  if parent ~= nil and parent.sched == self and parent.state ~= "done" then
    adopt(parent, task)
    if parent.cancelled and parent.shield == 0 then task.cancelled = true end
  end
  return task
end

-- The children of task, as a list (they may end while we go through it).
local function kids_of(task)
  local list = {}
  if task.kids then
    for kid in pairs(task.kids) do list[#list + 1] = kid end
  end
  return list
end

--- Creates a task running fn(...) and runs it at once, up to its first
--- wait; on_done(task, ok, ...) gets its outcome, and task.tag is tag.
--- Used for calls from another thread, whose results the task need not
--- keep.
-- The task of a call from another thread: on_done(task, ok, ...) gets
-- its outcome, and it is known by its tag before it runs (a cancel may
-- reach it while it runs: the watch hook of a task that never yields).
local function call_task(self, fn, on_done, tag)
  local task = new_task(self, fn)
  task.on_done = on_done
  task.tag = tag
  task.discard = true
  if self.by_tag then self.by_tag[tag] = task end
  return task
end

function Sched:start(fn, on_done, tag, ...)
  local task = call_task(self, fn, on_done, tag)
  if self.running then
    task.args = pack(...)
    self:push(task, task, nil)
  else
    self.running = true
    local ok, err = pcall(self.resume, self, task, self:take_coroutine(task),
      fn, ...)
    self.running = false
    if not ok then error(err, 0) end
    self:run_ready()
  end
  return task
end

function Sched:finish(task, ok, ...)
  if task.nkids and task.nkids > 0 then
    if task.cancelled then
      -- its children were cancelled with it: its outcome waits for them
      task.state = "settling"
      task.settled = pack(ok, ...)
      local kids = kids_of(task)
      for i = 1, #kids do self:cancel(kids[i]) end
      return
    end
    -- they outlive it: handed to its parent, or roots from now on
    local up = task.parent
    if up and up.state == "done" then up = nil end
    local kids = kids_of(task)
    for i = 1, #kids do
      kids[i].parent = nil
      if up then adopt(up, kids[i]) end
    end
    task.kids, task.nkids = nil, 0
    if up and up.cancelled then -- a cancelled parent keeps no child
      for i = 1, #kids do self:cancel(kids[i]) end
    end
  end
  task.state = "done"
  task.ok = ok
  if not ok then
    task.err = ...
  elseif not task.discard then
    task.result = pack(...)
  end
  self.live[task] = nil
  self.nlive = self.nlive - 1
  local joiners = task.joiners
  task.joiners = nil
  if task.on_done then task.on_done(task, ok, ...) end
  if joiners then
    for i = 1, #joiners do joiners[i](task) end
  end
  local parent = task.parent
  if parent then
    task.parent = nil
    parent.kids[task] = nil
    parent.nkids = parent.nkids - 1
    if parent.nkids == 0 and parent.state == "settling" then
      local r = parent.settled
      parent.settled = nil
      self:finish(parent, unpack(r, 1, r.n))
    end
  end
  if self.nlive == 0 and self.on_empty then self.on_empty() end
end

--- A new worker coroutine (armed with the backend's watch hook).
function Sched:new_coroutine()
  local co = co_create(worker)
  local watch = self.backend.watch
  if watch then watch(co) end
  return co
end

function Sched:take_coroutine(task)
  local pool = self.pool
  local n = #pool
  local co
  if n > 0 then
    co = pool[n]
    pool[n] = nil
  else
    co = self:new_coroutine()
  end
  task.co = co
  return co
end

--- The task of a call that runs on coroutine co already (the loop's fast
--- path): what Sched:start would have made, made late.
function Sched:adopt(co, fn, on_done, tag)
  local task = call_task(self, fn, on_done, tag)
  task.co = co
  task.state = "running"
  return task
end

function Sched:after(task, co, ok, a, ...)
  M.current = task.prev
  task.prev = nil
  if not ok then
    task.traceback = traceback(co)
    task.co = nil
    if co_close then co_close(co) end -- runs pending to-be-closed variables
    self:finish(task, false, a)
  elseif a == DONE then
    task.co = nil
    local pool = self.pool
    if #pool < POOL_MAX then pool[#pool + 1] = co end
    self:finish(task, true, ...)
  elseif a == SUSPEND then
    task.state = "waiting"
  else
    -- A bare coroutine.yield() inside a task just lets others run.
    self:push(task, WAKE, nil)
  end
end

function Sched:resume(task, co, ...)
  task.prev = M.current
  M.current = task
  task.state = "running"
  return self:after(task, co, co_resume(co, ...))
end

function Sched:step(task)
  local co = task.co
  if co == nil then -- first run
    local args = task.args
    task.args = nil
    return self:resume(task, self:take_coroutine(task), task.fn,
      unpack(args, 1, args.n))
  end
  local sig, value = task.sig, task.value
  task.sig, task.value = nil, nil
  return self:resume(task, co, sig, value)
end

--- Runs ready tasks until none is left.
function Sched:run_ready()
  if self.running then return end
  self.running = true
  local ready = self.ready
  while self.head <= self.tail do
    local head = self.head
    local task = ready[head]
    ready[head] = nil
    self.head = head + 1
    local ok, err = pcall(self.step, self, task)
    if not ok then
      self.running = false
      error(err, 0)
    end
  end
  self.head, self.tail = 1, 0
  self.running = false
end

--- Wakes task if it still waits for the wait identified by token.
function Sched:wake(task, token, value)
  if task.state ~= "waiting" or task.token ~= token then return false end
  self:push(task, WAKE, value)
  self:run_ready()
  return true
end

--- Cancels task: it gets M.Cancelled at its current (or next) wait.
--- Returns false if it had already finished.
function Sched:cancel(task)
  if task.state == "done" then return false end
  task.cancelled = true
  if task.nkids and task.nkids > 0 then
    local kids = kids_of(task)
    for i = 1, #kids do self:cancel(kids[i]) end
  end
  if task.state == "waiting" and task.shield == 0 then
    local on_cancel = task.on_cancel
    task.on_cancel = nil
    -- An on_cancel that returns true keeps the task waiting until its
    -- operation has really ended (a remote call's cleanup, say).
    if not (on_cancel and on_cancel()) then
      self:push(task, CANCEL, nil)
      self:run_ready()
    end
  end
  return true
end

--- The current task, or an error (at the user's line) naming the function
--- that needs one, what (say "aio.sleep"), and what to do instead.
function M.task(what)
  local task = current_task()
  if task == nil then
    check.error((what or "this function") .. " must be called from async " ..
      "code (a task of a Synchronizer or synchro.run); from plain code, " ..
      "call it inside synchro.run(fn) or in a function wrapped with S:wrap")
  end
  local co = co_running()
  if co ~= task.co and M.children[co] ~= task then
    check.error((what or "this function") .. " called from a coroutine " ..
      "that is not a task; start that code with aio.spawn instead of " ..
      "coroutine.create or coroutine.wrap")
  end
  return task
end

--- Starts a wait of the current task: returns the task and a token for
--- wake(). Raises at once if the task is cancelled (level triggered).
function M.prepare(what)
  local task = M.task(what)
  if task.cancelled and task.shield == 0 then
    error(cancellation(task), 0)
  end
  local token = task.token + 1
  task.token = token
  return task, token
end

--- Suspends the current task until wake(task, token, value); returns value.
--- on_cancel() runs if the task is cancelled meanwhile.
function M.suspend(task, on_cancel)
  task.on_cancel = on_cancel
  local sig, value = co_yield(SUSPEND)
  task.on_cancel = nil
  task.token = task.token + 1
  if sig == CANCEL or (task.cancelled and task.shield == 0) then
    error(cancellation(task), 0)
  end
  return value
end

--- True when the running code is a task of some synchro scheduler.
function M.in_task()
  local task = current_task()
  if task == nil then return false end
  local co = co_running()
  return co == task.co or M.children[co] == task
end

-- Task handles ------------------------------------------------------------

function Task:done() return self.state == "done" end

local function outcome(task)
  if task.ok then
    local r = task.result
    return unpack(r, 1, r.n)
  end
  error(task.err, 0)
end

--- Waits for the task (from another task) and returns its results or
--- raises its error.
function Task:join()
  if self.state ~= "done" then
    local me, token = M.prepare("task:join")
    if me == self then error("a task cannot join itself", 2) end
    local joiners = self.joiners or {}
    self.joiners = joiners
    joiners[#joiners + 1] = function() me.sched:wake(me, token) end
    M.suspend(me)
  end
  return outcome(self)
end
Task.result = Task.join

function Task:cancel() return self.sched:cancel(self) end

--- Waits for task to end without raising its error (for cleanup waits).
local function settle(task)
  while task.state ~= "done" do
    local me, token = M.prepare("task:join")
    local joiners = task.joiners or {}
    task.joiners = joiners
    joiners[#joiners + 1] = function() me.sched:wake(me, token) end
    M.suspend(me)
  end
end

-- Structured helpers ------------------------------------------------------

-- Set at the end of this file: pcall that a task may yield through.
local ypcall

--- Runs fn(...) with cancellation held off; returns its results.
function M.shield(fn, ...)
  local task = M.task("aio.shield")
  task.shield = task.shield + 1
  local r = pack(ypcall(fn, ...))
  task.shield = task.shield - 1
  if task.shield == 0 and task.cancelled and not task.cancel_delivered then
    -- cancelled while shielded: a task that now runs without waiting
    -- gets it from the watch hook (a wait raises it anyway)
    local rearm = task.sched.backend.rearm_watch
    if rearm then rearm() end
  end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- Runs body(...), then cleanup(err) inside a shield (err is nil when
--- body returned), then returns body's results or raises its error: the
--- cleanup runs, and may await, even when the task was cancelled.
function M.finally(body, cleanup, ...)
  M.task("finally")
  local r = pack(ypcall(body, ...))
  M.shield(cleanup, (not r[1]) and r[2] or nil)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

local function cancel_and_settle(tasks)
  for i = 1, #tasks do tasks[i].sched:cancel(tasks[i]) end
  M.shield(function()
    for i = 1, #tasks do settle(tasks[i]) end
  end)
end

--- gather and race take functions (run as new tasks), tasks, or anything
--- to_task() turns into a task (futures).
function M.gather_tasks(tasks, opts)
  local me = M.task("aio.gather")
  local n = #tasks
  local left = n
  local failed
  local token
  for i = 1, n do
    local t = tasks[i]
    if t.state ~= "done" then
      local joiners = t.joiners or {}
      t.joiners = joiners
      joiners[#joiners + 1] = function(done)
        left = left - 1
        if not done.ok and not failed then failed = done end
        if token and (left == 0 or (failed and not opts.return_errors)) then
          me.sched:wake(me, token)
        end
      end
    else
      left = left - 1
      if not t.ok and not failed then failed = t end
    end
  end
  local ok, err = ypcall(function()
    while left > 0 and not (failed and not opts.return_errors) do
      local _
      _, token = M.prepare("aio.gather")
      M.suspend(me)
      token = nil
    end
  end)
  if not ok or (failed and not opts.return_errors) then
    cancel_and_settle(tasks)
    if not ok then error(err, 0) end
    error(failed.err, 0)
  end
  local out = {}
  for i = 1, n do
    local t = tasks[i]
    if t.ok then
      out[i] = t.result[1]
    else
      out[i] = t.err
    end
  end
  return unpack(out, 1, n)
end

function M.race_tasks(tasks)
  local me = M.task("aio.race")
  local winner
  local token
  for i = 1, #tasks do
    local t = tasks[i]
    if t.state == "done" then
      winner = winner or t
    else
      local joiners = t.joiners or {}
      t.joiners = joiners
      joiners[#joiners + 1] = function(done)
        if not winner then
          winner = done
          if token then me.sched:wake(me, token) end
        end
      end
    end
  end
  local ok, err = ypcall(function()
    while not winner do
      local _
      _, token = M.prepare("aio.race")
      M.suspend(me)
      token = nil
    end
  end)
  local others = {}
  for i = 1, #tasks do
    if tasks[i] ~= winner then others[#others + 1] = tasks[i] end
  end
  cancel_and_settle(others)
  if not ok then error(err, 0) end
  return outcome(winner)
end

-- Groups (nurseries) -------------------------------------------------------

local Group = {}
Group.__index = Group
M.Group = Group

local function group_ended(g, t)
  g.tasks[t] = nil
  g.live = g.live - 1
  -- a task that was cancelled and ends so is no failure of its own
  if not t.ok and g.failed == nil and
    not (t.cancelled and M.is_cancelled(t.err)) then
    g.failed = t
    g:cancel()
  end
  if g.live == 0 and g.token then g.owner.sched:wake(g.owner, g.token) end
end

--- Starts fn(...) as a task of the group (a child of the group's task).
function Group:spawn(fn, ...)
  if self.ended then error("this group has ended", 2) end
  local owner = self.owner
  local t = owner.sched:spawn_child(owner, fn, ...)
  if self.cancelling then t.cancelled = true end
  self.tasks[t] = true
  self.live = self.live + 1
  local joiners = t.joiners or {}
  t.joiners = joiners
  joiners[#joiners + 1] = function(done) group_ended(self, done) end
  return t
end

--- Cancels every task of the group (and those it starts from now on).
function Group:cancel()
  self.cancelling = true
  local list = {}
  for t in pairs(self.tasks) do list[#list + 1] = t end
  for i = 1, #list do list[i].sched:cancel(list[i]) end
end

--- Runs body(group, ...) as the group's first task, and returns its results
--- once every task of the group has ended; the first error (of body or of
--- a task) cancels the others, waits for their cleanup, and is raised.
function M.group(body, ...)
  local me = M.task("aio.group")
  local g = setmetatable({ owner = me, tasks = {}, live = 0 }, Group)
  local main = g:spawn(body, g, ...)
  local ok, err = ypcall(function()
    while g.live > 0 do
      local _
      _, g.token = M.prepare("aio.group")
      M.suspend(me)
      g.token = nil
    end
  end)
  g.token = nil
  if not ok then
    -- this task was cancelled (or failed) while waiting
    g:cancel()
    M.shield(function()
      while g.live > 0 do
        local _
        _, g.token = M.prepare("aio.group")
        M.suspend(me)
        g.token = nil
      end
    end)
  end
  g.ended = true
  if not ok then error(err, 0) end
  if g.failed then error(g.failed.err, 0) end
  return outcome(main)
end

--- Sleeps seconds in the current task.
function M.sleep(seconds)
  local task, token = M.prepare("aio.sleep")
  local sched = task.sched
  local timer = sched.backend.timer(function() sched:wake(task, token) end)
  if seconds ~= nil then timer:start(seconds) end -- nil: no limit
  local ok, err = ypcall(M.suspend, task)
  timer:close()
  if not ok then error(err, 0) end
end

--- Runs fn(...) in a child task; after seconds, cancels it, waits for its
--- cleanup and returns nil, "ETIMEDOUT: ...", "ETIMEDOUT".
function M.timeout(seconds, fn, ...)
  local me = M.task("aio.timeout")
  local child = me.sched:spawn_child(me, fn, ...)
  local expired = false
  local token
  local timer = me.sched.backend.timer(function()
    expired = true
    if token then me.sched:wake(me, token) end
  end)
  timer:start(seconds)
  child.joiners = { function()
    if token then me.sched:wake(me, token) end
  end }
  local ok, err = ypcall(function()
    while child.state ~= "done" and not expired do
      local _
      _, token = M.prepare("aio.timeout")
      M.suspend(me)
      token = nil
    end
  end)
  timer:close()
  if not ok or child.state ~= "done" then
    cancel_and_settle({ child })
    if not ok then error(err, 0) end
    if not child.ok and child.err ~= M.Cancelled then error(child.err, 0) end
    if not child.ok or expired then
      return nil, ("ETIMEDOUT: timed out after %g s"):format(seconds),
        "ETIMEDOUT"
    end
  end
  return outcome(child)
end

--- Wakes the tasks that await the completed calls keys (a notifier's
--- take): each key's list in waiting (filled by await_future, pairs of
--- task and token) is taken out and its tasks woken.
function M.wake_waiting(waiting, keys)
  for i = 1, #keys do
    local list = waiting[keys[i]]
    waiting[keys[i]] = nil
    if list then
      for j = 1, #list, 2 do
        local task = list[j]
        task.sched:wake(task, list[j + 1])
      end
    end
  end
end

--- Awaits a future (a call into a synchronizer) from a task. Cancelling the
--- task cancels the call and still waits for its cleanup to finish.
function M.await_future(fut)
  local current = current_task()
  local own = current and current.sched.backend.await
  if own then return own(fut) end -- a foreign loop's scheduler (synchro.luv)
  if not fut:done() then
    local task, token = M.prepare("aio.await")
    local s = task.sched
    local backend = s.backend
    if not backend.notifier then
      error("this scheduler cannot await futures of another synchronizer", 2)
    end
    -- synchro.run with nothing else ready: a short spin (where spinning
    -- has been paying off) often finds the call done, and saves the
    -- round through the scheduler. Never on a loop: it has I/O to serve.
    if backend.inbox and s.head > s.tail and fut:spin() then
      return fut:outcome()
    end
    local key = fut:key()
    local waiting = backend.waiting
    local list = waiting[key]
    if list == nil then
      list = { future = fut }
      waiting[key] = list
      if not fut:listen(backend.notifier) then
        waiting[key] = nil
        error("this future is already awaited by another scheduler", 2)
      end
    end
    list[#list + 1] = task
    list[#list + 1] = token
    M.suspend(task, function() fut:cancel(); return true end)
  end
  return fut:outcome()
end

-- 5.1: pcall and xpcall that a task may yield through ----------------------

local function yield_across_pcall_works()
  local co = co_create(function() return pcall(co_yield, 1) end)
  local ok, v = co_resume(co)
  return ok and v == 1 and co_status(co) == "suspended"
end

--- Yield-safe pcall/xpcall for Lua 5.1 (coxpcall semantics): the
--- protected function runs in a child coroutine whose yields are passed
--- through to the task.
function M.yieldable_pcalls()
  if yield_across_pcall_works() then return pcall, xpcall end
  local function finish(co, handler, ok, ...)
    if not ok then
      local err = ...
      return false, handler and handler(err) or err
    end
    if co_status(co) == "dead" then return true, ... end
    return finish(co, handler, co_resume(co, co_yield(...)))
  end
  local function ypcall_impl(handler, fn, ...)
    -- a C function (5.1 makes no coroutine of one), a callable table or
    -- userdata, or something that raises when called: a Lua closure
    -- calls it
    local made, co = pcall(co_create, fn)
    if not made then
      local callable = fn
      co = co_create(function(...) return callable(...) end)
    end
    M.children[co] = current_task()
    return finish(co, handler, co_resume(co, ...))
  end
  local function safe_pcall(fn, ...)
    if current_task() == nil then return pcall(fn, ...) end
    return ypcall_impl(nil, fn, ...)
  end
  local function yxpcall(fn, handler, ...)
    if current_task() == nil then
      local args = pack(...)
      return xpcall(function() return fn(unpack(args, 1, args.n)) end,
        handler)
    end
    return ypcall_impl(handler, fn, ...)
  end
  return safe_pcall, yxpcall
end

ypcall = M.yieldable_pcalls()

return M
