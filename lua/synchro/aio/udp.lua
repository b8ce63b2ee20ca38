-- synchro.aio.udp (being written)
return {}
