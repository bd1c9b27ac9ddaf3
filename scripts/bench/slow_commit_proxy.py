#!/usr/bin/env python3
"""A loopback HTTP/1.1 proxy in front of a registry that makes the upload of
one blob look like a slow commit (issue 25): every request whose request
line contains DIGEST_HEX and that has a body (the monolithic PUT) is
forwarded except for its last 64 KiB, which are held for --hold seconds
(the registry hashing and moving a huge layer) before they go on, and the
closing PUT of a chunked upload of it (no body) is held as long before it
is forwarded; the registry's answer then comes back late. A client with a shorter answer
timeout gives up meanwhile, although the blob is committed a moment later;
a client that then uploads again meets the same wait.

    slow_commit_proxy.py LISTEN_PORT UPSTREAM_PORT DIGEST_HEX [--hold 20]

Only Content-Length framing (what bundler and the registry use). Prints
"ready" once it listens; runs until killed.
"""
import argparse
import socket
import sys
import threading
import time

HOLD_TAIL = 64 << 10


def read_head(f):
    lines = []
    while True:
        line = f.readline(65536)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line)


def length(lines):
    for l in lines[1:]:
        k, _, v = l.decode("latin-1").partition(":")
        if k.strip().lower() == "content-length":
            return int(v.strip())
    return 0


def copy(src, dst, n):
    while n > 0:
        b = src.read(min(n, 1 << 20))
        if not b:
            raise EOFError
        dst.write(b)
        n -= len(b)


def serve(client, up_port, digest, hold):
    up = socket.create_connection(("127.0.0.1", up_port))
    cr, cw = client.makefile("rb"), client.makefile("wb")
    ur, uw = up.makefile("rb"), up.makefile("wb")
    try:
        while True:
            head = read_head(cr)
            if head is None:
                return
            method = head[0].split(b" ")[0]
            n = length(head)
            uw.write(b"".join(head) + b"\r\n")
            if n == 0 and method == b"PUT" and digest in head[0]:
                # A chunked upload's closing PUT: the commit starts when it
                # arrives; hold it.
                time.sleep(hold)
                uw.flush()
            elif n > HOLD_TAIL and digest in head[0]:
                copy(cr, uw, n - HOLD_TAIL)
                uw.flush()
                tail = cr.read(HOLD_TAIL)
                time.sleep(hold)
                uw.write(tail)
            else:
                copy(cr, uw, n)
            uw.flush()
            rhead = read_head(ur)
            if rhead is None:
                return
            status = int(rhead[0].split(b" ")[1])
            body = 0 if method == b"HEAD" or status in (204, 304) else length(rhead)
            cw.write(b"".join(rhead) + b"\r\n")
            copy(ur, cw, body)
            cw.flush()
    except (OSError, EOFError, ValueError):
        return
    finally:
        for s in (client, up):
            try:
                s.close()
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("digest_hex")
    ap.add_argument("--hold", type=float, default=20)
    a = ap.parse_args()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, a.upstream_port, a.digest_hex.encode(), a.hold),
                         daemon=True).start()


if __name__ == "__main__":
    main()
