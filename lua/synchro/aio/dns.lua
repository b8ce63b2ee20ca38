-- synchro.aio.dns (being written)
return {}
