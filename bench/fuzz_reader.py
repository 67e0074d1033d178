"""Structure-aware fuzzing of the reader, validation, analysis and convert.

    python bench/fuzz_reader.py [--inputs 100000] [--seed S] [--workers 2]
                                [--convert-every 50] [--execute-every 0] [--out build/fuzz]

Input i is `tests/model_mutations.mutated_model(rng=Random(f"{seed}:{i}"))`: a valid seed
model (conv_chain, resnet8_cifar, a synthetic model with QMCU_* ops) with one to three
fields changed, sometimes raw bytes flipped. Every input goes through read + validation,
the int8 check and analysis; every `--convert-every`-th also through the whole convert
pipeline (patch-int8, LiteRT verify step), and an accepted output must load and run in
LiteRT; every `--execute-every`-th runs the numpy reference executor on the model.
Workers are subprocesses; an input that takes more than 1 s (signal alarm, or
the parent's watchdog if the worker is stuck in C code) counts as a hang, a worker that
dies counts as a crash. Convert and executor inputs get `--convert-timeout` seconds.
Reproducers of every untyped exception, hang, crash and invalid model accepted are
saved under --out with their traceback. Prints the seed and a table of outcome counts.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import multiprocessing.pool
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

WATCHDOG_SLACK_S = 5.0


class _Hang(Exception):
    """Raised by the alarm inside a worker."""


def _on_alarm(signum, frame):
    raise _Hang()


def _input(seed: int, index: int):
    from model_mutations import mutated_model

    return mutated_model(rng=random.Random(f"{seed}:{index}"))


def _every(index: int, every: int) -> bool:
    return every > 0 and index % every == 0


def _worker(conn, seed: int, indices: list[int], every: tuple, timeouts: tuple) -> None:
    from fuzz_harness import Outcome, run_input

    signal.signal(signal.SIGALRM, _on_alarm)
    for index in indices:
        seed_model, data, applied = _input(seed, index)
        do_convert, do_execute = _every(index, every[0]), _every(index, every[1])
        conn.send(("start", index))
        limit = timeouts[1] if do_convert or do_execute else timeouts[0]
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            outcome = run_input(data=data, sram_budget=seed_model.sram_budget,
                                do_convert=do_convert, do_execute=do_execute)
        except _Hang:
            outcome = Outcome("hang", "", f"over {limit} s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send(("done", index, outcome.kind, outcome.name, outcome.detail, applied,
                   do_convert))
    conn.send(("end",))


class _Run:
    def __init__(self, args) -> None:
        self.args = args
        self.counts: collections.Counter = collections.Counter()
        self.converted = 0
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def record(self, index, kind, name, detail, applied, do_convert) -> None:
        self.counts[(kind, name if kind in ("typed", "untyped") else "")] += 1
        self.converted += bool(do_convert)
        if kind in ("untyped", "hang", "crash", "invalid-accepted"):
            _, data, _ = _input(self.args.seed, index)
            stem = self.out / f"{kind}_{self.args.seed}_{index}"
            stem.with_suffix(".tflite").write_bytes(data)
            stem.with_suffix(".txt").write_text(
                f"seed {self.args.seed} input {index} mutations {applied} convert {do_convert}\n"
                f"{name}\n{detail}\n")

    def run_chunk(self, indices: list[int]) -> None:
        """Runs indices in one worker; restarts after a crash or a stuck input."""
        timeouts = (self.args.timeout, self.args.convert_timeout)
        while indices:
            parent, child = multiprocessing.Pipe()
            every = (self.args.convert_every, self.args.execute_every)
            proc = multiprocessing.Process(target=_worker, args=(
                child, self.args.seed, indices, every, timeouts))
            proc.start()
            child.close()  # so a dead worker reads as EOF here, not as silence
            indices = self._drain(parent, proc, indices, timeouts)

    def _drain(self, conn, proc, indices, timeouts) -> list[int]:
        current = None
        limit = max(timeouts) + WATCHDOG_SLACK_S
        while True:
            if not conn.poll(limit):
                proc.kill()
                proc.join()
                return self._lost(current, "hang", "watchdog: no answer", indices)
            try:
                message = conn.recv()
            except EOFError:
                proc.join()
                return self._lost(current, "crash", f"worker exit {proc.exitcode}", indices)
            if message[0] == "start":
                current = message[1]
            elif message[0] == "done":
                self.record(*message[1:])
                current = None
            else:
                proc.join()
                return []

    def _lost(self, current, kind, detail, indices) -> list[int]:
        if current is None:
            return []
        _, _, applied = _input(self.args.seed, current)
        do_convert = _every(current, self.args.convert_every)
        self.record(current, kind, "", detail, applied, do_convert)
        return indices[indices.index(current) + 1:]


def _worker_slice(indices: list[int], workers: int, k: int) -> list[int]:
    return indices[k::workers]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--convert-every", type=int, default=50)
    parser.add_argument("--execute-every", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--convert-timeout", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "build" / "fuzz"))
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2 ** 31)
    print(f"fuzz_reader: seed {args.seed}, {args.inputs} inputs, {args.workers} workers, "
          f"convert every {args.convert_every}th input, reference executor every "
          f"{args.execute_every}th (0: never)", flush=True)
    start = time.perf_counter()
    run = _Run(args)
    indices = list(range(args.inputs))
    with multiprocessing.pool.ThreadPool(args.workers) as pool:
        pool.map(run.run_chunk, [_worker_slice(indices, args.workers, k)
                                 for k in range(args.workers)])
    elapsed = time.perf_counter() - start
    print(_table(run, elapsed))
    bad = sum(v for (kind, _), v in run.counts.items()
              if kind in ("untyped", "hang", "crash", "invalid-accepted"))
    return 1 if bad else 0


def _table(run: _Run, elapsed: float) -> str:
    total = sum(run.counts.values())
    executed = sum(_every(i, run.args.execute_every) for i in range(run.args.inputs))
    lines = [f"inputs: {total} (through convert: {run.converted}, through the reference "
             f"executor: {executed}), {elapsed:.0f} s, seed {run.args.seed}", "",
             "| outcome | inputs |", "|---|---:|"]
    order = ("ok", "typed", "untyped", "hang", "crash", "invalid-accepted")
    for kind in order:
        names = sorted(name for k, name in run.counts if k == kind)
        if kind in ("ok", "untyped", "hang", "crash", "invalid-accepted") and not names:
            names = [""]
        for name in names:
            label = f"{kind}: {name}" if name else kind
            lines.append(f"| {label} | {run.counts.get((kind, name), 0):,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
