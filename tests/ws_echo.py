#!/usr/bin/env python3
"""WebSocket echo server and client for the gateway tests (Debian's
python3-websockets, a real WebSocket implementation).

  ws_echo.py serve PORT                 echo every message back until killed
  ws_echo.py client URL --ca FILE [--connect HOST:PORT] --header 'Authorization: Bearer T' MSG...
                                        send each MSG, print each echo; exit 0
"""
import asyncio
import os
import ssl
import sys

try:
    import websockets
except ImportError:
    # Debian's package lives under /usr/bin/python3; a pyenv python may lack it.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise


async def echo(ws, _path=None):
    async for msg in ws:
        await ws.send(msg)


async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port):
        print("ready", flush=True)
        await asyncio.Future()


async def client(url, ca, headers, msgs, connect):
    ctx = ssl.create_default_context(cafile=ca)
    kw = {}
    if connect:
        # *.localhost names do not resolve through every resolver: dial the
        # address given, and still verify the certificate for the URL's name.
        host, port = connect.rsplit(":", 1)
        kw = {"host": host, "port": int(port), "server_hostname": url.split("//")[1].split(":")[0].split("/")[0]}
    async with websockets.connect(url, ssl=ctx, extra_headers=headers, **kw) as ws:
        for m in msgs:
            await ws.send(m)
            print(await asyncio.wait_for(ws.recv(), 10), flush=True)


def main():
    args = sys.argv[1:]
    if args[:1] == ["serve"]:
        asyncio.run(serve(int(args[1])))
        return
    if args[:1] != ["client"]:
        sys.exit(__doc__)
    url, rest = args[1], args[2:]
    ca, headers, msgs, connect = None, [], [], None
    while rest:
        a = rest.pop(0)
        if a == "--ca":
            ca = rest.pop(0)
        elif a == "--connect":
            connect = rest.pop(0)
        elif a == "--header":
            k, v = rest.pop(0).split(":", 1)
            headers.append((k.strip(), v.strip()))
        else:
            msgs.append(a)
    try:
        asyncio.run(client(url, ca, headers, msgs, connect))
    except websockets.exceptions.InvalidStatusCode as e:
        print(f"REFUSED: {e.status_code}")
        sys.exit(1)


if __name__ == "__main__":
    main()
