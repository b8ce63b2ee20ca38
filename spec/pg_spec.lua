-- synchro.aio.pg against a real PostgreSQL cluster (spec/helpers/pg.lua:
-- initdb in a temp dir, pg_ctl on a free port, 127.0.0.1 only).
local util = require "spec.helpers.util"
local pgserver = require "spec.helpers.pg"
local synchro = require "synchro"

local has_cjson = pcall(require, "cjson")

describe("synchro.aio.pg", function()
  local server, S, pg, ci
  local run -- run(fn, ...): fn(pg, conninfo, ...) as async code on S

  setup(function()
    local why
    server, why = pgserver.start()
    assert(server, why)
    ci = server.conninfo
    pg = require "synchro.aio.pg"
    S = synchro.new({ name = "pg-spec" })
    -- fn is copied into the loop VM at wrap time (a function passed at
    -- call time would run back here, as a callback)
    run = function(fn, ...)
      return S:wrap(function(...)
        return fn(require "synchro.aio.pg", ...)
      end)(ci, ...)
    end
  end)

  teardown(function()
    if S then S:close() end
    if server then server:stop() end
  end)

  -- a connection of the loop VM, as a proxy the test calls blocking
  local connect = function(opts)
    return run(function(p, conninfo, o)
      return assert(p.connect(conninfo, o))
    end, opts)
  end

  it("round-trips the built-in types", function()
    local r = run(function(p, conninfo)
      local c = assert(p.connect(conninfo))
      local rows = assert(c:query([[
        select 1::int2 as i2, '-2147483648'::int4 as i4,
          9007199254740991::int8 as i8, 2.5::float4 as f4,
          'NaN'::float8 as nan, '-Infinity'::float8 as ninf,
          true as t, false as f, 'text é'::text as s, null::int as n,
          12.50::numeric as num, '\x00ff27'::bytea as b,
          $1::int as p1, $2::float8 as p2, $3::bool as p3, $4::text as p4,
          $5::int as p5]], 42, 0.25, true, "o'k", pg.null))
      c:close()
      return rows
    end)
    assert.are.equal(1, #r)
    local row = r[1]
    assert.are.equal(1, row.i2)
    assert.are.equal(-2147483648, row.i4)
    assert.are.equal(9007199254740991, row.i8)
    if util.integers then assert.are.equal("integer", math.type(row.i8)) end
    assert.are.equal(2.5, row.f4)
    assert.is_true(row.nan ~= row.nan)
    assert.are.equal(-math.huge, row.ninf)
    assert.is_true(row.t)
    assert.is_false(row.f)
    assert.are.equal("text é", row.s)
    assert.are.equal(pg.null, row.n)
    assert.are.equal("12.50", row.num) -- numeric stays exact, as text
    assert.are.equal("\0\255'", row.b)
    assert.are.equal(42, row.p1)
    assert.are.equal(0.25, row.p2)
    assert.is_true(row.p3)
    assert.are.equal("o'k", row.p4)
    assert.are.equal(pg.null, row.p5)
    assert.are.same({ "i2", "i4", "i8", "f4", "nan", "ninf", "t", "f", "s",
      "n", "num", "b", "p1", "p2", "p3", "p4", "p5" }, r.fields)
    assert.are.equal("SELECT 1", r.command)
  end)

  it("decodes json and jsonb (null as pg.null, [] as an empty table)",
    function()
      if not has_cjson then
        pending("lua-cjson is not installed for this Lua")
        return
      end
      local r = run(function(_, conninfo)
        local p = require "synchro.aio.pg"
        local c = assert(p.connect(conninfo))
        local rows = assert(c:query([[select
          '{"a": [1, null, "x"], "b": {}, "c": []}'::jsonb as j,
          'null'::json as jn, $1::jsonb as echo]], { k = { 1, 2 } }))
        c:close()
        return rows[1]
      end)
      assert.are.same({ 1, pg.null, "x" }, r.j.a)
      assert.are.equal(pg.null, r.j.a[2])
      assert.are.same({}, r.j.b)
      assert.are.same({}, r.j.c)
      assert.are.equal(pg.null, r.jn)
      assert.are.same({ k = { 1, 2 } }, r.echo)
    end)

  it("sends quotes and zero bytes as parameters", function()
    local c = connect()
    assert(c:exec("create table blobs (id int primary key, b bytea, t text)"))
    local blob = "a'b\"c\0d\0\0\255;--"
    assert(c:query("insert into blobs values ($1, $2, $3)", 1, blob,
      "Robert'); drop table blobs;--"))
    assert(c:query("insert into blobs values ($1, $2, $3)", 2,
      pg.bytea("plain"), nil))
    local rows = assert(c:query("select * from blobs order by id"))
    assert.are.equal(blob, rows[1].b)
    assert.are.equal("Robert'); drop table blobs;--", rows[1].t)
    assert.are.equal("plain", rows[2].b)
    assert.are.equal(pg.null, rows[2].t)
    -- a zero byte cannot be text: a clear server error, not a cut string
    local ok, msg, code = c:query("select $1::text", "a\0b")
    assert.is_nil(ok)
    assert.are.equal("22021", code, msg)
    assert(c:exec("drop table blobs"))
    c:close()
  end)

  it("returns nil, message, SQLSTATE for a failing statement", function()
    local c = connect()
    local ok, msg, code = c:query("select * from no_such_table")
    assert.is_nil(ok)
    assert.are.equal("42P01", code)
    assert.matches('relation "no_such_table" does not exist', msg, 1, true)
    assert(c:exec("create table uniq (k int primary key)"))
    assert(c:query("insert into uniq values ($1)", 1))
    ok, msg, code = c:query("insert into uniq values ($1)", 1)
    assert.is_nil(ok)
    assert.are.equal("23505", code)
    assert.matches("duplicate key", msg)
    ok, msg, code = c:query("select 1/0")
    assert.is_nil(ok)
    assert.are.equal("22012", code, msg)
    -- and the connection goes on
    assert.are.equal(2, c:query("select 2 as v")[1].v)
    assert(c:exec("drop table uniq"))
    c:close()
  end)

  it("commits a transaction, and a rolled-back one leaves nothing",
    function()
      local a, b, ok, err, n1, m1, code1, vs, status =
        run(function(p, conninfo)
        local c = assert(p.connect(conninfo))
        assert(c:exec("create table tx (v int)"))
        local a, b = c:transaction(function(t)
          assert(t:query("insert into tx values (1)"))
          return "done", 2
        end)
        local ok, err = pcall(c.transaction, c, function(t)
          assert(t:query("insert into tx values (2)"))
          assert(t:query("insert into tx values (3)"))
          error({ reason = "boom" })
        end)
        -- a failed statement aborts the transaction: rolled back, 25P02
        local n1, m1, code1 = c:transaction(function(t)
          assert(t:query("insert into tx values (4)"))
          t:query("insert into no_such_table values (1)")
        end)
        -- nested: a savepoint rolls back alone
        assert(c:transaction(function(t)
          assert(t:query("insert into tx values (5)"))
          pcall(t.transaction, t, function(t2)
            assert(t2:query("insert into tx values (6)"))
            error("inner")
          end)
          return true
        end))
        local rows = assert(c:query("select v from tx order by v"))
        local status = c.pq:transaction_status()
        assert(c:exec("drop table tx"))
        c:close()
        local vs = {}
        for i, row in ipairs(rows) do vs[i] = row.v end
        return a, b, ok, err, n1, m1, code1, vs, status
      end)
      assert.are.equal("done", a)
      assert.are.equal(2, b)
      assert.is_false(ok)
      assert.are.same({ reason = "boom" }, err)
      assert.is_nil(n1)
      assert.are.equal("25P02", code1, m1)
      assert.are.same({ 1, 5 }, vs)
      assert.are.equal("idle", status)
    end)

  it("prepares and executes statements", function()
    local c = connect()
    local st = assert(c:prepare("add", "select $1::int + $2::int as sum"))
    assert.are.equal(5, st:execute(2, 3)[1].sum)
    assert.are.equal(7, c:execute("add", 3, 4)[1].sum)
    local anon = assert(c:prepare(nil, "select $1::text || '!' as s"))
    assert.are.equal("hi!", anon:execute("hi")[1].s)
    local ok, _, code = c:prepare("bad", "select from where")
    assert.is_nil(ok)
    assert.are.equal("42601", code)
    ok, _, code = c:execute("no_such_statement")
    assert.is_nil(ok)
    assert.are.equal("26000", code)
    assert(st:close())
    ok, _, code = c:execute("add", 1, 2)
    assert.is_nil(ok)
    assert.are.equal("26000", code)
    c:close()
  end)

  it("iterates LISTEN notifications while statements run", function()
    local got, v = run(function(p, conninfo)
      local aio = require "synchro.aio"
      local listener = assert(p.connect(conninfo))
      local sender = assert(p.connect(conninfo))
      local it = assert(listener:listen("Jobs"))
      local seen = {}
      local reader = aio.spawn(function()
        for _ = 1, 3 do
          local n = assert(it())
          seen[#seen + 1] = n.channel .. ":" .. n.payload
        end
      end)
      aio.sleep(0.05)
      -- the listener's connection still runs statements meanwhile
      local v = listener:query("select 7 as v")[1].v
      for i = 1, 3 do
        assert(sender:query("select pg_notify($1, $2)", "Jobs", "job " .. i))
      end
      assert(sender:query("select pg_notify('other', 'x')"))
      local _, _, timed_out = aio.timeout(10, reader.join, reader)
      assert(timed_out == nil, "no notifications came")
      listener:close()
      sender:close()
      return seen, v
    end)
    assert.are.same({ "Jobs:job 1", "Jobs:job 2", "Jobs:job 3" }, got)
    assert.are.equal(7, v)
  end)

  it("cancels a running statement on the server and stays usable",
    function()
      -- aio.timeout inside async code
      local elapsed, msg, code, after, active = run(function(p, conninfo)
        local aio = require "synchro.aio"
        local c = assert(p.connect(conninfo))
        local t0 = aio.now()
        local ok, m, e = aio.timeout(0.2, c.query, c, "select pg_sleep(10)")
        local dt = aio.now() - t0
        assert(ok == nil)
        local v = c:query("select 5 as v")[1].v
        local other = assert(p.connect(conninfo))
        local act = other:query([[select count(*)::int as n from
          pg_stat_activity where query like '%pg_sleep(10)%'
          and state = 'active' and pid <> pg_backend_pid()]])[1].n
        other:close()
        c:close()
        return dt, m, e, v, act
      end)
      assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
      assert.are.equal("ETIMEDOUT", code, msg)
      assert.are.equal(5, after)
      assert.are.equal(0, active)

      -- future:cancel() from the blocking side, through a proxy
      local c = connect()
      local t0 = util.now()
      local fut = c.query.future(c, "select pg_sleep(10)")
      util.sleep(0.1)
      fut:cancel()
      local ok = pcall(fut.result, fut, 5)
      assert.is_false(ok)
      assert.is_true(util.now() - t0 < 2, "took " .. (util.now() - t0))
      assert.are.equal(6, c:query("select 6 as v")[1].v)

      -- a wrapped function's timeout
      local slow = S:wrap(function(conn)
        return conn:query("select pg_sleep(10)")
      end, { timeout = 0.2 })
      t0 = util.now()
      local r, m, e = slow(c)
      assert.is_nil(r)
      assert.are.equal("ETIMEDOUT", e, m)
      assert.is_true(util.now() - t0 < 2, "took " .. (util.now() - t0))
      assert.are.equal(7, c:query("select 7 as v")[1].v)
      c:close()
    end)

  it("Ctrl-C in a blocked caller during pg_sleep(10) cancels the " ..
    "statement on the server #subprocess", function()
      local marker = util.tmpname()
      local r = util.ctrl_c(([[
        local synchro = require "synchro"
        local S = synchro.new()
        local work = S:wrap(function(conninfo, path, started)
          local pg = require "synchro.aio.pg"
          local conn = assert(pg.connect(conninfo))
          local f = io.open(started, "w") f:close()
          local ok, err = pcall(conn.query, conn,
            "select pg_sleep(10) /* ctrl-c spec */")
          f = io.open(path, "w")
          f:write(ok and "slept" or "cleanup ran")
          f:close()
          conn:close()
          error(err, 0)
        end)
        work(%q, %q, STARTED)
        print("not reached")
      ]]):format(ci, marker))
      assert.is_true(r.started, "child did not start: " .. r.err)
      assert.is_not_nil(r.code, "the child hung" .. (r.stacks or ""))
      assert.is_true(r.elapsed < 3, "exit took " .. r.elapsed .. " s")
      assert.are_not.equal(0, r.code)
      assert.matches("interrupted!", r.err, 1, true)
      assert.are.equal("", r.out)
      assert.are.equal("cleanup ran", util.read(marker))
      os.remove(marker)
      -- the server stopped the statement (it does not notice a closed
      -- client in pg_sleep on its own)
      local active = run(function(p, conninfo)
        local aio = require "synchro.aio"
        local c = assert(p.connect(conninfo))
        local n
        for _ = 1, 100 do
          n = c:query([[select count(*)::int as n from pg_stat_activity
            where query like '%ctrl-c spec%' and state = 'active'
            and pid <> pg_backend_pid()]])[1].n
          if n == 0 then break end
          aio.sleep(0.02)
        end
        c:close()
        return n
      end)
      assert.are.equal(0, active)
    end)

  it("runs 100 concurrent queries through a pool", function()
    local results, backends = run(function(p, conninfo)
      local aio = require "synchro.aio"
      local pool = p.pool(conninfo, { size = 5 })
      local fns = {}
      for i = 1, 100 do
        fns[i] = function()
          local rows = assert(pool:query(
            "select $1::int * 2 as v, pg_backend_pid() as pid, " ..
            "pg_sleep(0.01)", i))
          return rows[1]
        end
      end
      local out = { aio.gather((table.unpack or unpack)(fns)) }
      local pids, n = {}, 0
      for _, row in ipairs(out) do
        if not pids[row.pid] then pids[row.pid] = true n = n + 1 end
      end
      local v = pool:with(function(conn)
        return conn:transaction(function(t)
          return t:query("select 1 as one")[1].one
        end)
      end)
      pool:close()
      local vs = {}
      for i, row in ipairs(out) do vs[i] = row.v end
      return vs, n, v
    end)
    assert.are.equal(100, #results)
    for i = 1, 100 do assert.are.equal(i * 2, results[i]) end
    assert.is_true(backends >= 1 and backends <= 5, tostring(backends))
  end)

  it("sends pg.null from plain code and gets it back", function()
    local c = connect()
    local rows = assert(c:query("select $1::int is null as isnull, $1::int " ..
      "as v, $2::bytea as b", pg.null, pg.bytea("x\0y")))
    assert.is_true(rows[1].isnull)
    assert.are.equal(pg.null, rows[1].v)
    assert.are.equal("x\0y", rows[1].b)
    c:close()
  end)

  it("runs a pipeline; a failed statement aborts the rest", function()
    local c = connect()
    local out = assert(c:pipeline({
      { "select $1::int as v", 1 },
      { "select 1/0" },
      { "select 3 as v" },
    }))
    assert.are.equal(1, out[1][1].v)
    assert.are.equal("22012", out[2].code)
    assert.are.equal("25P02", out[3].code)
    out = assert(c:pipeline({ { "select 4 as v" }, { "select 5 as v" } }))
    assert.are.equal(5, out[2][1].v)
    assert.are.equal(6, c:query("select 6 as v")[1].v)
    c:close()
  end)

  it("lets the queries of several tasks on one connection take turns",
    function()
      local vs = run(function(p, conninfo)
        local aio = require "synchro.aio"
        local c = assert(p.connect(conninfo))
        local fns = {}
        for i = 1, 20 do
          fns[i] = function()
            return assert(c:query("select $1::int as v", i))[1].v
          end
        end
        local out = { aio.gather((table.unpack or unpack)(fns)) }
        c:close()
        return out
      end)
      for i = 1, 20 do assert.are.equal(i, vs[i]) end
    end)

  it("closes a connection that is collected or leaves a <close> scope",
    function()
      local count = S:wrap(function(conninfo)
        local p = require "synchro.aio.pg"
        -- collected once no frame holds them (LuaJIT keeps a running
        -- frame's dead slots alive, so the creating task cannot tell)
        collectgarbage()
        collectgarbage()
        local c = assert(p.connect(conninfo))
        local n = c:query([[select count(*)::int as n from pg_stat_activity
          where backend_type = 'client backend']])[1].n
        c:close()
        return n - 1
      end)
      local before = count(ci)
      run(function(p, conninfo)
        for _ = 1, 5 do assert(p.connect(conninfo)) end
        collectgarbage()
        collectgarbage()
      end)
      if util.lua54 then
        run(assert(load([[
          local p, conninfo = ...
          local c <close> = assert(p.connect(conninfo))
          assert(c:query("select 1"))
        ]])))
      end
      assert.is_true(util.wait_for(function() return count(ci) == before end,
        10), "connections left open")
    end)

  it("gives clear errors on a closed or lost connection", function()
    local r = run(function(p, conninfo)
      local c = assert(p.connect(conninfo))
      c:close()
      c:close() -- twice is fine
      local ok, err = pcall(c.query, c, "select 1")
      -- lost: the server ends the backend
      local d = assert(p.connect(conninfo))
      local killer = assert(p.connect(conninfo))
      assert(killer:query("select pg_terminate_backend($1)", d:backend_pid()))
      killer:close()
      local n, m, code = d:query("select 1")
      local healthy = d:ok()
      d:close()
      -- a closed connection ends a statement waiting on it
      local e = assert(p.connect(conninfo))
      local aio = require "synchro.aio"
      local task = aio.spawn(function() return e:query("select pg_sleep(10)") end)
      aio.sleep(0.05)
      e:close()
      local tn, tm, tcode = task:join()
      return { ok, err, n, m, code, healthy, tn, tm, tcode }
    end)
    assert.is_false(r[1])
    assert.matches("bad argument #1 to 'query' %(connection is closed%)", r[2])
    assert.is_nil(r[3])
    assert.is_string(r[4])
    assert.truthy(r[5] == "57P01" or r[5] == "08006", r[5])
    assert.is_false(r[6])
    assert.is_nil(r[7])
    assert.are.equal("08003", r[9], r[8])
  end)

  it("reports a connection that fails or takes too long", function()
    local r, t = run(function(p)
      local aio = require "synchro.aio"
      local probe = assert(aio.tcp.listen("127.0.0.1", 0))
      local closed_port = probe:port()
      probe:close()
      local out = { p.connect(("host=127.0.0.1 port=%d user=x connect_timeout=5")
        :format(closed_port)) }
      -- a server that accepts nothing and says nothing
      local mute = assert(aio.tcp.listen("127.0.0.1", 0))
      local t0 = aio.now()
      local n, m, code = p.connect({ host = "127.0.0.1", port = mute:port(),
        user = "x" }, { timeout = 0.2 })
      mute:close()
      return out, { n, m, code, aio.now() - t0 }
    end)
    assert.is_nil(r[1])
    assert.are.equal("08001", r[3], r[2])
    assert.matches("refused", r[2])
    assert.is_nil(t[1])
    assert.are.equal("ETIMEDOUT", t[3], t[2])
    assert.is_true(t[4] < 2, "took " .. t[4])
  end)

  it("rejects unknown options and bad arguments", function()
    local r = run(function(p, conninfo)
      local out = {}
      out[1] = select(2, pcall(p.connect, conninfo, { timout = 1 }))
      out[2] = select(2, pcall(p.pool, conninfo, { sise = 2 }))
      out[3] = select(2, pcall(p.connect, 42))
      local c = assert(p.connect(conninfo))
      out[4] = select(2, pcall(c.query, c, 42))
      out[5] = select(2, pcall(c.query, c, "select $1", function() end))
      out[6] = select(2, pcall(p.pool, conninfo, { size = 0 }))
      c:close()
      return out
    end)
    assert.matches("bad argument #2 to 'connect' %(unknown option 'timout'",
      r[1])
    assert.matches("bad argument #2 to 'pool' %(unknown option 'sise'", r[2])
    assert.matches("bad argument #1 to 'connect' %(string or table expected",
      r[3])
    assert.matches("bad argument #2 to 'query' %(string expected", r[4])
    assert.matches("bad argument #3 to 'query' %(cannot send function", r[5])
    assert.matches("bad argument #2 to 'pool' %(size", r[6])
  end)
end)
