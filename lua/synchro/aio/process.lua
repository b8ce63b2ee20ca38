-- synchro.aio.process (being written)
return {}
