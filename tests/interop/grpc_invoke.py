"""gRPC service invocation through two Sigil sidecars, with grpcio on both ends.

`serve`: the app behind the callee's sidecar, a grpcio server of the service
`sigil.test.Echo` (generic handlers over raw bytes: no generated code), on 127.0.0.1:0;
prints `app: listening port=<port>`. Cancellations it sees are appended to --events.

`client`: calls that service through the caller's sidecar (--target, its gRPC port) with the
`dapr-app-id` metadata, runs the checks named by --checks and prints one line per check,
`ok <name>` or `FAIL <name>: <why>`; exits 1 if any failed.
"""
import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "sigil.test.Echo"


def method(name):
    return f"/{SERVICE}/{name}"


# ---------------------------------------------------------------------------------- the app
class Events:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def add(self, line):
        with self.lock, open(self.path, "a") as f:
            f.write(line + "\n")


def serve(args):
    events = Events(args.events)

    def seen(context):
        md = dict(context.invocation_metadata())
        return {
            k: md.get(k)
            for k in (
                "dapr-caller-app-id",
                "dapr-caller-namespace",
                "dapr-callee-app-id",
                "x-sigil-caller-spiffe-id",
                "x-custom",
                "dapr-api-token",
                "dapr-app-id",
                "x-sigil-invoke-protocol",
            )
        }

    def unary(request, context):
        context.send_initial_metadata((("x-initial", "i"),))
        if len(request) > 1024:
            context.set_trailing_metadata((("x-trailer", f"t-{len(request)}-bytes"),))
            return request
        context.set_trailing_metadata((("x-trailer", "t-" + request.decode()),))
        return json.dumps({"echo": request.decode(), "seen": seen(context)}).encode()

    def server_stream(request, context):
        for i in range(int(request.decode())):
            yield f"msg-{i}".encode()

    def client_stream(request_iterator, context):
        return b",".join(request_iterator)

    def bidi(request_iterator, context):
        for m in request_iterator:
            yield b"echo:" + m

    def fail(request, context):
        code, _, message = request.decode().partition(":")
        context.set_trailing_metadata((("x-why", "because"),))
        context.abort(grpc.StatusCode[code], message)

    def slow(request, context):
        tag = request.decode()
        events.add(f"started {tag}")
        deadline = time.monotonic() + 30
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        events.add(f"{'cancelled' if not context.is_active() else 'finished'} {tag}")
        return b"late"

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Secret": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"app: listening port={port}", flush=True)
    server.wait_for_termination()


# ------------------------------------------------------------------------------- the client
class Failed(Exception):
    pass


def expect(cond, why):
    if not cond:
        raise Failed(why)


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details(), dict(e.trailing_metadata() or ())
    raise Failed("the call succeeded")


