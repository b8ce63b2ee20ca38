"""The TLS rows of bench/tcp_echo.lua, with Python's asyncio and ssl: an
echo server and its client in one process, one event loop, as the synchro
side runs them.

  tls_echo.py CERTDIR SECS CHUNK HANDSHAKE_SECS
prints "throughput BYTES SECS" and "handshakes N SECS".
"""
import asyncio
import ssl
import sys
import time


async def main(certdir, secs, chunk_size, hs_secs):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certdir + "/cert.pem", certdir + "/key.pem")
    cctx = ssl.create_default_context(cafile=certdir + "/cert.pem")

    async def echo(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=cctx, server_hostname="localhost")
    chunk = b"x" * chunk_size
    received = 0

    async def read_all():
        nonlocal received
        while True:
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)

    t0 = time.monotonic()
    task = asyncio.ensure_future(read_all())
    sent = 0
    while time.monotonic() - t0 < secs:
        writer.write(chunk)
        await writer.drain()
        sent += chunk_size
    writer.write_eof() if writer.can_write_eof() else None
    # TLS cannot half-close in asyncio: wait for the echo, then close
    while received < sent:
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - t0
    writer.close()
    task.cancel()
    print("throughput %d %.6f" % (received, elapsed))

    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < hs_secs:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=cctx, server_hostname="localhost")
        w.write(b"x")
        await r.readexactly(1)
        w.close()
        n += 1
    print("handshakes %d %.6f" % (n, time.monotonic() - t0))
    server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]),
                     float(sys.argv[4])))
