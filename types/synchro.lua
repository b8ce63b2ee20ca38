---@meta synchro
-- LuaCATS types of synchro's public API, for LuaLS: add this directory
-- (installed with the rock: `luarocks show --rock-dir synchro`/types) to
-- `Lua.workspace.library`. spec/types_spec.lua checks that every public
-- function and field of every module has a declaration here.

---@class synchro
---@field _VERSION string "0.1.0"
---@field aio synchro.aio the async toolkit (also `require "synchro.aio"`)
---@field Cancelled table the error value a cancelled task receives
local synchro = {}

---@class synchro.NewOptions
---@field name? string for messages and tracebacks (default "synchro")
---@field grace? number seconds a cancelled task's cleanup may take (default 5)

--- Creates a Synchronizer: one loop thread (started on first call) with
--- its own Lua VM. Unknown option names are an error.
---@param opts? synchro.NewOptions
---@return synchro.Synchronizer
function synchro.new(opts) end

--- The shared Synchronizer of this Lua state, created on first use.
---@return synchro.Synchronizer
function synchro.default() end

--- The Synchronizer behind a reference from `S:export()` (import each
--- reference once). Collecting it does not close the Synchronizer.
---@param ref userdata
---@return synchro.Synchronizer
function synchro.import(ref) end

--- The remote traceback of a table error that came back from a call.
---@param err table
---@return string|nil
function synchro.traceback(err) end

--- True when err is synchro's cancellation (of a task or of a call).
---@param err any
---@return boolean
function synchro.is_cancelled(err) end

--- Says how a value of your own kind arrives in this VM: a table or
--- userdata whose metatable has `__synchro(v)` returning a kind (a
--- string) and a payload (a string, or a table of values that cross)
--- crosses as decode(payload), run in the receiving VM (register it there
--- too). Kinds named "synchro.*" are synchro's own.
---@param kind string
---@param decode fun(payload: string|table): any
function synchro.register_kind(kind, decode) end

--- True when x is a proxy of an object of a synchronizer's loop.
---@param x any
---@return boolean
function synchro.is_proxy(x) end

--- Marks fn, in an async module, as a generator: `S:wrap_module` turns it
--- into a `synchro.Generator` (emit items with `synchro.emit`).
---@generic F: function
---@param fn F
---@return F
function synchro.generator(fn) end

--- Marks fn, in an async module, to be copied as plain code rather than
--- wrapped: it runs in the caller's VM.
---@generic F: function
---@param fn F
---@return F
function synchro.nowrap(fn) end

--- Runs `fn` with what obj's enter gives (`__enter`, else an `enter`
--- method; obj itself without one), then obj's exit with fn's error (nil
--- when fn returned), also when fn raised or its task was cancelled:
--- `__exit(obj, err)` (else `exit`), whose `true` suppresses the error,
--- else `__close(obj, err)` (else `close`). Works the same on proxies (the
--- methods run on the loop). Returns fn's results (nothing once an error
--- was suppressed). An error in enter skips the exit; an error in the exit
--- replaces fn's.
---@param obj any
---@param fn fun(...): ...
---@return ...
function synchro.with(obj, fn) end

---@class synchro.GeneratorContext
--- What a factory of `synchro.contextmanager` returns: for `synchro.with`
--- (or, on 5.4, a `<close>` variable, which runs the exit part alone).

--- Python's `asynccontextmanager`: `gen` is a wrapped generator (or a
--- generator of a wrapped module) that emits once. `synchro.with(cm(...),
--- body)` runs it up to its emit, passes what it emitted to body, then
--- resumes it there: with nothing if body returned, or with body's error
--- raised at the emit (so a `pcall` around `synchro.emit` sees it; ending
--- without raising suppresses the error).
---@param gen synchro.Generator
---@return fun(...): synchro.GeneratorContext
function synchro.contextmanager(gen) end

--- `pairs` that also iterates a proxy (the remote object's own keys and
--- values, read in one round trip) on every Lua: PUC 5.1 and LuaJIT's
--- `pairs()` do not honour `__pairs`.
---@param t any
---@return fun(): any, any
---@return any
---@return any
function synchro.pairs(t) end

--- Inside a generator (on the loop): hands the values to the consumer and
--- waits until it asks for the next item; returns what it sent
--- (`it:send(v)`), or raises what it threw (`it:throw(err)`).
---@param ... any
---@return any
function synchro.emit(...) end

