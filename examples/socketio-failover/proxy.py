# A TCP proxy standing in for the network and the load balancer: SIGUSR1 cuts every live
# connection (the network is lost) and sends new ones to the next backend.
import asyncio, signal, sys
backends = sys.argv[2:]
state = {"i": 0, "conns": set()}
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    except Exception: pass
    finally:
        try: w.close()
        except Exception: pass
async def handle(r, w):
    host, port = backends[state["i"]].split(":")
    try: br, bw = await asyncio.open_connection(host, int(port))
    except Exception: w.close(); return
    state["conns"].update([w, bw])
    await asyncio.gather(pipe(r, bw), pipe(br, w))
    state["conns"].difference_update([w, bw])
def cut():
    for w in list(state["conns"]):
        w.transport.abort()
    state["conns"].clear()
    state["i"] = (state["i"] + 1) % len(backends)
    print("network cut; new connections go to", backends[state["i"]], flush=True)
async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, cut)
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server: await server.serve_forever()
asyncio.run(main())
