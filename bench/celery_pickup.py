#!/usr/bin/python3
"""Pickup latency of Celery 5 + Redis: the anchor figure next to our worker's.

Measures, for tasks submitted one at a time to an idle Celery worker, the time
from just before the client submits a task to when the task's first
instruction runs: the task runs `date +%s%N` as a subprocess and the printed
CLOCK_REALTIME timestamp is the end point ("pickup"), as in our own bench. The
time the task function was entered (time.time_ns()) is the second figure
("task entered").

The script starts its own redis-server (free loopback port, no persistence,
temp dir) and its own worker (prefork, concurrency 1), and stops both at the
end, also on Ctrl-C, SIGTERM or an error.

Usage: /usr/bin/python3 bench/celery_pickup.py [--tasks N] [--warmup W] [--json]
Exit: 0 done; 2 Celery or redis-server not installed; 1 other failure.

The worker imports this same file as the module `celery_pickup` (-A); it finds
its broker and queue in the environment the client sets for it.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ENV_BROKER = 'CELERY_PICKUP_BROKER'
ENV_QUEUE = 'CELERY_PICKUP_QUEUE'
TASK_TIMEOUT_S = 10      # one task not done in this long: something is broken
READY_TIMEOUT_S = 60     # worker start-up (imports, fork of the pool child)


def make_app(broker, queue):
    """The Celery app and its one task, tuned for latency as a user would."""
    import celery
    import redis

    app = celery.Celery('celery_pickup', broker=broker)
    app.conf.update(
        task_default_queue=queue,
        # No result backend: with Redis it subscribes to the result channel
        # inside apply_async, before the publish, i.e. inside the measured
        # interval. The task pushes its timestamps to a list instead.
        task_ignore_result=True,
        worker_prefetch_multiplier=1,   # hold no more than the task at hand
        task_acks_late=False,           # ack on receipt, as is the default
        worker_disable_rate_limits=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    results = {}    # one Redis client per (pool child) process, made lazily

    @app.task(name='pickup.stamp')
    def stamp():
        entered = time.time_ns()
        # The task's first instruction: the end point, as in our own bench.
        out = subprocess.run(['date', '+%s%N'], stdout=subprocess.PIPE,
                             check=True).stdout
        if 'client' not in results:
            results['client'] = redis.Redis.from_url(broker)
        results['client'].rpush(queue + ':stamps',
                                json.dumps([entered, int(out)]))

    return app, stamp


# Imported by the worker: define the app it runs (`-A celery_pickup`).
if __name__ != '__main__' and ENV_BROKER in os.environ:
    app, stamp = make_app(os.environ[ENV_BROKER], os.environ[ENV_QUEUE])


def free_port():
    # Racy (the port may be taken before redis binds it) but redis then
    # fails to start and we say so; good enough for a bench.
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def stop(proc):
    """Stop a process started in its own session, and its whole group."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)   # warm shutdown for celery
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # pool children left behind
    except ProcessLookupError:
        pass
    proc.wait()