--- Runs `main(...)` as a task of a scheduler on the calling thread and
--- returns its results (Python's `asyncio.run`): `.aio` calls,
--- `synchro.gather`, `synchro.race` and `synchro.spawn` work inside it.
---@param main async fun(...): ...
---@param ... any
---@return ...
function synchro.run(main, ...) end

--- `synchro.aio.gather`, for code inside `synchro.run`.
---@param ... table|(async fun(): any)|synchro.Task|synchro.Future
---@return ...
function synchro.gather(...) end

--- `synchro.aio.race`, for code inside `synchro.run`.
---@param ... (async fun(): any)|synchro.Task|synchro.Future
---@return ...
function synchro.race(...) end

--- `synchro.aio.spawn`, for code inside `synchro.run`.
---@param fn async fun(...): ...
---@param ... any
---@return synchro.Task
function synchro.spawn(fn, ...) end

--- For adapters of foreign schedulers: `detect()` returns a function that
--- awaits a Future from the running coroutine, or nil when the running
--- code is not one of the adapter's coroutines.
---@param detect fun(): (fun(f: synchro.Future): ...)|nil
function synchro.register_adapter(detect) end

--- Runs the blocking `fn(...)` on a worker thread of the default
--- synchronizer's loop (inside a loop's task: of that loop) and returns
--- its results: blocks plain code, awaits in async code (synchro.run, a
--- task, a synchro.luv or cqueues coroutine).
---@param fn fun(...): ...
---@return ...
function synchro.to_thread(fn, ...) end

--- `S:iter_in_thread` on the default synchronizer (inside a loop's task:
--- `aio.iter_in_thread` on that loop).
---@param opts_or_fn {buffer?: integer}|fun(...)
---@return synchro.Iterator|synchro.aio.ThreadIterator
function synchro.iter_in_thread(opts_or_fn, ...) end

--- The awaiter of the running code (a function that awaits a Future), or
--- nil when the running code can only block (see `register_adapter`).
---@return (fun(f: synchro.Future): ...)|nil
function synchro.current_awaiter() end

---@class synchro.Synchronizer
---@field name string
---@field grace number
local Synchronizer = {}

---@class synchro.WrapOptions
---@field timeout? number seconds for every way of calling (cancel at expiry)
---@field name? string for messages and tracebacks

--- Wraps an async function: `f(...)` blocks until it returns (or awaits,
--- inside async code), `f.aio(...)` awaits, `f.future(...)` returns a
--- Future, `f.sync(...)` always blocks. The function's code and upvalues
--- are copied to the loop VM now. What is wrapped already (a wrapped
--- function or generator, a proxy) is returned as it is (a wrapped
--- function with opts: a new wrapper of it with those options); a table
--- is a class (`S:wrap_class`).
---@generic F: function
---@param fn F
---@param opts? synchro.WrapOptions
---@return F|synchro.Wrapped<F>
function Synchronizer:wrap(fn, opts) end

