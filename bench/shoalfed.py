"""Launches a real Shoal federation on this machine and measures it (a bench/ helper).

One coordinator and N workers run as separate processes over loopback, exactly as
scripts/demo.sh starts them. While they run, this module follows the coordinator's log and
metrics.jsonl every SAMPLE_S seconds, with the CPU time (utime + stime) of every process and
the machine's total busy CPU (/proc/stat, so CPU used by anything else on the machine shows up
as "foreign" CPU) read just before, to cut the counters at each round's start and commit; peak
RSS (VmHWM, kept by the kernel) and the coordinator's evaluator child are looked up every
MEM_SAMPLE_S seconds and at the end. (Reading every process's status and the coordinator's
threads' children five times a second cost the measuring process ~1% of a core, which the
round-overhead figures carried.) Afterwards it parses metrics.jsonl (one record
per round: phases, bytes, accuracy) and the workers' "trained: ... seconds=" lines.

Only the standard library is used; the processes it starts are ended by their own PIDs.
"""
import datetime
import json
import os
import re
import signal
import subprocess
import time

SAMPLE_S = 0.2
MEM_SAMPLE_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
DATASET = "/usr/share/datasets/fashion-mnist"

_ROUND_STARTED = re.compile(r"round=(\d+) started")
_TRAINED = re.compile(
    r"round=(\d+) worker=(\S+) trained: epochs=\d+ samples=(\d+) loss=\S+ seconds=([0-9.]+)")
_SILO = re.compile(r"worker=(\S+) silo .* train=(\d+) val=(\d+)")
_PARAMS = re.compile(r"initial model (\S+) with (\d+) parameters")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# /proc readers. Each returns None once the process is gone.

def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def proc_children(pid):
    """Child pids of every thread of `pid` (the coordinator's shoal-evaluator)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def proc_mem_kib(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return out


def tcp_bytes(port):
    """Per TCP connection to 127.0.0.1:port, seen from the connecting side (the workers):
    {local port: (bytes received, bytes acked)} from the kernel's tcp_info (ss -ti). These
    are bytes on the wire: TLS records and ZeroMQ framing included, heartbeats too.
    (/proc/PID/io cannot do this: ZeroMQ uses send()/recv(), which rchar/wchar do not count.)"""
    try:
        out = subprocess.run(["ss", "-tinH", "state", "established", f"dport = :{port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    conns, local = {}, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            parts = line.split()
            local = parts[-2].rsplit(":", 1)[1] if len(parts) >= 2 else None
            continue
        rx = re.search(r"bytes_received:(\d+)", line)
        tx = re.search(r"bytes_acked:(\d+)", line)
        if local:
            conns[local] = (int(rx.group(1)) if rx else 0, int(tx.group(1)) if tx else 0)
    return conns


def machine_cpu_s():
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


def parse_iso_utc(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def parse_log_time(line):
    """spdlog timestamps are local time."""
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + float(
        "0" + m.group(1)[19:])


# ---------------------------------------------------------------------------------------
# Tools.

def run_tool(cmd, log_path=None, timeout=600, cwd=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, cwd=cwd)
    if log_path:
        with open(log_path, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n" + p.stdout)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}")
    return p.stdout


def partition(bins, out_dir, workers, scheme="iid", alpha=0.5, seed=7, limit=0, log_path=None):
    """Splits Fashion-MNIST's training set into out_dir/silo-1..N (skipped if already there)."""
    if os.path.isdir(os.path.join(out_dir, f"silo-{workers}")):
        return out_dir
    cmd = [bins["shoalctl"], "partition", "--source", DATASET, "--workers", str(workers),
           "--scheme", scheme, "--alpha", str(alpha), "--seed", str(seed), "--out", out_dir]
    if limit:
        cmd += ["--limit", str(limit)]
    run_tool(cmd, log_path)
    return out_dir


