#!/usr/bin/python3
"""Shoal benchmark suite (issue #7). Called by bench/run.sh; writes OUT/results.json, then
bench/report.py renders OUT/summary.md and the PNG plots from it.

Sections (keys of results.json):
  micro              Google Benchmark: FedAvg fold vs memcpy, encode/decode, TLS vs plain ZeroMQ.
  round_overhead     3 and 10 CNN workers on loopback: round time vs the slowest worker's local
                     training and vs the CPU floor measured in the same invocation; phases; RSS.
  coordinator_scale  bench/coordinator_scale.sh (another component; its .py when the wrapper is
                     missing) with --quick in quick mode: its JSON and table, when it exists.
  time_to_accuracy   Fashion-MNIST CNN, 10 workers, IID and Dirichlet(0.5): rounds and seconds
                     from launch to 85% / 88% central test accuracy.
  bytes_on_wire      bytes per worker per round vs model size (logreg, mlp, cnn, a 100 MB MLP).

How the CPU floor is defined (round_overhead). The work in a round is training (the samples
of all selected workers) and evaluation (the central test set + every worker's validation
split). Just before each measured federation, "calibration" federations run on the same silos:
  solo: 1 worker, 1 round, federated evaluation off. From its CPU time (/proc, utime+stime):
        c_train = training samples per CPU second of one process (one thread),
        c_eval  = central-evaluation samples per CPU second of the coordinator;
        and the same from wall-clock time (r1, e1), which agree on a quiet machine.
  pair: 2 workers at once -> r2 = training samples/s of the whole machine when both cores
        train (shared caches and memory bandwidth included).
  floor      = (train_samples / c_train + eval_samples / c_eval) / 2 cores   (the issue's
               definition; CPU seconds, so other load on a shared machine does not move it)
  floor_wall = the same with r1 and e1;  floor_pair = train_samples / r2 + eval_samples / (2 e1)
It is a lower bound: it assumes perfect packing of the work onto 2 cores and no cost for
transfers, aggregation, commit or start-up. /proc accounting of the same rounds (CPU seconds of
every Shoal process, and of everything else on the machine: "foreign" CPU) is reported beside it;
round times are only comparable with the targets when the foreign CPU is near zero.
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shoalfed  # noqa: E402

SECTIONS = ["micro", "round_overhead", "coordinator_scale", "time_to_accuracy", "bytes_on_wire",
            "strategies"]
# Section 6 (issue #22): every strategy preset (coordinator strategy.name) on label-skewed silos.
STRATEGY_PRESETS = ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox"]
STRATEGY_TARGETS = [0.80, 0.85]
TARGETS_ACC = [0.85, 0.88]
# base/malloc_tuning.h: M_MMAP_THRESHOLD and M_TRIM_THRESHOLD of 1 GiB.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"

PROFILES = {
    "full": {
        "core_bench": ["--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true"],
        "secure_bench": ["--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true"],
        # Section 2: a 3-worker CNN run of its own; the 10-worker CNN run is section 4's IID run.
        "overhead_3w": {"model": "cnn", "workers": 3, "rounds": 5, "limit": 0, "eval_limit": 0},
        "tta": {"model": "cnn", "workers": 10, "rounds": 15, "limit": 0, "eval_limit": 0},
        # Update compression against float32: 20 rounds each (MLP: the CNN would take 30 min).
        "compression": {"model": "mlp", "workers": 10, "rounds": 20, "limit": 0, "eval_limit": 0,
                        "encodings": ["none", "fp16", "int8"]},
        "bytes": {"models": ["logreg", "mlp", "cnn", "wide_mlp"], "workers": 3, "rounds": 3,
                  "limit": 600, "eval_limit": 200},
        "scale_args": [],
        # Fixed round budget, no early stop: rounds to 80% / 85% and the best accuracy within it.
        "strategies": {"model": "cnn", "workers": 10, "rounds": 30, "limit": 0, "eval_limit": 0,
                       "alphas": [0.1, 0.5]},
        "budget_s": 1800,
    },
    "quick": {
        "core_bench": ["--benchmark_min_time=0.25"],
        # 6.6 MB only: the 100 MB cases are skipped.
        "secure_bench": ["--benchmark_min_time=0.25", "--benchmark_filter=/6600000"],
        # The CNN as in the full run, on 1,000 samples per worker: rounds of a second or two.
        "overhead_3w": {"model": "cnn", "workers": 3, "rounds": 2, "limit": 3000, "eval_limit": 1000},
        "tta": {"model": "mlp", "workers": 3, "rounds": 3, "limit": 6000, "eval_limit": 2000},
        "compression": {"model": "mlp", "workers": 3, "rounds": 3, "limit": 2000, "eval_limit": 1000,
                        "encodings": ["none", "int8"]},
        "bytes": {"models": ["logreg", "mlp", "cnn"], "workers": 3, "rounds": 3,
                  "limit": 300, "eval_limit": 100},
        "scale_args": ["--quick"],
        # Every preset on alpha 0.1, a logistic regression over 1,500 samples: 6 runs of ~17 s,
        # mostly start-up (both alphas took 220 s, too much for CI's bench_quick budget).
        "strategies": {"model": "logreg", "workers": 3, "rounds": 2, "limit": 1500,
                       "eval_limit": 1000, "alphas": [0.1]},
        "budget_s": 300,
    },
}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Suite:
    def __init__(self, args):
        self.args = args
        self.repo = os.path.abspath(args.repo)
        self.out = os.path.abspath(args.out)
        self.work = os.path.join(self.out, "work")
        os.makedirs(self.work, exist_ok=True)
        self.quick = args.quick
        self.profile = PROFILES["quick" if args.quick else "full"]
        if args.tta_rounds:
            self.profile["tta"]["rounds"] = args.tta_rounds
        if args.overhead_rounds:
            self.profile["overhead_3w"]["rounds"] = args.overhead_rounds
        bindir = os.path.join(os.path.abspath(args.build_dir), "bin")
        self.bins = {n: os.path.join(bindir, n) for n in
                     ["shoal-coordinator", "shoal-worker", "shoalctl", "core_bench",
                      "secure_channel_bench"]}
        for n, p in self.bins.items():
            if not os.access(p, os.X_OK):
                raise shoalfed.BenchError(f"{p} missing: build first (bench/run.sh builds)")
        self.log_path = os.path.join(self.out, "suite.log")
        self.security = shoalfed.Security(self.bins, args.security, self.work, self.log_path)
        self.runs = {}  # cached federation results by name
        self.results = {"meta": self.meta(), "sections": {}}
        self.t0 = time.time()

    # -- bookkeeping -------------------------------------------------------------------

    def log(self, msg):
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.t0:6.0f}s] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def meta(self):
        def git(*a):
            try:
                return subprocess.run(["git", "-C", self.repo] + list(a), stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True).stdout.strip()
            except OSError:
                return ""
        cpu = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": "quick" if self.quick else "full",
            "git_commit": git("rev-parse", "HEAD"),
            "git_subject": git("log", "-1", "--format=%s"),
            # --no-optional-locks: read-only, git status does not even refresh the index.
            "git_dirty": bool(git("--no-optional-locks", "status", "--porcelain",
                                  "--untracked-files=no")),
            "host": platform.node(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "mem_gib": round(mem_kib / 2**20, 1),
            "loadavg_start": os.getloadavg(),
            "transport": self.security.mode,
            "tls_supported_by_binaries": self.security.supported,
            "build_dir": os.path.abspath(self.args.build_dir),
        }

    def save(self):
        self.results["meta"]["elapsed_s"] = time.time() - self.t0
        tmp = os.path.join(self.out, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=False)
        os.replace(tmp, os.path.join(self.out, "results.json"))

    def run_section(self, name, fn):
        self.log(f"== {name}")
        t = time.time()
        try:
            res = fn()
            res.setdefault("status", "ok")
        except Exception as e:  # one section failing must not lose the others
            self.log(f"{name} FAILED: {e}")
            with open(self.log_path, "a") as f:
                traceback.print_exc(file=f)
            res = {"status": "failed", "error": str(e)[-3000:]}
        res["section_s"] = time.time() - t
        self.results["sections"][name] = res
        self.save()
        self.log(f"   {name}: {res['status']} in {res['section_s']:.0f} s")

    # -- federations ---------------------------------------------------------------------

    @staticmethod
    def tag(p, scheme):
        """A run's name: what it trains, on what, for how long."""
        return (f"{p['model']}-{scheme}-{p['workers']}w-r{p['rounds']}" +
                (f"-n{p['limit']}" if p["limit"] else ""))

    def silos(self, workers, scheme, limit):
        d = os.path.join(self.work, "silos", f"{scheme}-{workers}w" + (f"-{limit}" if limit else ""))
        return shoalfed.partition(self.bins, d, workers, scheme, alpha=0.5, seed=7, limit=limit,
                                  log_path=self.log_path)

    def federation(self, name, model, workers, silos, rounds, eval_limit=0, coord_args=(),
                   worker_args=(), stop_at_acc=None):
        if name in self.runs:
            return self.runs[name]
        extra = list(coord_args)
        if eval_limit:
            extra += ["--eval-limit", str(eval_limit)]
        def progress(rec, since_launch):
            acc = (rec.get("central") or {}).get("accuracy")
            self.log(f"      round {rec['round']:2d}: wall {rec.get('wall_s', 0):6.1f} s, slowest "
                     f"training {rec.get('max_worker_train_s') or 0:5.1f} s, test acc "
                     f"{'-' if acc is None else f'{100 * acc:.2f}%'}, {since_launch:.0f} s since launch")
        fed = shoalfed.Federation(self.bins, self.repo, self.work, name, model, workers, silos,
                                  rounds, self.security, coord_args=extra,
                                  worker_args=worker_args, stop_at_acc=stop_at_acc,
                                  timeout_s=3600, on_round=progress)
        self.log(f"   run {name}: {model}, {workers} workers, up to {rounds} rounds")
        res = fed.run()
        with open(os.path.join(res["dir"], "federation.json"), "w") as f:
            json.dump(res, f, indent=1)
        # Version files are large and not needed once measured.
        if not self.args.keep_work:
            shutil.rmtree(os.path.join(res["dir"], "run", "versions"), ignore_errors=True)
        self.runs[name] = res
        return res

    def calibrate(self, tag, model, silos, eval_limit):
        """Solo and pair calibration runs on silo-1 (and silo-2) of the measured federation."""
        off = ["--set", "eval.federated=false"]
        solo = self.federation(f"calib-{tag}-solo", model, 1, silos, 1, eval_limit, off)
        pair = self.federation(f"calib-{tag}-pair", model, 2, silos, 1, eval_limit, off)
        # metrics.jsonl's max_worker_train_s has full precision (the logs print 0.1 s).
        r = solo["rounds"][0]
        e_s = (r.get("evaluation") or {}).get("seconds", r["phases_s"]["evaluate"])
        pr = pair["rounds"][0]
        r1 = r["samples"] / r["max_worker_train_s"]
        r2 = pr["samples"] / pr["max_worker_train_s"]  # both cores busy until the later one ends
        # The same rates from CPU time (/proc, the round's window): what the work costs, not
        # how long it took, so CPU taken by other processes on a shared machine does not
        # inflate it. The solo worker's CPU is its training (+ receiving the weights and
        # hashing its update); the coordinator's is the central evaluation (+ broadcast, fold
        # and commit, a few hundredths of a second: it slightly favours Shoal's floor).
        cpu = (r.get("cpu") or {}).get("by_process_s", {})
        w_cpu, c_cpu = cpu.get("worker-1"), cpu.get("coordinator")
        if c_cpu is not None and cpu.get("evaluator") is not None:
            c_cpu += cpu["evaluator"]  # central evaluation runs in the coordinator's child
        if ((r.get("cpu") or {}).get("window_s") or 0) < 2:  # /proc sampled every 0.2 s, 10 ms ticks
            w_cpu = c_cpu = None  # too short to measure: the floor uses wall-clock rates
        return {
            "train_samples_per_s_1core": r1,
            "train_samples_per_s_2cores": r2,
            "pair_scaling": r2 / r1,
            "eval_samples_per_s_1core": r["central_count"] / e_s if e_s > 0 else None,
            "train_samples_per_cpu_s": r["samples"] / w_cpu if w_cpu else None,
            "eval_samples_per_cpu_s": r["central_count"] / c_cpu if c_cpu else None,
            "solo": {"samples": r["samples"], "train_s": r["max_worker_train_s"], "train_cpu_s": w_cpu,
                     "eval_samples": r["central_count"], "eval_s": e_s, "coordinator_cpu_s": c_cpu,
                     "foreign_cpu_s": (r.get("cpu") or {}).get("foreign_cpu_s"),
                     "window_s": (r.get("cpu") or {}).get("window_s")},
            "pair": {"samples": pr["samples"], "train_s": pr["max_worker_train_s"],
                     "workers": pr["worker_train_s"],
                     "foreign_cpu_s": (pr.get("cpu") or {}).get("foreign_cpu_s"),
                     "window_s": (pr.get("cpu") or {}).get("window_s")},
        }

    # -- section 1 -----------------------------------------------------------------------

    def micro(self):
        out = {"benchmarks": {}}
        for binary in ["core_bench", "secure_channel_bench"]:
            path = os.path.join(self.out, f"{binary}.json")
            args = self.profile["core_bench" if binary == "core_bench" else "secure_bench"]
            cmd = [self.bins[binary], "--benchmark_format=json", f"--benchmark_out={path}",
                   "--benchmark_out_format=json"] + args
            self.log("   " + " ".join(cmd))
            # The executables' malloc settings (TuneMallocForLargeBuffers) also through glibc's
            # tunables: benchmark binaries built before 2cc61b4 lack the call, and without it
            # every 100 MB iteration page-faults fresh mmap()s (measured here: encoding 25M
            # parameters took 2 s instead of 0.04 s).
            env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES)
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           check=True, timeout=900, env=env)
            with open(path) as f:
                data = json.load(f)
            out.setdefault("context", data.get("context"))
            for b in data["benchmarks"]:
                if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                    continue
                name = b.get("run_name", b["name"])
                if b.get("error_occurred"):
                    out["benchmarks"][name] = {"error": b.get("error_message")}
                    continue
                unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
                out["benchmarks"][name] = {
                    "binary": binary,
                    "label": b.get("label", ""),
                    "real_time_ms": b["real_time"] * unit * 1e3,
                    "cpu_time_ms": b["cpu_time"] * unit * 1e3,
                    "gb_per_s": b.get("bytes_per_second", 0) / 1e9,
                    "iterations": b.get("iterations"),
                    "statistic": b.get("aggregate_name", "single run"),
                }
        bm = out["benchmarks"]

        def gbs(name):
            return (bm.get(name) or {}).get("gb_per_s")
        derived = {}
        for n in [1663370, 25000000]:
            mem = gbs(f"BM_Memcpy/{n}")
            for exact, tag in [(0, "float"), (1, "deterministic")]:
                fold = gbs(f"BM_FedAvgFold/{n}/{exact}")
                if fold and mem:
                    derived[f"fold_{tag}_vs_memcpy_{n}"] = fold / mem
        for n in [6600000, 100000000]:
            tls, plain = gbs(f"BM_TlsOverZmq/{n}/real_time"), gbs(f"BM_PlainZmq/{n}/real_time")
            if tls and plain:
                derived[f"tls_vs_plain_zmq_{n}"] = tls / plain
        out["derived"] = derived
        out["malloc"] = "GLIBC_TUNABLES=" + MALLOC_TUNABLES
        return out

    # -- section 2 -----------------------------------------------------------------------

    def overhead_of(self, run, calib):
        r1 = calib["train_samples_per_s_1core"]
        r2 = calib["train_samples_per_s_2cores"]
        e1 = calib["eval_samples_per_s_1core"]
        r1c = calib["train_samples_per_cpu_s"] or r1
        e1c = calib["eval_samples_per_cpu_s"] or e1
        rows = []
        for r in run["rounds"]:
            eval_samples = (r["central_count"] or 0) + (r["federated_count"] or 0)
            # The floor, (training + evaluation work) / 2 cores, with the work in CPU
            # seconds; the same from wall-clock rates, and with the measured 2-process rate.
            floor = (r["samples"] / r1c + eval_samples / e1c) / 2
            floor_wall = (r["samples"] / r1 + eval_samples / e1) / 2
            floor_pair = r["samples"] / r2 + eval_samples / (2 * e1)
            # The same floor from this round's own work: CPU seconds the workers' training
            # threads and the evaluations of its version spent, as the processes measured them
            # (no calibration run; includes what running N processes on 2 cores costs each).
            floor_run = None
            if r.get("train_cpu_s") is not None and r.get("eval_cpu_s") is not None:
                floor_run = (r["train_cpu_s"] + r["eval_cpu_s"]) / 2
            ph = r["phases_s"]
            train = r["max_worker_train_s"] or 0
            breakdown = {
                "broadcast": ph.get("broadcast", 0),
                "train": train,
                # COLLECT minus the slowest worker's training: weights reaching the workers,
                # waiting for upload slots, uploads, SHA-256 and folding (and any worker that
                # finished training later than the slowest-training one).
                "upload": max(0.0, ph.get("collect", 0) - train),
                "aggregate": ph.get("aggregate", 0),
                "evaluate": ph.get("evaluate", 0),
                "commit": ph.get("commit", 0),
                "other": max(0.0, r["round_s"] - sum(ph.values())),
            }
            cpu = r.get("cpu") or {}
            rows.append({
                "round": r["round"],
                "round_s": r["round_s"],
                "max_worker_train_s": train,
                "sum_worker_train_s": sum(v["seconds"] for v in r["worker_train_s"].values()),
                "ratio_to_slowest_train": r["round_s"] / train if train else None,
                "train_samples": r["samples"],
                "eval_samples": eval_samples,
                "cpu_floor_s": floor,
                "cpu_floor_wall_calibrated_s": floor_wall,
                "cpu_floor_pair_s": floor_pair,
                "cpu_floor_in_run_s": floor_run,
                "ratio_to_cpu_floor_in_run": r["round_s"] / floor_run if floor_run else None,
                "train_cpu_s": r.get("train_cpu_s"),
                "eval_cpu_s": r.get("eval_cpu_s"),
                "ratio_to_cpu_floor": r["round_s"] / floor,
                "ratio_to_cpu_floor_pair": r["round_s"] / floor_pair,
                "breakdown_s": breakdown,
                "shoal_cpu_s": cpu.get("shoal_cpu_s"),
                # CPU all Shoal processes used in the round / the calibrated work (2 x floor):
                # overhead in CPU terms, unaffected by other load taking cores away.
                "shoal_cpu_vs_work": (cpu["shoal_cpu_s"] / (2 * floor)) if cpu else None,
                "foreign_cpu_s": cpu.get("foreign_cpu_s"),
                "cores_busy_shoal": cpu.get("cores_busy_shoal"),
                "cores_busy_machine": cpu.get("cores_busy_machine"),
                "foreign_cores": (cpu["foreign_cpu_s"] / cpu["window_s"]) if cpu else None,
                "bytes_out": r["bytes_out"],
                "bytes_in": r["bytes_in"],
            })
        steady = [x for x in rows if x["round"] > 1] or rows
        keys = ["round_s", "max_worker_train_s", "ratio_to_slowest_train", "cpu_floor_s",
                "cpu_floor_in_run_s", "ratio_to_cpu_floor_in_run", "train_cpu_s", "eval_cpu_s",
                "cpu_floor_wall_calibrated_s", "cpu_floor_pair_s", "ratio_to_cpu_floor",
                "ratio_to_cpu_floor_pair", "shoal_cpu_s", "shoal_cpu_vs_work", "foreign_cpu_s",
                "foreign_cores", "cores_busy_shoal", "cores_busy_machine", "sum_worker_train_s"]
        summary = {k: median([x[k] for x in steady]) for k in keys}
        summary["breakdown_s"] = {k: median([x["breakdown_s"][k] for x in steady])
                                  for k in rows[0]["breakdown_s"]} if rows else {}
        summary["rounds_used"] = [x["round"] for x in steady]
        summary["statistic"] = "median over rounds >= 2" if steady is not rows else "round 1 only"
        workers_rss = [v for k, v in run["peak_rss_mib"].items() if k.startswith("worker")]
        return {
            "run": run["name"],
            "model": run["model"],
            "workers": run["workers"],
            "transport": run["transport"],
            "calibration": calib,
            "steady": summary,
            "rounds": rows,
            "peak_rss_mib": {
                "coordinator": run["peak_rss_mib"].get("coordinator"),
                "evaluator": run["peak_rss_mib"].get("evaluator"),
                "worker_max": max(workers_rss) if workers_rss else None,
                "worker_median": median(workers_rss),
                "per_process": run["peak_rss_mib"],
            },
            "start_up_s": run["first_round_start_s"],
        }

    def round_overhead(self):
        p3 = self.profile["overhead_3w"]
        res = {"configs": []}
        silos = self.silos(p3["workers"], "iid", p3["limit"])
        tag = self.tag(p3, "iid")
        calib = self.calibrate(tag, p3["model"], silos, p3["eval_limit"])
        run = self.federation(tag, p3["model"], p3["workers"], silos, p3["rounds"], p3["eval_limit"])
        res["configs"].append(self.overhead_of(run, calib))
        if not self.quick and not self.args.no_10w:
            run10, calib10 = self.tta_run("iid")
            res["configs"].append(self.overhead_of(run10, calib10))
        return res

    # -- section 3 -----------------------------------------------------------------------

    def coordinator_scale(self):
        # Another component; bench/coordinator_scale.sh is the entry point, the .py behind it is
        # called directly when the wrapper is not there (yet).
        script = next((os.path.join(self.repo, "bench", n) for n in
                       ["coordinator_scale.sh", "coordinator_scale.py"]
                       if os.path.exists(os.path.join(self.repo, "bench", n))), None)
        if not script:
            return {"status": "skipped", "reason": "bench/coordinator_scale.sh not present"}
        out_dir = os.path.join(self.out, "coordinator_scale")
        os.makedirs(out_dir, exist_ok=True)
        with open(script, errors="replace") as f:
            text = f.read()
        build = os.path.abspath(self.args.build_dir)
        cmd = (["bash", script] if script.endswith(".sh") else ["/usr/bin/python3", script])
        cmd += self.profile["scale_args"]
        if "--out" in text:
            cmd += ["--out", out_dir]
        if "--bin-dir" in text:
            cmd += ["--bin-dir", os.path.join(build, "bin")]
        elif "--build-dir" in text:
            cmd += ["--build-dir", build]
        if "--work-dir" in text:
            cmd += ["--work-dir", os.path.join(self.work, "coordinator_scale")]
        env = dict(os.environ, SHOAL_BUILD_DIR=build, BUILD_DIR=build, SHOAL_BENCH_OUT=out_dir)
        self.log("   " + " ".join(cmd))
        # Its own process group: on timeout the script and whatever it started (coordinator,
        # loadgen) get SIGTERM together, then SIGKILL, and nothing is left behind.
        limit = 240 if self.quick else 1200
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=self.repo, env=env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                stdout, stderr = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            stderr += f"\n(bench: timed out after {limit} s and was stopped)"
            proc.returncode = proc.returncode or 124
        try:  # anything of the group still running (the script's own children)
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        with open(os.path.join(out_dir, "stdout.txt"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(out_dir, "stderr.txt"), "w") as f:
            f.write(p.stderr)
        if not self.args.keep_work:
            shutil.rmtree(os.path.join(self.work, "coordinator_scale"), ignore_errors=True)
        data = {}
        for path in sorted(glob.glob(os.path.join(out_dir, "**", "*.json"), recursive=True)):
            try:
                with open(path) as f:
                    data[os.path.relpath(path, out_dir)] = json.load(f)
            except ValueError:
                pass
        if not data:  # JSON on stdout: the whole text, or the last line that parses
            for cand in [p.stdout] + p.stdout.splitlines()[::-1]:
                try:
                    data = {"stdout": json.loads(cand)}
                    break
                except ValueError:
                    continue
        table = "\n".join(l for l in p.stdout.splitlines() if not l.startswith("results: "))
        res = {"script": os.path.relpath(script, self.repo), "command": " ".join(cmd),
               "exit": p.returncode, "json": data, "table": table.strip()}
        if p.returncode != 0:
            res["status"] = "failed"
            res["error"] = (p.stderr or p.stdout)[-2000:]
        return res

    # -- section 4 -----------------------------------------------------------------------

    def tta_run(self, scheme):
        t = self.profile["tta"]
        silos = self.silos(t["workers"], scheme, t["limit"])
        tag = self.tag(t, scheme)
        calib = None
        if scheme == "iid" and not self.quick:  # section 2 uses this run for 10 workers
            calib = self.calibrate(tag, t["model"], silos, t["eval_limit"])
        run = self.federation(tag, t["model"], t["workers"], silos, t["rounds"], t["eval_limit"],
                              stop_at_acc=None if self.args.no_early_stop else self.args.stop_at)
        return run, calib

    @staticmethod
    def tta_of(run, scheme):
        rows = [{"round": r["round"], "central_acc": r["central_acc"],
                 "federated_acc": r["federated_acc"], "at_s": r["evaluated_at_s"],
                 "round_s": r["round_s"]} for r in run["rounds"]]
        reached = {}
        for target in TARGETS_ACC:
            hit = next((x for x in rows if x["central_acc"] is not None and
                        x["central_acc"] >= target), None)
            reached[f"{int(round(target * 100))}"] = {
                "round": hit["round"] if hit else None,
                "seconds_from_launch": hit["at_s"] if hit else None,
            }
        accs = [x["central_acc"] for x in rows if x["central_acc"] is not None]
        workers_rss = [v for k, v in run["peak_rss_mib"].items() if k.startswith("worker")]
        return {
            "run": run["name"], "model": run["model"], "workers": run["workers"], "scheme": scheme,
            "rounds_done": run["rounds_done"], "rounds_max": run["rounds_requested"],
            "early_stopped": run["early_stopped"], "stop_at": run.get("stop_at_acc"),
            "reached": reached,
            "best_acc": max(accs) if accs else None, "final_acc": accs[-1] if accs else None,
            "start_up_s": run["first_round_start_s"], "total_s": run["total_s"],
            "test_samples": run["rounds"][0]["central_count"] if run["rounds"] else None,
            "median_round_s": median([x["round_s"] for x in rows if x["round"] > 1]),
            "silo_sizes": {k: v["train"] for k, v in sorted(run["silos"].items())},
            "peak_rss_mib": {"coordinator": run["peak_rss_mib"].get("coordinator"),
                             "evaluator": run["peak_rss_mib"].get("evaluator"),
                             "worker_max": max(workers_rss) if workers_rss else None},
            "per_round": rows,
        }

    def time_to_accuracy(self):
        res = {"targets": TARGETS_ACC, "runs": []}
        for scheme in ["iid", "dirichlet"]:
            run, _ = self.tta_run(scheme)
            res["runs"].append(self.tta_of(run, scheme))
        # The 3-worker run of section 2 is the setting of Flower's published 3-client numbers.
        p3 = self.profile["overhead_3w"]
        three = self.runs.get(self.tag(p3, "iid"))
        if three and p3["workers"] != self.profile["tta"]["workers"]:
            res["runs"].append(self.tta_of(three, "iid"))
        res["compression"] = self.compression()
        return res

    def compression(self):
        """The same federation with float32, fp16 and int8 updates (error feedback on the
        workers): upload bytes and test accuracy after the last round."""
        c = self.profile["compression"]
        silos = self.silos(c["workers"], "iid", c["limit"])
        out = []
        for enc in c["encodings"]:
            run = self.federation(f"compression-{enc}-{c['model']}-{c['workers']}w-r{c['rounds']}",
                                  c["model"], c["workers"], silos, c["rounds"], c["eval_limit"],
                                  ["--compression", enc])
            rows = run["rounds"]
            accs = [r["central_acc"] for r in rows if r["central_acc"] is not None]
            out.append({
                "encoding": enc, "model": run["model"], "workers": run["workers"],
                "rounds_done": run["rounds_done"],
                "final_acc": accs[-1] if accs else None, "best_acc": max(accs) if accs else None,
                "upload_bytes_per_worker_round": median([r["bytes_in"] / max(1, r["selected"] or c["workers"])
                                                         for r in rows]),
                "model_bytes": run["model_bytes"],
                "median_round_s": median([r["round_s"] for r in rows if r["round"] > 1]),
                "per_round_acc": [r["central_acc"] for r in rows],
            })
        base = next((x for x in out if x["encoding"] == "none"), None)
        for x in out:
            if base and base["upload_bytes_per_worker_round"]:
                x["upload_vs_float32"] = x["upload_bytes_per_worker_round"] / base["upload_bytes_per_worker_round"]
            if base and x["final_acc"] is not None and base["final_acc"] is not None:
                x["final_acc_minus_float32"] = x["final_acc"] - base["final_acc"]
        return out

    # -- section 6 -----------------------------------------------------------------------

    def strategies(self):
        """Every preset on Dirichlet(alpha) silos: rounds to 80% / 85% and the best central test
        accuracy within a fixed round budget (issue #22's target: on alpha 0.1 the best preset
        reaches 85% in at most 0.75x FedAvg's rounds, or ends 2 points higher)."""
        p = self.profile["strategies"]
        res = {"targets": STRATEGY_TARGETS, "model": p["model"], "workers": p["workers"],
               "rounds": p["rounds"], "runs": []}
        for alpha in p["alphas"]:
            d = os.path.join(self.work, "silos", f"dirichlet{alpha}-{p['workers']}w" +
                             (f"-{p['limit']}" if p["limit"] else ""))
            silos = shoalfed.partition(self.bins, d, p["workers"], "dirichlet", alpha=alpha,
                                       seed=7, limit=p["limit"], log_path=self.log_path)
            for preset in STRATEGY_PRESETS:
                run = self.federation(
                    f"strategy-{preset}-a{alpha}-{p['model']}-{p['workers']}w-r{p['rounds']}",
                    p["model"], p["workers"], silos, p["rounds"], p["eval_limit"],
                    ["--set", f"strategy.name={preset}", "--set", "eval.federated=false"])
                accs = [r["central_acc"] for r in run["rounds"]]
                reached = {}
                for target in STRATEGY_TARGETS:
                    hit = next((r["round"] for r in run["rounds"]
                                if r["central_acc"] is not None and r["central_acc"] >= target), None)
                    reached[f"{int(round(target * 100))}"] = hit
                got = [a for a in accs if a is not None]
                res["runs"].append({
                    "preset": preset, "alpha": alpha, "rounds_done": run["rounds_done"],
                    "reached": reached, "best_acc": max(got) if got else None,
                    "final_acc": got[-1] if got else None, "per_round_acc": accs,
                    "median_round_s": median([r["round_s"] for r in run["rounds"] if r["round"] > 1]),
                })
        # The target, per alpha: the best preset against FedAvg.
        res["verdict"] = {}
        for alpha in p["alphas"]:
            runs = [r for r in res["runs"] if r["alpha"] == alpha]
            base = next((r for r in runs if r["preset"] == "fedavg"), None)
            best = max((r for r in runs if r["best_acc"] is not None),
                       key=lambda r: r["best_acc"], default=None)
            if base and best:
                res["verdict"][str(alpha)] = {
                    "best_preset": best["preset"],
                    "best_minus_fedavg_points": 100 * (best["best_acc"] - (base["best_acc"] or 0)),
                    "fedavg_rounds_to_85": base["reached"]["85"],
                    "best_rounds_to_85": best["reached"]["85"],
                }
        return res

    # -- section 5 -----------------------------------------------------------------------

    def bytes_on_wire(self):
        b = self.profile["bytes"]
        silos = self.silos(b["workers"], "iid", b["limit"])
        res = {"models": []}
        for model in b["models"]:
            coord_args = []
            name = model
            if model == "wide_mlp":
                path = os.path.join(self.work, "wide_mlp.pt")
                if not os.path.exists(path):
                    try:
                        shoalfed.run_tool(["/usr/bin/python3", os.path.join(self.repo, "bench", "make_model.py"),
                                           path], self.log_path, timeout=600)
                    except shoalfed.BenchError as e:
                        res["models"].append({"model": model, "status": "skipped", "reason": str(e)[-500:]})
                        continue
                model, coord_args = "torchscript", ["--set", f"model.path={path}"]
            # Workers run a coordinator's TorchScript only when they pin its SHA-256.
            worker_args = []
            if model == "torchscript":
                with open(path, "rb") as f:
                    sha = hashlib.sha256(f.read()).hexdigest()
                worker_args = ["--set", f'model.trusted_script_sha256=["{sha}"]']
            run = self.federation(f"bytes-{name}", model, b["workers"], silos, b["rounds"],
                                  b["eval_limit"], coord_args, worker_args)
            # A middle round: the last one also sends its version to every worker for federated
            # evaluation (no next TrainTask carries it), which the others do not.
            last = run["rounds"][-2] if len(run["rounds"]) > 2 else run["rounds"][-1]
            n = last["selected"] or b["workers"]
            mb = run["model_bytes"]
            federated = bool(last["federated_count"])
            # Wire bytes: a window runs from one commit's detection (by then the next round's
            # TrainTask has usually gone out) to the next one's, so it holds one round's worth
            # except for the last round (no TrainTask follows): use the middle rounds.
            mids = [r for r in run["rounds"][1:-1] if r.get("wire_bytes_per_connection")]
            wire = []
            if mids:
                n_conn = min(len(r["wire_bytes_per_connection"]) for r in mids)
                for i in range(n_conn):
                    wire.append({k: sum(r["wire_bytes_per_connection"][i][k] for r in mids) / len(mids)
                                 for k in ["to_worker", "from_worker"]})
            res["models"].append({
                "model": name,
                "parameters": run["parameters"],
                "model_bytes": mb,
                "workers": n,
                "round": last["round"],
                "bytes_out_per_worker": last["bytes_out"] / n,
                "bytes_in_per_worker": last["bytes_in"] / n,
                "out_vs_model": last["bytes_out"] / n / mb if mb else None,
                "in_vs_model": last["bytes_in"] / n / mb if mb else None,
                # The next round's TrainTask asks for the federated evaluation of the version
                # it carries: one copy of the weights per round either way.
                "model_copies_out": 1,
                "federated_eval": federated,
                # TCP bytes per worker connection (kernel tcp_info), TLS and framing included.
                "wire_bytes_to_worker": median([v["to_worker"] for v in wire]),
                "wire_bytes_from_worker": median([v["from_worker"] for v in wire]),
                "transport": run["transport"],
                "round_s": last["round_s"],
                "peak_rss_mib": run["peak_rss_mib"],
            })
        return res

    # -- main ----------------------------------------------------------------------------

    def run(self, sections):
        self.log(f"Shoal bench ({'quick' if self.quick else 'full'}), transport={self.security.mode}, "
                 f"out={self.out}")
        self.results["meta"]["sections_requested"] = [n for n in SECTIONS if n in sections]
        for name in SECTIONS:
            if name in sections:
                self.run_section(name, getattr(self, name))
        self.results["meta"]["loadavg_end"] = os.getloadavg()
        self.results["meta"]["budget_s"] = self.profile["budget_s"]
        self.save()
        if not self.args.keep_work:
            shutil.rmtree(os.path.join(self.work, "silos"), ignore_errors=True)
            for p in glob.glob(os.path.join(self.work, "*.pt")):
                os.remove(p)
        failed = [n for n, s in self.results["sections"].items() if s["status"] == "failed"]
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--security", choices=["auto", "tls", "plain"], default="auto")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--tta-rounds", type=int, default=0)
    ap.add_argument("--no-early-stop", action="store_true")
    ap.add_argument("--stop-at", type=float, default=max(TARGETS_ACC),
                    help="time-to-accuracy runs stop once central accuracy reaches this")
    ap.add_argument("--overhead-rounds", type=int, default=0,
                    help="rounds of section 2's 3-worker run (default 5; quick 2)")
    ap.add_argument("--no-10w", action="store_true",
                    help="section 2 without the 10-worker run (which is section 4's IID run)")
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    # SIGTERM unwinds like an exception, so every federation's finally-block stops the
    # processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sections = args.sections.split(",")
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s}; known: {','.join(SECTIONS)}")
    try:
        suite = Suite(args)
    except shoalfed.BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    return suite.run(sections)


if __name__ == "__main__":
    sys.exit(main())
