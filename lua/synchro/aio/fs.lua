-- synchro.aio.fs (being written)
return {}
