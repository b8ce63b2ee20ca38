-- A small Neovim plugin: :SynchroFetch fetches a page from a local HTTP
-- server through a wrapped async function and shows it in a new buffer,
-- while the editor stays responsive (the call awaits on Neovim's loop).
local synchro = require "synchro"
local sluv = require "synchro.luv"

local M = {}

local S = synchro.new({ name = "nvim-demo" })

-- Async code: runs on synchro's loop thread. A minimal HTTP/1.0 GET over
-- a raw TCP connection made with synchro.aio.tcp.
M.fetch = S:wrap(function(host, port, path)
  local aio = require "synchro.aio"
  local conn = assert(aio.tcp.connect(host, port))
  assert(conn:write(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n"):format(path, host)))
  local chunks = {}
  while true do
    local data = conn:read()
    if not data then break end
    chunks[#chunks + 1] = data
  end
  conn:close()
  local response = table.concat(chunks)
  local status = tonumber(response:match("^HTTP/%d%.%d (%d+)"))
  local body = response:match("\r\n\r\n(.*)$") or ""
  return status, body
end)

--- Fetches http://host:port/path and shows the body in a new buffer;
--- on_done(ok, status_or_error) is called after.
function M.show(host, port, path, on_done)
  return sluv.run_opts({ on_done = function(task)
    vim.schedule(function()
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
    end)
  end }, function()
    return M.fetch.aio(host, port, path)
  end)
end

M.synchronizer = S
return M
