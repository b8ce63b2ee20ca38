--- The pipeline for plain (blocking) code: impl.lua's async functions
--- wrapped on the default Synchronizer, each with `.aio` (inside
--- synchro.run) and `.future` variants.
return require("synchro").default():wrap_module("pipeline.impl")
