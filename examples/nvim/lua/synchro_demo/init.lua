-- A small Neovim plugin: :SynchroFetch fetches a page from a local HTTP
-- server through a wrapped async function and shows it in a new buffer,
-- while the editor stays responsive (the call awaits on Neovim's loop).
-- The fetch reports its progress through a callback that runs back in the
-- editor, where the vim API may be used (synchro.luv schedules it).
local synchro = require "synchro"
local sluv = require "synchro.luv"

local M = {}

local S = synchro.new({ name = "nvim-demo" })

-- Async code: runs on synchro's loop thread. A minimal HTTP/1.0 GET over
-- a raw TCP connection made with synchro.aio.tcp; progress(bytes) is
-- called for each chunk read (a callback: it runs in the editor).
M.fetch = S:wrap(function(host, port, path, progress)
  local aio = require "synchro.aio"
  local conn = assert(aio.tcp.connect(host, port))
  assert(conn:write(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n"):format(path, host)))
  local chunks, size = {}, 0
  while true do
    local data = conn:read()
    if not data then break end
    chunks[#chunks + 1] = data
    size = size + #data
    if progress then progress(size) end
  end
  conn:close()
  local response = table.concat(chunks)
  local status = tonumber(response:match("^HTTP/%d%.%d (%d+)"))
  local body = response:match("\r\n\r\n(.*)$") or ""
  return status, body
end)

--- Fetches http://host:port/path and shows the body in a new buffer;
--- on_done(ok, status_or_error) is called after. Everything here runs where
--- the vim API is allowed: the task itself, the progress callback (which
--- sets vim.g.synchro_demo_bytes and echoes), and on_done.
function M.show(host, port, path, on_done)
  return sluv.run_opts({ on_done = function(task)
    if task.ok then
      local status, body = task:result()
      vim.cmd("new")
      vim.api.nvim_buf_set_lines(0, 0, -1, false, vim.split(body, "\n"))
      if on_done then on_done(true, status) end
    else
      vim.notify("synchro_demo: " .. tostring(task.error),
        vim.log.levels.ERROR)
      if on_done then on_done(false, task.error) end
    end
  end }, function()
    return M.fetch.aio(host, port, path, function(bytes)
      vim.api.nvim_set_var("synchro_demo_bytes", bytes)
      vim.api.nvim_echo({ { ("synchro_demo: %d bytes"):format(bytes) } },
        false, {})
    end)
  end)
end

M.synchronizer = S
return M
