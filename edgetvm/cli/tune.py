"""``edgetvm tune`` and ``edgetvm rpc tracker|server``: the command-line side of tuning on boards."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from .. import api
from ..io import atomic_write_json
from ..tuning.rpc import DEFAULT_TRACKER_PORT, LOOPBACK, check_bind_host, start_server, start_tracker
from .options import add_compile_options, compile_kwargs


def cmd_tune(args: argparse.Namespace) -> int:
    kwargs = compile_kwargs(args)
    target = kwargs.pop("target")
    tune_options = {"batch_size": args.batch_size, "population_size": args.population,
                    "wait_boards": args.wait_boards}
    if args.trials_per_kernel:
        tune_options["trials_per_task"] = args.trials_per_kernel
    report = api.tune(args.model, target, tracker=args.tracker, key=args.key, trials=args.trials, db=args.db,
                      salvage=args.salvage, wait_lock=args.wait_lock, candidate_timeout=args.timeout,
                      tune_options=tune_options, **kwargs)
    if args.report:
        atomic_write_json(args.report, report.to_json())
        print(f"wrote {args.report}")
    print(f"compile with: edgetvm compile {args.model} --target {args.target} --tuning-db {args.db} -o model.so")
    return 0


def _serve_forever(processes, what: str) -> int:
    """Wait until a child exits or the user presses Ctrl-C; then stop every child's process group."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Started in the background of a script, a process inherits SIGINT ignored: Ctrl-C (kill -INT) must still stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while all(p.alive() for p in processes):
            time.sleep(0.5)
        dead = next(p for p in processes if not p.alive())
        print(f"edgetvm: the {what} exited:\n{dead.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopping the {what}", file=sys.stderr)
        return 0
    finally:
        for p in processes:
            p.stop()


def cmd_rpc_tracker(args: argparse.Namespace) -> int:
    warning = check_bind_host(args.host, args.allow_remote, "the RPC tracker")
    if warning:
        print(warning, file=sys.stderr)
    tracker = start_tracker(args.host, args.port, allow_remote=args.allow_remote, log_path=args.log)
    print(f"RPC tracker listening on {tracker.address} (pid {tracker.pid}); boards register with "
          f"`edgetvm rpc server --tracker {tracker.address} --key KEY`. Ctrl-C stops it.", flush=True)
    return _serve_forever([tracker], "RPC tracker")


def cmd_rpc_server(args: argparse.Namespace) -> int:
    warning = check_bind_host(args.host, args.allow_remote, "the RPC server")
    if warning:
        print(warning, file=sys.stderr)
    server = start_server(args.tracker, args.key, host=args.host, port=args.port, allow_remote=args.allow_remote,
                          num_threads=args.threads, log_path=args.log)
    print(f"RPC server on {server.address} (pid {server.pid}) registered with {args.tracker} under key "
          f"{args.key!r}, TVM_NUM_THREADS={args.threads}. Ctrl-C stops it.", flush=True)
    return _serve_forever([server], "RPC server")


def add_tuning_commands(sub) -> None:
    """Register ``tune`` and ``rpc tracker|server`` on the top-level subparsers."""
    p = sub.add_parser("tune", help="search kernel schedules on boards over TVM RPC; records go to a database",
                       description="Measure candidate schedules of a model's kernels on boards registered with a TVM "
                                   "RPC tracker; `edgetvm compile --tuning-db DIR` then uses the fastest.")
    add_compile_options(p)
    p.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the RPC tracker (`edgetvm rpc tracker`)")
    p.add_argument("--key", required=True, help="the board kind the servers registered under")
    p.add_argument("--trials", type=int, default=500, help="candidates to measure in this run (default 500; 0: only time the best records against the defaults)")
    p.add_argument("--trials-per-kernel", type=int, default=None, help="cap per kernel (default: no cap)")
    p.add_argument("--db", required=True, metavar="DIR", help="tuning database directory (a rerun continues it)")
    p.add_argument("--batch-size", type=int, default=16, help="candidates per search round of one kernel")
    p.add_argument("--population", type=int, default=256,
                   help="evolutionary search population per kernel (smaller: faster rounds, less exploration)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one candidate may take on a board")
    p.add_argument("--salvage", action="store_true", help="drop corrupt or truncated records of DIR, keep the rest")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another tuning run on DIR to finish (default: fail at once)")
    p.add_argument("--wait-boards", type=float, default=60.0, metavar="SECONDS",
                   help="wait this long for a first board to register under --key (default 60)")
    p.add_argument("--report", metavar="JSON", help="write the tuning report here")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("rpc", help="TVM RPC tracker and board servers for tuning",
                       description="Run TVM's RPC tracker (on the host) or an RPC server (on each board) for "
                                   "`edgetvm tune`.")
    rpc_sub = p.add_subparsers(dest="rpc_command", required=True, metavar="COMMAND", title="commands")
    t = rpc_sub.add_parser("tracker", help="run TVM's RPC tracker (foreground)",
                           description="Run TVM's RPC tracker in the foreground; boards register with it.")
    t.add_argument("--host", default=LOOPBACK, help="address to bind (default 127.0.0.1)")
    t.add_argument("--port", type=int, default=DEFAULT_TRACKER_PORT, help=f"port to bind (default {DEFAULT_TRACKER_PORT})")
    t.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    t.add_argument("--log", default=None, help="append the tracker's log here")
    t.set_defaults(func=cmd_rpc_tracker)
    s = rpc_sub.add_parser("server", help="run TVM's RPC server on this board (foreground); it executes uploaded code",
                           description="Run TVM's RPC server on this board in the foreground, registered with the "
                                       "tracker; it executes the code the tuner uploads.")
    s.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the tracker to register with")
    s.add_argument("--key", required=True, help="board kind, e.g. rk3288; the tuner asks for boards by key")
    s.add_argument("--host", default=LOOPBACK, help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port to bind (default: a free one)")
    s.add_argument("--threads", type=int, default=1, help="TVM_NUM_THREADS for the measured kernels (default 1)")
    s.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    s.add_argument("--log", default=None, help="append the server's log here")
    s.set_defaults(func=cmd_rpc_server)

