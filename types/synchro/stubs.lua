---@meta synchro.stubs

--- synchro-stubs as a library (docs/library-authors.md).
---@class synchro.stubs
local stubs = {}

--- The stubs of public module `name` (found on package.path; the impl is
--- what its source passes to `wrap_module`, or `opts.impl`).
---@param name string
---@param opts? {impl?: string}
---@return string|nil stubs
---@return string|nil message
function stubs.generate(name, opts) end

--- The stubs for public module `public`, from the source of its impl.
---@param public string
---@param impl string
---@param source string
---@return string
function stubs.render(public, impl, source) end

--- The command line `MODULE [-o FILE] [--impl IMPL]`; the exit status.
---@param args string[]
---@return integer
function stubs.main(args) end

return stubs