class Security:
    """How the processes talk: 'plain' ZeroMQ, or the TLS channel with a throwaway PKI.

    Detected from the binaries: when both executables' --help offer --insecure, the channel is
    wired in and they refuse to start without a CA / enrollment bundle unless told --insecure.
    """

    def __init__(self, bins, requested, work_dir, log_path=None):
        self.bins = bins

        def help_text(binary):
            return subprocess.run([bins[binary], "--help"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True).stdout
        coord, worker = help_text("shoal-coordinator"), help_text("shoal-worker")
        self.supported = "--insecure" in coord and "--insecure" in worker
        self.ca_flag = "--ca-dir" if "--ca-dir" in coord else None
        self.bundle_flag = "--bundle" if "--bundle" in worker else None
        if requested == "tls" and not self.supported:
            raise BenchError("--secure asked for, but these binaries have no TLS wiring")
        self.mode = "tls" if (self.supported and requested != "plain") else "plain"
        self.work_dir = work_dir
        self.log_path = log_path
        self.ca_dir = None
        self.bundles = {}

    def coordinator_args(self):
        if self.mode == "plain":
            return ["--insecure"] if self.supported else []
        self._ensure_ca()
        return [self.ca_flag, self.ca_dir] if self.ca_flag else ["--set", f"security.ca_dir={self.ca_dir}"]

    def worker_args(self, name):
        if self.mode == "plain":
            return ["--insecure"] if self.supported else []
        self._ensure_ca()
        if name not in self.bundles:
            bundle = os.path.join(self.work_dir, "pki", "bundles", name)
            run_tool([self.bins["shoalctl"], "enroll", name, "--ca", self.ca_dir, "--out", bundle],
                     self.log_path)
            self.bundles[name] = bundle
        b = self.bundles[name]
        return [self.bundle_flag, b] if self.bundle_flag else ["--set", f"security.bundle={b}"]

    def _ensure_ca(self):
        # As scripts/demo.sh provisions a federation: one CA, one enrollment bundle per worker.
        if self.ca_dir:
            return
        os.makedirs(os.path.join(self.work_dir, "pki"), exist_ok=True)
        self.ca_dir = os.path.join(self.work_dir, "pki", "ca")
        run_tool([self.bins["shoalctl"], "ca", "init", self.ca_dir], self.log_path)


# ---------------------------------------------------------------------------------------

class Federation:
    """One run: coordinator + workers, sampled until the coordinator exits.

    name:        sub-directory of work_dir for this run (run dir, logs).
    silos:       directory holding silo-1..N (from partition()).
    coord_args / worker_args: extra flags (e.g. ["--eval-limit", "500"]).
    stop_at_acc: stop the run (SIGTERM to the coordinator) once central accuracy reaches it.
    on_round:    called as each round commits, with its metrics record and the seconds since launch.
    """

    def __init__(self, bins, repo, work_dir, name, model, workers, silos, rounds, security,
                 coord_args=(), worker_args=(), stop_at_acc=None, timeout_s=1800, on_round=None):
        self.bins, self.repo, self.name, self.model = bins, repo, name, model
        self.workers, self.silos, self.rounds = workers, silos, rounds
        self.security = security
        self.coord_args, self.worker_args = list(coord_args), list(worker_args)
        self.stop_at_acc, self.timeout_s = stop_at_acc, timeout_s
        self.on_round = on_round  # called with (metrics record, seconds since launch)
        self.dir = os.path.join(work_dir, name)
        self.run_dir = os.path.join(self.dir, "run")
        self.log_dir = os.path.join(self.dir, "logs")

    def run(self):
        os.makedirs(self.log_dir, exist_ok=True)
        endpoint_file = os.path.join(self.dir, "endpoint")
        # No --config: every setting that matters is given here (the demo's configs/*.toml
        # change with the demo; the measurement should not), the rest are the documented
        # defaults. Training as in the Flower comparison: 1 local epoch, batch 32,
        # SGD lr 0.05, one thread per process; every connected worker selected each round.
        coord_cmd = [
            self.bins["shoal-coordinator"],
            "--run-dir", self.run_dir, "--rounds", str(self.rounds), "--seed", "42",
            "--model", self.model, "--min-workers", str(self.workers), "--min-fit", str(self.workers),
            "--fraction", "1.0", "--epochs", "1", "--batch-size", "32", "--lr", "0.05",
            "--bind", "tcp://127.0.0.1:*", "--endpoint-file", endpoint_file,
            "--set", "http.port=0", "--set", "http.port_file=" + os.path.join(self.dir, "http_port"),
            "--set", "runtime.threads=1", "--set", "selection.wait_timeout_s=300",
            "--set", "network.chunk_bytes=1048576", "--set", "network.max_concurrent_uploads=2",
            "--set", f"eval.path={DATASET}", "--set", "eval.split=t10k",
        ] + self.security.coordinator_args() + self.coord_args
        worker_cmds = []
        for i in range(1, self.workers + 1):
            name = f"silo-{i}"
            worker_cmds.append([
                self.bins["shoal-worker"], "--name", name, "--data", os.path.join(self.silos, name),
                "--threads", "1", "--set", "data.val_fraction=0.1",
            ] + self.security.worker_args(name) + self.worker_args)

        procs = {}  # role -> Popen
        files = []
        peak_kib = {}
        cpu_last = {}
        snapshots = {"start": {}, "end": {}}
        records = []
        log_pos = 0
        early_stopped = False
        t_launch = time.time()
        try:
            def spawn(role, cmd, coordinator_endpoint=None):
                if coordinator_endpoint:
                    cmd = cmd + ["--coordinator", coordinator_endpoint]
                err = open(os.path.join(self.log_dir, f"{role}.log"), "w")
                out = open(os.path.join(self.log_dir, f"{role}.out"), "w")
                files.extend([err, out])
                with open(os.path.join(self.log_dir, "commands.txt"), "a") as f:
                    f.write(" ".join(cmd) + "\n")
                procs[role] = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=self.repo)

            evaluator = []  # the coordinator's LibTorch process (shoal-evaluator), its child

            def pids():
                return [(role, p.pid) for role, p in procs.items()] + evaluator

            def sample_memory():
                # Measured on its own and counted in Shoal's CPU; looked up again after a
                # restart of it.
                if "coordinator" in procs:
                    evaluator[:] = [("evaluator", c)
                                    for c in proc_children(procs["coordinator"].pid)[:1]]
                for role, pid in pids():
                    m = proc_mem_kib(pid)
                    if m and "VmHWM" in m:
                        peak_kib[role] = max(peak_kib.get(role, 0), m["VmHWM"])

            def sample():
                for role, pid in pids():
                    c = proc_cpu_s(pid)
                    if c is not None:
                        cpu_last[role] = c
                busy, total = machine_cpu_s()
                return {"t": time.time(), "cpu": dict(cpu_last), "machine_busy_s": busy,
                        "machine_total_s": total}

            spawn("coordinator", coord_cmd)
            coord = procs["coordinator"]
            deadline = time.time() + 120
            while not (os.path.exists(endpoint_file) and os.path.getsize(endpoint_file) > 0):
                if coord.poll() is not None or time.time() > deadline:
                    raise BenchError(f"{self.name}: coordinator did not start:\n" +
                                     _tail(os.path.join(self.log_dir, "coordinator.log")))
                time.sleep(0.05)
            t_endpoint = time.time()
            with open(endpoint_file) as f:
                endpoint = f.read().strip()
            coord_port = endpoint.rsplit(":", 1)[1]
            for i, cmd in enumerate(worker_cmds, 1):
                spawn(f"worker-{i}", cmd, endpoint)

            metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
            coord_log = os.path.join(self.log_dir, "coordinator.log")
            metrics_buf = ""
            metrics_pos = 0
            hard_deadline = t_launch + self.timeout_s
            last_mem = 0.0
            while True:
                if time.time() - last_mem >= MEM_SAMPLE_S:
                    sample_memory()
                    last_mem = time.time()
                snap = sample()
                # Round starts, from the coordinator's log.
                try:
                    with open(coord_log) as f:
                        f.seek(log_pos)
                        chunk = f.read()
                    cut = chunk.rfind("\n") + 1
                    log_pos += cut
                    for line in chunk[:cut].splitlines():
                        m = _ROUND_STARTED.search(line)
                        if m:
                            if "tcp" not in snap:
                                snap["tcp"] = tcp_bytes(coord_port)
                            snapshots["start"][int(m.group(1))] = snap  # a retry overwrites
                except OSError:
                    pass
                # Round commits, from metrics.jsonl.
                if os.path.exists(metrics_path):
                    with open(metrics_path) as f:
                        f.seek(metrics_pos)
                        data = f.read()
                    metrics_pos += len(data.encode())
                    metrics_buf += data
                    while "\n" in metrics_buf:
                        line, metrics_buf = metrics_buf.split("\n", 1)
                        if not line.strip():
                            continue
                        rec = json.loads(line)
                        records.append(rec)
                        if "tcp" not in snap:
                            snap["tcp"] = tcp_bytes(coord_port)
                        snapshots["end"][rec["round"]] = snap
                        if self.on_round:
                            self.on_round(rec, parse_iso_utc(rec["time"]) - t_launch)
                        acc = (rec.get("central") or {}).get("accuracy")
                        if (self.stop_at_acc is not None and acc is not None and
                                acc >= self.stop_at_acc and not early_stopped and
                                rec["round"] < self.rounds):
                            early_stopped = True
                            coord.send_signal(signal.SIGTERM)
                if coord.poll() is not None:
                    break
                for role, p in procs.items():
                    if role != "coordinator" and p.poll() not in (None, 0) and not early_stopped:
                        raise BenchError(f"{self.name}: {role} exited with {p.returncode} during the run:\n" +
                                         _tail(os.path.join(self.log_dir, f"{role}.log")))
                if time.time() > hard_deadline:
                    raise BenchError(f"{self.name}: run did not finish within {self.timeout_s} s")
                time.sleep(SAMPLE_S)
            t_end = time.time()
            if coord.returncode != 0 and not early_stopped:
                raise BenchError(f"{self.name}: coordinator exited with {coord.returncode}:\n" +
                                 _tail(coord_log))
            # Workers leave on the coordinator's Shutdown message.
            wait_until = time.time() + 20
            while time.time() < wait_until and any(p.poll() is None for p in procs.values()):
                sample_memory()
                sample()
                time.sleep(SAMPLE_S)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for f in files:
                f.close()
        return self._summarize(records, snapshots, peak_kib, t_launch, t_endpoint, t_end,
                               early_stopped, coord.returncode)

    def _summarize(self, records, snapshots, peak_kib, t_launch, t_endpoint, t_end, early_stopped,
                   coord_rc):
        coord_log = _read(os.path.join(self.log_dir, "coordinator.log"))
        params = None
        m = _PARAMS.search(coord_log)
        if m:
            params = int(m.group(2))
        train_s = {}    # round -> {worker: seconds}
        silo = {}
        for i in range(1, self.workers + 1):
            text = _read(os.path.join(self.log_dir, f"worker-{i}.log"))
            for m in _TRAINED.finditer(text):
                train_s.setdefault(int(m.group(1)), {})[m.group(2)] = {
                    "seconds": float(m.group(4)), "samples": int(m.group(3))}
            for m in _SILO.finditer(text):
                silo[m.group(1)] = {"train": int(m.group(2)), "val": int(m.group(3))}

        rounds = []
        started = {rec["round"]: parse_iso_utc(rec["started_at"]) for rec in records
                   if rec.get("started_at")}
        for rec in records:
            r = rec["round"]
            phases = rec.get("phases_s", {})
            busy = sum(phases.values())
            wall = rec.get("wall_s", busy)
            ev = rec.get("evaluation") or {}
            # A round's time is from its start to the next round's start: with eval.overlap the
            # evaluation of its version runs in the next round, and wall_s (start to commit) does
            # not include it. The last round lasts until its evaluation is in.
            if r in started and r + 1 in started:
                round_s = started[r + 1] - started[r]
            elif ev.get("overlapped"):
                round_s = wall + ev.get("seconds", 0)
            else:
                round_s = wall
            if r == 1:  # without the first round's WAIT for the workers' start-up
                round_s -= max(0.0, wall - busy)
            workers = rec.get("workers", {})
            train_cpu = [w["train_cpu_s"] for w in workers.values() if "train_cpu_s" in w]
            eval_cpu = None
            if "central_cpu_s" in ev or "federated_cpu_s" in ev:
                eval_cpu = ev.get("central_cpu_s", 0) + ev.get("federated_cpu_s", 0)
            at = rec.get("evaluated_at") or rec["time"]
            row = {
                "round": r,
                "committed_at_s": parse_iso_utc(rec["time"]) - t_launch,
                # When the round's accuracy was known (time-to-accuracy counts to here).
                "evaluated_at_s": parse_iso_utc(at) - t_launch,
                "started_at_s": started[r] - t_launch if r in started else None,
                "wall_s": wall,
                # WAIT (for min_workers) + SELECT: the first round's WAIT is the workers' start-up.
                "unaccounted_s": max(0.0, wall - busy),
                "round_s": round_s,
                "evaluation": ev,
                # CPU seconds of the training threads (all workers) and of the evaluations of the
                # round's version (central + federated), as the processes measured them.
                "train_cpu_s": sum(train_cpu) if len(train_cpu) == len(workers) and workers else None,
                "eval_cpu_s": eval_cpu,
                "phases_s": phases,
                "max_worker_train_s": rec.get("max_worker_train_s"),
                # name -> samples, train_s, train_loss, ready_s, accepted_s (seconds into the round)
                "workers": rec.get("workers", {}),
                "samples": rec.get("samples"),
                "selected": rec.get("selected"),
                "participants": len(rec.get("participants", [])),
                "central_acc": (rec.get("central") or {}).get("accuracy"),
                "central_loss": (rec.get("central") or {}).get("loss"),
                "central_count": (rec.get("central") or {}).get("count", 0),
                "federated_acc": (rec.get("federated") or {}).get("accuracy"),
                "federated_count": (rec.get("federated") or {}).get("count", 0),
                "train_loss": rec.get("train_loss"),
                "bytes_in": rec.get("bytes_in"),
                "bytes_out": rec.get("bytes_out"),
                "worker_train_s": train_s.get(r, {}),
            }
            # The round's window: its start to the next round's start (its record arrives only
            # when its evaluation is in, part-way through the next round).
            s = snapshots["start"].get(r)
            e = snapshots["start"].get(r + 1) or snapshots["end"].get(r)
            if s and e and e["t"] > s["t"]:
                ours = sum(e["cpu"].get(k, 0) - s["cpu"].get(k, 0) for k in e["cpu"])
                machine = e["machine_busy_s"] - s["machine_busy_s"]
                span = e["t"] - s["t"]
                row["cpu"] = {
                    "window_s": span,
                    "shoal_cpu_s": ours,
                    "by_process_s": {k: e["cpu"][k] - s["cpu"].get(k, 0) for k in sorted(e["cpu"])},
                    "coordinator_cpu_s": e["cpu"].get("coordinator", 0) - s["cpu"].get("coordinator", 0),
                    "foreign_cpu_s": max(0.0, machine - ours),
                    "cores_busy_shoal": ours / span,
                    "cores_busy_machine": machine / span,
                }
            # Bytes on the wire per worker connection from this round's start to the next's
            # (everything the round sent and received, its version's evaluation included); only
            # connections present at both. Round 1's start is before the workers connect.
            if r > 1 and s and e and s is not e and s.get("tcp") and e.get("tcp"):
                a, b = s["tcp"], e["tcp"]
                row["wire_bytes_per_connection"] = [
                    {"to_worker": b[k][0] - a[k][0], "from_worker": b[k][1] - a[k][1]}
                    for k in sorted(b) if k in a]
            rounds.append(row)
        first_start = None
        if rounds:
            first_start = rounds[0]["started_at_s"]
            if first_start is None:
                first_start = rounds[0]["committed_at_s"] - rounds[0]["round_s"]
            else:  # after the WAIT for the workers to start
                first_start += rounds[0]["unaccounted_s"]
        return {
            "name": self.name,
            "model": self.model,
            "workers": self.workers,
            "rounds_requested": self.rounds,
            "rounds_done": len(rounds),
            "early_stopped": early_stopped,
            "stop_at_acc": self.stop_at_acc,
            "coordinator_exit": coord_rc,
            "transport": self.security.mode,
            "parameters": params,
            "model_bytes": 4 * params if params else None,
            "coordinator_ready_s": t_endpoint - t_launch,
            "first_round_start_s": first_start,
            "total_s": t_end - t_launch,
            "peak_rss_mib": {k: v / 1024 for k, v in sorted(peak_kib.items())},
            "silos": silo,
            "rounds": rounds,
            "dir": self.dir,
        }


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _tail(path, n=25):
    return "\n".join(_read(path).splitlines()[-n:])