---@class synchro.GeneratorOptions
--- close_timeout: seconds `it:close()` waits for the generator's cleanup
--- (default: the Synchronizer's grace)
---@field close_timeout? number

--- Wraps an async generator (it emits items with `synchro.emit`). The
--- generator, and its live iterators, cross to any VM (arguments, results,
--- upvalues) and run on this loop wherever they are stepped.
---@generic F: function
---@param fn F
---@param opts? synchro.GeneratorOptions
---@return synchro.Generator<F>
function Synchronizer:wrap_generator(fn, opts) end

--- Copies a class (a table of methods used as its objects' metatable,
--- with the tables it inherits from through metatables) into the loop VM
--- and returns a proxy of it: `Cls.new(...)` runs there, and the objects
--- it makes are proxies.
---@generic T: table
---@param cls T
---@return T|synchro.Proxy
function Synchronizer:wrap_class(cls) end

--- `require(name)` on the loop, returned for plain code as a proxy: its
--- functions are wrapped, functions marked with `synchro.generator` are
--- generators, objects it returns are proxies. `synchro-stubs` writes the
--- precise types of such a wrapper (docs/library-authors.md).
---@generic T
---@param name `T`
---@return T|synchro.Proxy
function Synchronizer:wrap_module(name) end

--- Closes: cancels the tasks, lets their cleanup run for up to `grace`
--- seconds (default: the Synchronizer's), then stops its thread.
--- Idempotent.
---@param grace? number
function Synchronizer:close(grace) end

--- Runs the blocking `fn(...)` on a worker thread of this synchronizer's
--- loop: blocks plain code, awaits in async code. `fn` crosses as code.
---@param fn fun(...): ...
---@return ...
function Synchronizer:to_thread(fn, ...) end

--- Runs the blocking generator `fn(...)` on a worker thread of this
--- synchronizer's loop and iterates its items (each `coroutine.yield(...)`
--- in `fn`) from anywhere: plain code blocks for each, async code awaits.
--- At most `opts.buffer` items (default 64) wait; `it:close()` (a `break`
--- on 5.4) interrupts `fn` and waits for its cleanup.
---@param opts_or_fn {buffer?: integer}|fun(...)
---@return synchro.Iterator
function Synchronizer:iter_in_thread(opts_or_fn, ...) end

--- Builds a blocking object with `ctor(...)` on a worker thread of its
--- own, which keeps it; returns a table with one function per method,
--- each running there in order (blocking plain code, awaiting in async
--- code). `obj:method(...)` passes the object.
---@param ctor fun(...): table|userdata
---@return table
function Synchronizer:offload(ctor, ...) end

--- `S:offload` of `require(name)` in the worker's VM.
---@param name string
---@return table
function Synchronizer:offload_module(name) end

--- A reference another Lua state (on another OS thread) turns back into
--- this Synchronizer with `synchro.import`.
---@return userdata
function Synchronizer:export() end

--- "new", "running", "closing" or "closed".
---@return "new"|"running"|"closing"|"closed"
function Synchronizer:state() end

--- A wrapped async function F: calling it blocks (or awaits in async code).
---@class synchro.Wrapped<F>: { aio: F, sync: F }
---@field aio F awaits (only in async code)
---@field sync F always blocks, even in async code
---@field future fun(...): synchro.Future a call started now
---@field synchronizer synchro.Synchronizer
---@overload fun(...): ...

--- A wrapped async generator: `for ... in g(...)` iterates lazily.
---@class synchro.Generator<F>
---@field aio fun(...): synchro.Iterator iterates inside async code
---@field synchronizer synchro.Synchronizer
---@overload fun(...): synchro.Iterator

--- The iterator of a generator call; also a `for` iterator (`it()` steps).
---@class synchro.Iterator
---@field closed boolean
---@overload fun(): ...
local Iterator = {}

--- The next item (nothing once the generator has ended).
---@return ...
function Iterator:next() end

--- Resumes the generator with v as what its `synchro.emit` returns;
--- gives the next item.
---@param v any
---@return ...
function Iterator:send(v) end

--- Raises err inside the generator at its `synchro.emit`; gives the next
--- item if the generator goes on, or raises what it raised.
---@param err any
---@return ...
function Iterator:throw(err) end

--- Stops the generator: its cleanup runs (once) before this returns.
--- Idempotent.
function Iterator:close() end

--- A step of any kind ("next", "send", "throw"); what next/send/throw use.
---@param how "next"|"send"|"throw"
---@param value? any
---@return ...
function Iterator:step(how, value) end

--- A call in flight. `T` is what its result gives.
---@class synchro.Future<T>
local Future = {}

--- Waits for the outcome: returns the call's results or raises its error.
--- With a timeout: `nil, "ETIMEDOUT: ...", "ETIMEDOUT"` if still running
--- (the call goes on). Inside async code it awaits.
---@param timeout? number
---@return T|any ...
function Future:result(timeout) end

--- Waits until done or timeout seconds pass; true when done.
---@param timeout? number
---@return boolean
function Future:wait(timeout) end

--- True once the call has finished (either way).
---@return boolean
function Future:done() end

--- Cancels the call: the task gets a cancellation at its wait point and
--- its cleanup runs; the future then gives ECANCELED.
---@return boolean
function Future:cancel() end

--- The call's state.
---@return "pending"|"ok"|"error"|"cancelled"|"closed"
function Future:status() end

--- The call's results, or raises its error; only once done.
---@return ...
function Future:outcome() end

--- True once the call is done, after spinning briefly for it (never
--- parking, and only where spinning has been paying off): for a
--- scheduler with nothing else to run, before it suspends the awaiting
--- task.
---@return boolean
function Future:spin() end

--- cqueues' poll protocol: the fd that becomes readable when done.
---@return integer
function Future:pollfd() end

--- cqueues' poll protocol: the events to poll for ("r").
---@return string
function Future:events() end

--- cqueues' poll protocol: the time left before the future's deadline,
--- or nil.
---@return number|nil
function Future:timeout() end

--- A light userdata naming the call (what a notifier's `take` gives).
---@return lightuserdata
function Future:key() end

--- Has `notifier` told when the call is done (for schedulers' adapters);
--- false if another one listens already.
---@param notifier userdata
---@return boolean
function Future:listen(notifier) end

--- A task of a scheduler (`aio.spawn`, `synchro.spawn`).
---@class synchro.Task
---@field state string "running", "done", ...
---@field cancelled boolean
local Task = {}

--- Waits for the task (from another task); returns its results or raises
--- its error.
---@async
---@return ...
function Task:join() end

--- The same as `join`.
---@async
---@return ...
function Task:result() end

--- True once the task has finished.
---@return boolean
function Task:done() end

--- Cancels the task: it receives a cancellation at its wait point.
function Task:cancel() end

--- An object of a loop VM seen from another VM: its methods are wrapped
--- (`obj:m(...)` blocks or awaits, `obj.aio:m(...)` and `obj.m.aio(obj,
--- ...)` await, `obj.m.future(obj, ...)` gives a Future), its fields are
--- read remotely; operators, `#`, `tostring`, `..`, calls and `pairs`
--- (5.2+; `synchro.pairs` everywhere) run the object's metamethods on the
--- loop. Two proxies of one object are `==`; a proxy equals nothing else.
---@class synchro.Proxy
---@field aio table the same object, with methods that await
---@field [string] any
---@operator len: integer
---@operator concat(any): any
---@operator add(any): any
---@operator sub(any): any
---@operator mul(any): any
---@operator div(any): any
---@operator unm: any
---@operator call(...): any

return synchro
