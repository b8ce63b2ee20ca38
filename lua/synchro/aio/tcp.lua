-- synchro.aio.tcp (being written)
return {}
