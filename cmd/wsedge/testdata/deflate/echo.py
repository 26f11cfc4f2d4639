"""Python `websockets` client for TestDeflatePython (../../deflate_test.go).

Offers permessage-deflate (websockets' default), sends the same kinds of
messages as messages.mjs (its own deterministic sequence) to an echo server
and checks each echo. Prints one JSON line:
{"extensions": "...", "echoed": N, "bytes": total payload bytes}.
Usage: python3 echo.py ws://127.0.0.1:PORT/ws COUNT SEED
"""
import asyncio
import json
import random
import sys

import websockets


def messages(count, seed):
    r = random.Random(seed)
    sizes = [0, 1, 127, 128, 129, 1024, 16383, 16384, 16385, 32767, 32768, 32769, 65535, 65536, 65537]
    words = ['{"channel":"chat:room42",', '"offset":', '"data":{"text":"', 'hello', ' world', '"}}']
    for i in range(count):
        n = r.choice(sizes) if r.random() < 0.5 else r.randrange(200000)
        kind = i % 4
        if kind == 3:
            yield r.randbytes(n)
        elif kind == 0:
            t = ''
            while len(t) < n:
                t += r.choice(words)
            yield t[:n]
        elif kind == 1:
            yield 'x' * n
        else:
            yield ''.join(chr(32 + r.randrange(95)) for _ in range(n))


async def main(url, count, seed):
    async with websockets.connect(url, compression='deflate', max_size=1 << 21) as ws:
        ext = ws.response_headers.get('Sec-WebSocket-Extensions', '')
        if not ext.startswith('permessage-deflate'):
            sys.exit('no permessage-deflate: %r' % ext)
        total = 0
        n = 0
        for m in messages(count, seed):
            await ws.send(m)
            got = await ws.recv()
            if type(got) is not type(m) or got != m:
                sys.exit('message %d: echo of %d differs from %d (%s)' % (n, len(got), len(m), type(m).__name__))
            total += len(m) if isinstance(m, bytes) else len(m.encode())
            n += 1
        print(json.dumps({'extensions': ext, 'echoed': n, 'bytes': total}))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
