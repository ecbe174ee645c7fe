#!/usr/bin/python3
"""Coordinator scaling benchmark: one real shoal-coordinator per case, driven by shoal-loadgen.

For each case (workers, model) it starts shoal-coordinator on tcp://127.0.0.1:* with an HTTP
port of 0, waits for its endpoint file, samples its idle RSS, runs shoal-loadgen with N
synthetic workers for a few rounds, samples the coordinator's VmRSS / VmHWM / open files every
50 ms from /proc, and reads the per-round records of RUN_DIR/metrics.jsonl (phase timings,
bytes in/out). Prints one table and writes the results as JSON to --out DIR.

Models: the built-in "mlp" (784-200-200-10: 199,210 parameters, 0.8 MB) for the worker sweep,
and the same mlp with model.input_shape=[1,500000] (200 x 500,000 first layer: 100,042,410
parameters, 400 MB) for the 100M case. A TorchScript model cannot reach 100M parameters: the
coordinator refuses model files above nn::kMaxScriptModelBytes (256 MiB, i.e. ~67M float32
parameters). Central evaluation is off (eval.format=none): no dataset, no LibTorch work in the
coordinator during rounds. Federated evaluation is on by default (the workers answer EvalTasks
instantly); --no-federated-eval isolates the training path.

Transport (--transport): tls (default) as real workers: a throwaway CA (shoalctl ca init) in
the work directory, the coordinator started with --ca-dir, and each synthetic worker with its
own enrolled certificate (shoal-loadgen --bundles, issued once and reused by every case) and its
own TLS 1.3 session; plain runs the coordinator with --insecure.
selection.min_workers = min_fit = N, so every round waits for all N workers.

Columns:
  peak RSS        VmHWM of the coordinator at the end of the run (max of all samples)
  idle            VmRSS after start-up, before any worker connected
  +models         (peak - idle) / model bytes: model-sized buffers the peak adds to idle
  xbase           (peak - base) / model bytes, base = the smallest idle RSS of the cases run
                  (a coordinator with the small model: LibTorch and libraries, ~165 MB); for
                  the 100M model the idle RSS already holds ~3 model sizes kept from start-up
  updates/s       updates accepted / collect phase seconds (median over rounds)
  agg GB/s        bytes of updates folded / (collect + aggregate) seconds (median over rounds):
                  the whole ingest path (receive, SHA-256, finite check, fold), not FedAvg alone
  in/out MB/rd    metrics.jsonl bytes_in / bytes_out per round (mean)
  fds             most open files of the coordinator
  stale s         largest age of /api/status updated_at seen (polled each second); the
                  coordinator republishes it every 200 ms from the housekeeping that also drops
                  silent workers, so a large value means housekeeping did not run
  reconn          synthetic workers that had to reconnect (silence or Welcome timeouts)

Usage:
  bench/coordinator_scale.sh [--quick] [--out DIR] [--bin-dir DIR] [--rounds N] ...  (builds the
  binaries when missing) or bench/coordinator_scale.py with the same options
Needs build/bin/shoal-coordinator and build/bin/shoal-loadgen (or --bin-dir), e.g.
  cmake -S . -B build -G Ninja && ninja -C build shoal-coordinator shoal-loadgen
"""
import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = {"label": "mlp 0.2M", "model": "mlp", "input_shape": [1, 28, 28], "num_classes": 10}
BIG = {"label": "mlp 100M", "model": "mlp", "input_shape": [1, 500000], "num_classes": 10}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status(pid):
    """VmRSS and VmHWM in bytes, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
            key, value = line.split(":", 1)
            parts = value.split()
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def model_params(run_dir):
    """Parameter count from versions/v000000.shw: magic, u64 spec_len, spec, u64 data_len."""
    path = os.path.join(run_dir, "versions", "v000000.shw")
    with open(path, "rb") as f:
        if f.read(8) != b"SHOALW01":
            raise RuntimeError(f"{path}: not a Shoal weights file")
        (spec_len,) = struct.unpack("<Q", f.read(8))
        f.seek(spec_len, os.SEEK_CUR)
        (data_len,) = struct.unpack("<Q", f.read(8))
    return data_len // 4


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written
    return out


def wait_for_file(path, proc, timeout):
    until = time.time() + timeout
    while time.time() < until:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path) as f:
                return f.read().strip()
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def raise_nofile(needed):
    """In the child before exec: the coordinator does not raise its own open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def coordinator_extra_flags(coordinator):
    """security.insecure once the secure channel is wired in (the coordinator refuses plain
    ZeroMQ without it); nothing before."""
    try:
        text = subprocess.run([coordinator, "--help"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    if "--insecure" in text:
        return ["--insecure"]
    if "security." in text:
        return ["--set", "security.insecure=true"]
    return []


class Sampler(threading.Thread):
    """Samples the coordinator's memory every `period` seconds and notes each round's peak."""

    def __init__(self, pid, run_dir, period=0.05):
        super().__init__(daemon=True)
        self.pid, self.run_dir, self.period = pid, run_dir, period
        self.stop = threading.Event()
        self.samples = []  # (t, rss, hwm)
        self.peak_rss = 0
        self.hwm = 0
        self.max_fds = 0
        self.max_threads = 0
        self.round_marks = []  # (round, t, rss at commit, max rss since previous commit)
        self.cpu_s = None
        self.t0 = time.time()

    def run(self):
        seen = 0
        window_max = 0
        n = 0
        while not self.stop.is_set():
            st = proc_status(self.pid)
            if st is None:
                break
            t = time.time() - self.t0
            rss, hwm = st.get("VmRSS", 0), st.get("VmHWM", 0)
            self.peak_rss = max(self.peak_rss, rss)
            self.hwm = max(self.hwm, hwm)
            self.max_threads = max(self.max_threads, st.get("Threads", 0))
            window_max = max(window_max, rss)
            fds = open_files(self.pid)
            if fds:
                self.max_fds = max(self.max_fds, fds)
            if n % 4 == 0:
                cpu = cpu_seconds(self.pid)
                if cpu is not None:
                    self.cpu_s = cpu
                self.samples.append((round(t, 3), rss, hwm))
            n += 1
            recs = read_metrics(self.run_dir)
            for rec in recs[seen:]:
                self.round_marks.append({"round": rec["round"], "t": round(t, 3), "rss": rss,
                                         "max_rss_in_round": window_max})
                window_max = rss
            seen = len(recs)
            time.sleep(self.period)


class StatusPoller(threading.Thread):
    """Polls GET /api/status once a second and records how stale its updated_at is: the round
    engine republishes every 200 ms from its housekeeping, so a large age means housekeeping
    (which also drops silent workers) did not run."""

    def __init__(self, port_file, period=1.0):
        super().__init__(daemon=True)
        self.port_file, self.period = port_file, period
        self.stop = threading.Event()
        self.max_age_s = 0.0
        self.polls = 0
        self.errors = 0
        self.ages = []  # (t, age, state)
        self.t0 = time.time()

    def run(self):
        port = None
        while not self.stop.is_set():
            if port is None and os.path.exists(self.port_file):
                with open(self.port_file) as f:
                    port = f.read().strip() or None
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status",
                                                timeout=2) as r:
                        st = json.loads(r.read())
                    upd = datetime.datetime.strptime(st["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
                    age = (datetime.datetime.utcnow() - upd).total_seconds()
                    self.polls += 1
                    self.max_age_s = max(self.max_age_s, age)
                    self.ages.append((round(time.time() - self.t0, 1), round(age, 2),
                                      st.get("state")))
                except Exception:  # the server is gone at the end of the run
                    self.errors += 1
            self.stop.wait(self.period)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_case(args, bins, workers, model, rounds, workdir, extra_flags, *, name=None,
             min_workers=None, round_timeout=None, fed_eval=None, train_ms=None,
             loadgen_extra=()):
    name = name or f"n{workers}-{model['model']}-{'x'.join(map(str, model['input_shape']))}"
    min_workers = min_workers or workers
    round_timeout = round_timeout or args.round_timeout
    fed_eval = (not args.no_federated_eval) if fed_eval is None else fed_eval
    train_ms = args.train_ms if train_ms is None else train_ms
    case_dir = os.path.join(workdir, name)
    os.makedirs(case_dir, exist_ok=True)
    run_dir = os.path.join(case_dir, "run")
    endpoint_file = os.path.join(case_dir, "endpoint")
    port_file = os.path.join(case_dir, "http_port")
    cmd = [bins["coordinator"],
           "--run-dir", run_dir,
           "--rounds", str(rounds),
           "--seed", "1",
           "--bind", "tcp://127.0.0.1:*",
           "--endpoint-file", endpoint_file,
           "--model", model["model"],
           "--min-workers", str(min_workers),
           "--min-fit", str(min_workers),
           "--fraction", "1.0",
           "--round-timeout", str(round_timeout),
           "--http-port", "0",
           "--set", f"model.input_shape={json.dumps(model['input_shape'])}",
           "--set", f"model.num_classes={model['num_classes']}",
           "--set", f"http.port_file={port_file}",
           "--set", "http.linger_s=1",
           "--set", "eval.format=none",
           "--set", f"eval.federated={'true' if fed_eval else 'false'}",
           "--set", f"eval.timeout_s={args.round_timeout}",
           "--set", f"selection.wait_timeout_s={args.round_timeout}",
           "--set", f"runtime.log_level={args.log_level}",
           ] + extra_flags + [a for x in args.coordinator_set for a in ("--set", x)]
    log(f"case {name}: {workers} workers, {model['label']}, {rounds} rounds")
    load_before = os.getloadavg()
    coord_log = open(os.path.join(case_dir, "coordinator.log"), "w")
    nofile = workers * 2 + 1024
    t_start = time.time()
    coord = subprocess.Popen(cmd, stdout=coord_log, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: raise_nofile(nofile))
    loadgen = None
    result = {"case": name, "workers": workers, "min_workers": min_workers, "model": model["label"],
              "model_name": model["model"], "input_shape": model["input_shape"],
              "rounds_requested": rounds, "federated_eval": fed_eval,
              "coordinator_cmd": cmd}
    try:
        endpoint = wait_for_file(endpoint_file, coord, args.start_timeout)
        if endpoint is None:
            raise RuntimeError(f"coordinator did not start (rc={coord.poll()}); see "
                               f"{case_dir}/coordinator.log")
        startup_s = time.time() - t_start
        time.sleep(1.0)  # let start-up allocations settle
        idle = proc_status(coord.pid) or {}
        sampler = Sampler(coord.pid, run_dir)
        sampler.start()
        poller = StatusPoller(port_file)
        poller.start()
        lg_cmd = [bins["loadgen"], "--coordinator", endpoint, "--workers", str(workers),
                  "--input-shape", ",".join(map(str, model["input_shape"])),
                  "--num-classes", str(model["num_classes"]),
                  "--num-val", "100" if fed_eval else "0",
                  "--train-ms", str(train_ms),
                  "--timeout", str(args.case_timeout),
                  "--summary", os.path.join(case_dir, "loadgen.json"),
                  "--log-level", "warn"] + list(loadgen_extra) + args.loadgen_arg
        lg_log = open(os.path.join(case_dir, "loadgen.log"), "w")
        t_lg = time.time()
        loadgen = subprocess.Popen(lg_cmd, stdout=lg_log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: raise_nofile(workers * 3 + 1024))
        deadline = t_lg + args.case_timeout + 30
        one_done_at = None  # when the first of the two processes exited
        while time.time() < deadline:
            c, g = coord.poll(), loadgen.poll()
            if c is not None and g is not None:
                break
            if (c is not None or g is not None) and one_done_at is None:
                one_done_at = time.time()
            if one_done_at is not None and time.time() > one_done_at + 30:
                break  # e.g. the load generator died: the coordinator would wait for ever
            time.sleep(0.1)
        timed_out = coord.poll() is None or loadgen.poll() is None
        for p in (loadgen, coord):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (loadgen, coord):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sampler.stop.set()
        sampler.join()
        poller.stop.set()
        poller.join()
        wall = time.time() - t_lg
        metrics = read_metrics(run_dir)
        params = model_params(run_dir)
        model_bytes = params * 4
        try:
            with open(os.path.join(case_dir, "loadgen.json")) as f:
                lg = json.load(f)
        except (OSError, json.JSONDecodeError):
            lg = None
        per_round = []
        for rec in metrics:
            ph = rec.get("phases_s", {})
            n = len(rec.get("participants", []))
            collect, agg = ph.get("collect", 0.0), ph.get("aggregate", 0.0)
            per_round.append({
                "round": rec["round"], "updates": n, "wall_s": rec.get("wall_s"),
                "phases_s": ph, "bytes_in": rec.get("bytes_in"), "bytes_out": rec.get("bytes_out"),
                "updates_per_s": n / collect if collect > 0 else None,
                "agg_gb_per_s": n * model_bytes / (collect + agg) / 1e9 if collect + agg > 0 else None,
                "finish_gb_per_s": 3 * model_bytes / agg / 1e9 if agg > 0 else None,
            })
        peak = max(sampler.hwm, sampler.peak_rss)
        idle_rss = idle.get("VmRSS", 0)
        result.update({
            "ok": coord.returncode == 0 and len(metrics) == rounds and not timed_out,
            "coordinator_rc": coord.returncode, "loadgen_rc": loadgen.returncode,
            "timed_out": timed_out, "startup_s": startup_s, "wall_s": wall,
            "params": params, "model_bytes": model_bytes, "rounds": len(metrics),
            "idle_rss": idle_rss, "idle_hwm": idle.get("VmHWM", 0), "peak_rss": peak,
            "peak_over_idle_models": (peak - idle_rss) / model_bytes,
            "max_open_files": sampler.max_fds, "max_threads": sampler.max_threads,
            "coordinator_cpu_s": sampler.cpu_s,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "status_max_age_s": poller.max_age_s, "status_polls": poller.polls,
            "status_ages": poller.ages,
            "round_marks": sampler.round_marks,
            "rss_samples": sampler.samples[::max(1, len(sampler.samples) // 400)],
            "per_round": per_round,
            "updates_per_s": median([r["updates_per_s"] for r in per_round if r["updates_per_s"]]),
            "agg_gb_per_s": median([r["agg_gb_per_s"] for r in per_round if r["agg_gb_per_s"]]),
            "collect_s": median([r["phases_s"].get("collect", 0) for r in per_round]),
            "broadcast_s": median([r["phases_s"].get("broadcast", 0) for r in per_round]),
            "aggregate_s": median([r["phases_s"].get("aggregate", 0) for r in per_round]),
            "evaluate_s": median([r["phases_s"].get("evaluate", 0) for r in per_round]),
            "commit_s": median([r["phases_s"].get("commit", 0) for r in per_round]),
            "round_wall_s": median([r["wall_s"] for r in per_round if r["wall_s"]]),
            "bytes_in_per_round": statistics.mean([r["bytes_in"] for r in per_round]) if per_round else None,
            "bytes_out_per_round": statistics.mean([r["bytes_out"] for r in per_round]) if per_round else None,
            "loadgen": lg,
        })
        if not result["ok"]:
            log(f"case {name} did not finish cleanly: coordinator rc={coord.returncode}, "
                f"{len(metrics)}/{rounds} rounds, timed_out={timed_out}; logs in {case_dir}")
        result["case_dir"] = case_dir
        return result
    finally:
        for p in (loadgen, coord):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        coord_log.close()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)  # version files: up to GBs per case


def log_times(path, pattern):
    """worker name -> time (s since the epoch) of the first coordinator.log line matching."""
    out = {}
    with open(path) as f:
        for line in f:
            if pattern not in line or "worker=" not in line:
                continue
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            worker = line.split("worker=", 1)[1].split()[0]
            out.setdefault(worker, stamp)
    return out


def liveness_case(args, bins, workdir, extra_flags, workers=200, vanish=50):
    """Silent workers must be dropped peer_timeout_ms (20 s) after their last message, whatever
    the other workers are doing. The last `vanish` workers close their connection right after
    Welcome; the others train for 30 s per round (heartbeating meanwhile). min_workers is the
    live count, so round 1 starts at once. Healthy: every vanished worker is dropped ~20 s after
    its admission and round 2 selects only live workers (wall ~30 s). Housekeeping starved by
    steady traffic: drops come late (at a phase boundary), round 2 selects the dead workers and
    runs to its 60 s deadline."""
    live = workers - vanish
    r = run_case(args, bins, workers, SMALL, 2, workdir, extra_flags,
                 name=f"liveness-n{workers}-vanish{vanish}", min_workers=live,
                 round_timeout=60, fed_eval=False, train_ms=30000,
                 loadgen_extra=["--vanish", str(vanish)])
    log_path = os.path.join(r["case_dir"], "coordinator.log")
    admitted = log_times(log_path, " admitted (")
    dropped = log_times(log_path, " lost: no message")
    digits = max(4, len(str(workers)))
    names = [f"lg-{i:0{digits}d}" for i in range(live + 1, workers + 1)]
    delays = [dropped[n] - admitted[n] for n in names if n in dropped and n in admitted]
    attempts = []  # every round start, committed or not: "round=1 started: ... selected=200 of 200"
    with open(log_path) as f:
        for line in f:
            if " started: version=" in line and "selected=" in line:
                sel = line.split("selected=", 1)[1].split()
                attempts.append({"round": int(line.split("round=", 1)[1].split()[0]),
                                 "selected": int(sel[0]), "connected": int(sel[2]),
                                 "time": line[11:23]})
            elif "not committed" in line:
                attempts[-1]["committed"] = False
    r.update({
        "round_attempts": attempts,
        "vanished": vanish,
        "dropped": len(delays),
        "drop_delay_s": {"min": min(delays), "max": max(delays)} if delays else None,
        "selected_per_round": [p.get("updates") for p in r.get("per_round", [])],
        "round_wall_per_round_s": [p.get("wall_s") for p in r.get("per_round", [])],
    })
    return r


def fmt_mb(b):
    return f"{b / 2**20:.0f}" if b is not None else "-"


def table(results):
    measured = [r for r in results if "params" in r and not r.get("liveness")]
    base = min((r["idle_rss"] for r in measured), default=0)
    head = (f"{'workers':>7} {'params':>11} {'rounds':>6} {'peak RSS MB':>11} {'idle MB':>7} "
            f"{'+models':>7} {'xbase':>6} {'updates/s':>9} {'agg GB/s':>8} {'collect s':>9} {'round s':>7} "
            f"{'in MB/rd':>9} {'out MB/rd':>9} {'fds':>5} {'stale s':>7} {'reconn':>6}")
    lines = [head, "-" * len(head)]
    lines[0:0] = [f"base (smallest idle RSS) {fmt_mb(base)} MB"]
    for r in results:
        if r.get("liveness"):
            continue
        if "params" not in r:
            lines.append(f"{r['workers']:>7} {r['model']:>11}  FAILED: {r.get('error', '?')}")
            continue
        lines.append(
            f"{r['workers']:>7} {r['params']:>11,} {r['rounds']:>6} {fmt_mb(r['peak_rss']):>11} "
            f"{fmt_mb(r['idle_rss']):>7} {r['peak_over_idle_models']:>7.1f} "
            f"{(r['peak_rss'] - base) / r['model_bytes']:>6.1f} "
            f"{r['updates_per_s']:>9.1f} {r['agg_gb_per_s']:>8.2f} {r['collect_s']:>9.2f} "
            f"{r['round_wall_s']:>7.2f} {fmt_mb(r['bytes_in_per_round']):>9} "
            f"{fmt_mb(r['bytes_out_per_round']):>9} {r['max_open_files']:>5} "
            f"{r['status_max_age_s']:>7.1f} {(r['loadgen'] or {}).get('reconnects', -1):>6}"
            + ("" if r["ok"] else "  (incomplete)"))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="10 and 100 workers, small model, 2 rounds (under a minute)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"),
                    help="directory for the JSON results (default bench/results/)")
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "build", "bin"),
                    help="where shoal-coordinator and shoal-loadgen are (default build/bin)")
    ap.add_argument("--workers", default="10,100,1000",
                    help="worker counts for the small model (comma-separated)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per small-model case")
    ap.add_argument("--big-workers", default="10",
                    help="worker counts for the 100M-parameter model ('' to skip)")
    ap.add_argument("--big-rounds", type=int, default=3, help="rounds per 100M-parameter case")
    ap.add_argument("--no-federated-eval", action="store_true",
                    help="eval.federated=false: no EvalTask broadcast after each round")
    ap.add_argument("--train-ms", type=float, default=0, help="simulated training time per round")
    ap.add_argument("--round-timeout", type=float, default=1800,
                    help="selection.round_timeout_s and wait/eval timeouts")
    ap.add_argument("--case-timeout", type=float, default=1800, help="give up on a case after this")
    ap.add_argument("--start-timeout", type=float, default=120)
    ap.add_argument("--log-level", default="info", help="coordinator runtime.log_level")
    ap.add_argument("--coordinator-set", action="append", default=[],
                    help="extra coordinator override section.key=value (repeatable)")
    ap.add_argument("--loadgen-arg", action="append", default=[],
                    help="extra shoal-loadgen argument (repeatable, e.g. --loadgen-arg=--connect-rate=500)")
    ap.add_argument("--liveness", action="store_true",
                    help="also run the liveness case (200 workers, 50 vanish; ~2 minutes)")
    ap.add_argument("--transport", choices=["tls", "plain"], default="tls",
                    help="tls (default): the secure channel with per-worker certificates; "
                         "plain: the coordinator runs --insecure")
    ap.add_argument("--work-dir", default=None, help="case directories (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep run directories (version files)")
    args = ap.parse_args()

    bins = {"coordinator": os.path.join(args.bin_dir, "shoal-coordinator"),
            "loadgen": os.path.join(args.bin_dir, "shoal-loadgen")}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found; build it: cmake -S {REPO} -B build -G Ninja && "
                     f"ninja -C build shoal-coordinator shoal-loadgen (or pass --bin-dir)")
    if args.quick:
        cases = [(10, SMALL, 2), (100, SMALL, 2)]
    else:
        cases = [(int(n), SMALL, args.rounds) for n in args.workers.split(",") if n.strip()]
        cases += [(int(n), BIG, args.big_rounds) for n in args.big_workers.split(",") if n.strip()]
    workdir = args.work_dir or tempfile.mkdtemp(prefix="shoal-scale-")
    os.makedirs(workdir, exist_ok=True)
    if args.transport == "tls":
        shoalctl = os.path.join(args.bin_dir, "shoalctl")
        if not os.access(shoalctl, os.X_OK):
            sys.exit(f"{shoalctl} not found (needed for --transport tls); build it or pass "
                     "--transport plain")
        ca = os.path.join(workdir, "pki", "ca")
        if not os.path.exists(os.path.join(ca, "ca.crt")):
            subprocess.run([shoalctl, "ca", "init", ca], check=True, capture_output=True, timeout=120)
        extra = ["--ca-dir", ca]
        args.loadgen_arg += ["--bundles", os.path.join(workdir, "pki", "bundles"), "--ca-dir", ca]
    else:
        extra = coordinator_extra_flags(bins["coordinator"])
    log(f"case directories in {workdir}" + (f"; coordinator flags {extra}" if extra else ""))

    results = []
    t0 = time.time()
    for workers, model, rounds in cases:
        try:
            r = run_case(args, bins, workers, model, rounds, workdir, extra)
        except Exception as e:  # report the case and go on with the others
            log(f"case {workers} workers {model['label']} failed: {e}")
            r = {"workers": workers, "model": model["label"], "ok": False, "error": str(e)}
        results.append(r)
        if "params" in r:
            log(f"  peak RSS {fmt_mb(r['peak_rss'])} MB (idle {fmt_mb(r['idle_rss'])} MB, "
                f"+{r['peak_over_idle_models']:.1f} models), {r['updates_per_s']:.1f} updates/s, "
                f"{r['agg_gb_per_s']:.2f} GB/s, round {r['round_wall_s']:.2f} s")

    text = table(results)
    if args.liveness:
        try:
            lv = liveness_case(args, bins, workdir, extra)
            d = lv.get("drop_delay_s") or {}
            line = (f"liveness: {lv['dropped']} of {lv['vanished']} vanished workers dropped, "
                    f"{d.get('min', float('nan')):.1f}-{d.get('max', float('nan')):.1f} s after they "
                    f"went silent (peer_timeout 20 s); rounds started (selected/connected): "
                    + ", ".join(f"r{a['round']} {a['selected']}/{a['connected']}"
                                + ("" if a.get("committed", True) else " not committed")
                                for a in lv["round_attempts"])
                    + f"; total {lv['wall_s']:.0f} s")
        except Exception as e:
            lv, line = {"ok": False, "error": str(e)}, f"liveness case failed: {e}"
        results.append(dict(lv, liveness=True))
        text += "\n" + line
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"coordinator_scale-{stamp}{'-quick' if args.quick else ''}.json")
    with open(path, "w") as f:
        json.dump({"benchmark": "coordinator_scale", "time": stamp, "quick": args.quick,
                   "transport": args.transport,
                   "host": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
                   "args": vars(args), "seconds": time.time() - t0, "table": text,
                   "results": results}, f, indent=1)
    print(f"results: {path}")
    if not args.work_dir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
