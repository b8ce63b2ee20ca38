-- synchro.aio.sync (being written)
return {}