def wait_event(path, line, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if line in f.read().splitlines():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise Failed(f"the app never saw {line!r}")


def client(args):
    channel = grpc.insecure_channel(
        args.target,
        options=[("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)],
    )
    grpc.channel_ready_future(channel).result(timeout=10)
    to_app = (("dapr-app-id", args.app),)
    uu = lambda name: channel.unary_unary(method(name))  # noqa: E731

    def unary():
        md = to_app + (
            ("x-custom", "kept"),
            ("dapr-api-token", "the-app-s-secret"),
            ("dapr-caller-app-id", "forged"),
            ("x-sigil-caller-spiffe-id", "spiffe://forged/ns/x/y"),
        )
        resp, call = uu("Unary").with_call(b"hello", metadata=md, timeout=10)
        body = json.loads(resp)
        seen = body["seen"]
        expect(body["echo"] == "hello", body)
        expect(seen["dapr-caller-app-id"] == args.caller, f"caller {seen}")
        expect(seen["dapr-caller-namespace"] == "default", f"namespace {seen}")
        expect(seen["dapr-callee-app-id"] == args.app, f"callee {seen}")
        expect(
            (seen["x-sigil-caller-spiffe-id"] or "").endswith(f"/ns/default/{args.caller}"),
            f"SPIFFE ID {seen}",
        )
        expect(seen["x-custom"] == "kept", f"custom metadata {seen}")
        expect(seen["dapr-api-token"] is None, f"the API token reached the other app: {seen}")
        expect(seen["x-sigil-invoke-protocol"] is None, f"internal header reached the app: {seen}")
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        expect(initial.get("x-initial") == "i", f"initial metadata {initial}")
        expect(trailing.get("x-trailer") == "t-hello", f"trailing metadata {trailing}")
        expect(call.code() == grpc.StatusCode.OK, call.code())

    def callee_metadata():
        # Dapr reads dapr-callee-app-id first.
        resp = uu("Unary")(b"x", metadata=(("dapr-callee-app-id", args.app), ("dapr-app-id", "nosuch")), timeout=10)
        expect(json.loads(resp)["echo"] == "x", resp)

    def large():
        payload = bytes(range(256)) * 4096  # 1 MiB
        resp, call = uu("Unary").with_call(payload, metadata=to_app, timeout=20)
        expect(resp == payload, f"{len(resp)} bytes back, not the 1 MiB sent")
        trailing = dict(call.trailing_metadata())
        expect(trailing.get("x-trailer") == f"t-{len(payload)}-bytes", trailing)

    def server_stream():
        got = list(channel.unary_stream(method("ServerStream"))(b"100", metadata=to_app, timeout=10))
        expect(got == [f"msg-{i}".encode() for i in range(100)], f"{len(got)} messages")

    def client_stream():
        msgs = [f"m{i}".encode() for i in range(100)]
        resp = channel.stream_unary(method("ClientStream"))(iter(msgs), metadata=to_app, timeout=10)
        expect(resp == b",".join(msgs), resp[:80])

    def bidi():
        # Ping-pong: each answer is read before the next message is sent, so nothing can be
        # buffered to the end of the stream on any hop.
        out = Pipe()
        stream = channel.stream_stream(method("Bidi"))(iter(out), metadata=to_app, timeout=30)
        for i in range(50):
            out.put(f"p{i}".encode())
            got = next(stream)
            expect(got == f"echo:p{i}".encode(), got)
        out.close()
        expect(list(stream) == [], "messages after the end")
        expect(stream.code() == grpc.StatusCode.OK, stream.code())

    def status():
        code, details, trailing = code_of(lambda: uu("Fail")(b"NOT_FOUND:gone \xc3\xa9 100%", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.NOT_FOUND, code)
        expect(details == "gone \u00e9 100%", repr(details))
        expect(trailing.get("x-why") == "because", trailing)
        code, details, _ = code_of(lambda: uu("Fail")(b"RESOURCE_EXHAUSTED:full", metadata=to_app, timeout=10))
        expect((code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "full"), (code, details))

    def deadline():
        tag = f"deadline-{time.monotonic_ns()}"
        code, _, _ = code_of(lambda: uu("Slow")(tag.encode(), metadata=to_app, timeout=1.0))
        expect(code == grpc.StatusCode.DEADLINE_EXCEEDED, code)
        wait_event(args.events, f"cancelled {tag}")

    def cancel():
        tag = f"cancel-{time.monotonic_ns()}"
        future = uu("Slow").future(tag.encode(), metadata=to_app, timeout=20)
        wait_event(args.events, f"started {tag}")
        future.cancel()
        wait_event(args.events, f"cancelled {tag}")

    def unimplemented_method():
        code, _, _ = code_of(lambda: uu("Nope")(b"", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.UNIMPLEMENTED, code)

    def no_app_id():
        code, details, _ = code_of(lambda: uu("Unary")(b"", timeout=10))
        expect(code == grpc.StatusCode.UNKNOWN and "dapr-app-id" in details, (code, details))
        dapr = channel.unary_unary("/dapr.proto.runtime.v1.Dapr/GetMetadata")
        code, details, _ = code_of(lambda: dapr(b"", timeout=10))
        expect(code == grpc.StatusCode.UNIMPLEMENTED, (code, details))

    def unknown_app():
        code, details, _ = code_of(lambda: uu("Unary")(b"", metadata=(("dapr-app-id", "nosuch"),), timeout=10))
        expect(code == grpc.StatusCode.NOT_FOUND and "nosuch" in details, (code, details))

    def acl():
        # The callee's policy: defaultAction deny; for this caller /sigil.test.Echo/Secret
        # deny, /sigil.test.Echo/* allow.
        resp = uu("Unary")(b"allowed", metadata=to_app, timeout=10)
        expect(json.loads(resp)["echo"] == "allowed", resp)
        code, details, _ = code_of(lambda: uu("Secret")(b"", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.PERMISSION_DENIED, (code, details))
        expect("access control policy has denied access to id: spiffe://" in details and "operation: sigil.test.Echo/Secret verb: NONE" in details, details)
        # gRPC method names are case-sensitive: another method, not in the policy.
        lower = channel.unary_unary("/sigil.test.echo/unary")
        code, details, _ = code_of(lambda: lower(b"", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.PERMISSION_DENIED, (code, details))
        # A spelling that normalises to the denied method is denied.
        dotted = channel.unary_unary("/sigil.test.Echo/x/../Secret")
        code, details, _ = code_of(lambda: dotted(b"", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.PERMISSION_DENIED, (code, details))

    def http_app():
        # The callee's app speaks HTTP (its sidecar's --app-protocol is http).
        code, details, _ = code_of(lambda: uu("Unary")(b"", metadata=to_app, timeout=10))
        expect(code == grpc.StatusCode.UNIMPLEMENTED and "--app-protocol" in details, (code, details))

    def rotation():
        # One bidirectional stream for --seconds, a message every 50 ms, each answered.
        out = Pipe()
        stream = channel.stream_stream(method("Bidi"))(iter(out), metadata=to_app, timeout=args.seconds + 30)
        end = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < end:
            out.put(f"r{n}".encode())
            got = next(stream)
            expect(got == f"echo:r{n}".encode(), got)
            n += 1
            time.sleep(0.05)
        out.close()
        expect(list(stream) == [] and stream.code() == grpc.StatusCode.OK, stream.code())
        print(f"rotation: {n} messages on one stream over {args.seconds} s", flush=True)
        # A new call after the rotations.
        resp = uu("Unary")(b"after", metadata=to_app, timeout=10)
        expect(json.loads(resp)["echo"] == "after", resp)

    checks = {
        f.__name__: f
        for f in (unary, callee_metadata, large, server_stream, client_stream, bidi, status,
                  deadline, cancel, unimplemented_method, no_app_id, unknown_app, acl, http_app, rotation)
    }
    failed = 0
    for name in args.checks.split(","):
        try:
            checks[name]()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)


class Pipe:
    """A request iterator fed from the caller's thread."""

    _END = object()

    def __init__(self):
        import queue

        self.q = queue.Queue()

    def put(self, m):
        self.q.put(m)

    def close(self):
        self.q.put(self._END)

    def __iter__(self):
        while True:
            m = self.q.get()
            if m is self._END:
                return
            yield m


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--events", required=True)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--app", required=True)
    c.add_argument("--caller", required=True)
    c.add_argument("--events", required=True)
    c.add_argument("--checks", required=True)
    c.add_argument("--seconds", type=float, default=12)
    args = p.parse_args()
    serve(args) if args.mode == "serve" else client(args)


if __name__ == "__main__":
    main()