def nearest_rank(samples, pct):
    """Nearest-rank percentile: sample at ceil(pct/100 * n) - 1, sorted."""
    s = sorted(samples)
    return s[max(0, (pct * len(s) + 99) // 100 - 1)]


def summary_ms(samples_ns):
    return {name: round(nearest_rank(samples_ns, pct) / 1e6, 3)
            for name, pct in (('p50', 50), ('p90', 90), ('p99', 99),
                              ('max', 100))}


def run_one(stamp, results, key):
    """Submit one task, wait for it; return (pickup_ns, entered_ns)."""
    submitted = time.time_ns()
    stamp.apply_async()
    got = results.blpop([key], timeout=TASK_TIMEOUT_S)
    if got is None:
        raise RuntimeError('task not done within %d s' % TASK_TIMEOUT_S)
    entered, date_ns = json.loads(got[1])
    return date_ns - submitted, entered - submitted


def measure(args, tmp):
    import celery
    import redis

    port = free_port()
    broker = 'redis://127.0.0.1:%d/0' % port
    queue = 'pickup-%d' % os.getpid()
    procs = {}
    try:
        # Own sessions, so Ctrl-C on the terminal does not reach them half
        # way and stop() can kill each whole group (pool children included).
        with open(os.path.join(tmp, 'redis.log'), 'w') as log:
            procs['redis'] = subprocess.Popen(
                ['redis-server', '--save', '', '--appendonly', 'no',
                 '--port', str(port), '--bind', '127.0.0.1', '--dir', tmp],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                start_new_session=True)
        # Timeouts, so a port taken by something else than our redis is an
        # error, not a hang; the socket one outlasts the longest BLPOP.
        results = redis.Redis.from_url(broker, socket_connect_timeout=1,
                                       socket_timeout=TASK_TIMEOUT_S + 5)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(broker, socket_timeout=1).ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if procs['redis'].poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError('redis-server did not start: '
                                       + tail(tmp, 'redis.log'))
                time.sleep(0.02)
        redis_version = results.info('server')['redis_version']

        # The worker imports this file from bench/; no __pycache__ there.
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1',
                   PYTHONPATH=os.path.dirname(os.path.abspath(__file__)),
                   **{ENV_BROKER: broker, ENV_QUEUE: queue})
        with open(os.path.join(tmp, 'worker.log'), 'w') as log:
            procs['worker'] = subprocess.Popen(
                [sys.executable, '-m', 'celery', '-A', 'celery_pickup',
                 'worker', '--concurrency', '1', '--pool', 'prefork',
                 '--without-gossip', '--without-mingle',
                 '--without-heartbeat', '-Q', queue, '--loglevel', 'warning'],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                start_new_session=True)

        _, stamp = make_app(broker, queue)
        key = queue + ':stamps'
        # Ready when a first task comes back; it waits in the queue until
        # the worker consumes it, so no polling of the worker is needed.
        stamp.apply_async()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while results.blpop([key], timeout=1) is None:
            if procs['worker'].poll() is not None or \
                    time.monotonic() > deadline:
                raise RuntimeError('celery worker did not start: '
                                   + tail(tmp, 'worker.log'))

        pickup, entered = [], []
        for i in range(args.warmup + args.tasks):
            # Idle gap, so the worker is parked in its BRPOP when we submit;
            # random so it cannot phase-lock with any periodic work.
            time.sleep(random.uniform(0.005, 0.020))
            p, e = run_one(stamp, results, key)
            if i >= args.warmup:
                pickup.append(p)
                entered.append(e)
        return {'tool': 'celery+redis', 'celery': celery.__version__,
                'redis': redis_version, 'tasks': args.tasks,
                'pickup_ms': summary_ms(pickup),
                'entered_ms': summary_ms(entered)}
    finally:
        for name in ('worker', 'redis'):
            stop(procs.get(name))


def tail(tmp, name, lines=5):
    try:
        with open(os.path.join(tmp, name)) as f:
            return ' | '.join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return '(no log)'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', type=int, default=200,
                        help='measured tasks (default 200)')
    parser.add_argument('--warmup', type=int, default=20,
                        help='unmeasured tasks first (default 20)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object on stdout')
    args = parser.parse_args()
    if args.tasks < 1 or args.warmup < 0:
        parser.error('--tasks must be >= 1 and --warmup >= 0')

    missing = [pkg for pkg, mod in (('python3-celery', 'celery'),
                                    ('python3-redis', 'redis'))
               if not has_module(mod)]
    if shutil.which('redis-server') is None:
        missing.append('redis-server')
    if missing:
        print('celery_pickup: Celery+Redis not installed (missing: %s)'
              % ', '.join(missing), file=sys.stderr)
        return 2

    # SIGTERM (e.g. from the C++ bench) unwinds like Ctrl-C, through the
    # finally blocks that stop redis and the worker and remove the temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix='celery-pickup-') as tmp:
            res = measure(args, tmp)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for the C++ bench to pass on
        print('celery_pickup: %s' % e, file=sys.stderr)
        return 1

    if args.json:
        print(json.dumps(res))
    else:
        print('Celery %s + Redis %s, prefork concurrency 1, %d tasks'
              ' (after %d warm-up), idle worker'
              % (res['celery'], res['redis'], res['tasks'], args.warmup))
        print('%-14s %9s %9s %9s %9s' % ('ms', 'p50', 'p90', 'p99', 'max'))
        for label, k in (('pickup', 'pickup_ms'),
                         ('task entered', 'entered_ms')):
            print('%-14s %9.3f %9.3f %9.3f %9.3f'
                  % ((label,) + tuple(res[k][p] for p in
                                      ('p50', 'p90', 'p99', 'max'))))
    return 0


def has_module(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == '__main__':
    sys.exit(main())
