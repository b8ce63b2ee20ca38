-- :SynchroFetch PORT [PATH] fetches http://127.0.0.1:PORT/PATH into a buffer.
vim.api.nvim_create_user_command("SynchroFetch", function(opts)
  local port = tonumber(opts.fargs[1])
  require("synchro_demo").show("127.0.0.1", port, opts.fargs[2] or "/")
end, { nargs = "+" })
