#!/usr/bin/python3
"""Renders a bench results folder: OUT/results.json -> OUT/summary.md (markdown tables for the
README's performance section) and OUT/accuracy.png, OUT/bytes_on_wire.png, OUT/round_phases.png,
OUT/strategies.png.

Usage: report.py OUT_DIR   (plots need Debian's python3-matplotlib; without it, tables only)
"""
import json
import os
import sys

# Reference numbers from the published anchors (FedAvg, Flower) and issue #7.
FLOWER = {
    "round_s": {3: 31.6, 10: 33.6},
    "acc_3_clients": [0.803, 0.841, 0.860, 0.868, 0.875],
    "to_85": {"round": 3, "seconds": 105},
    "server_rss_mib": {3: "639", 10: "915-990"},
    "client_rss_mib": "~480",
    "bytes_each_way": 6.655e6,
}
TARGETS = {"floor_ratio": 1.05, "to_85_s": 90, "coordinator_rss_mib": 160, "worker_rss_mib": 240,
           "full_s": 1800, "quick_s": 300}
PHASES = ["broadcast", "train", "upload", "aggregate", "evaluate", "commit", "other"]


def f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def pct(x):
    return f(x, "{:.2f}%") if x is None else f"{100 * x:.2f}%"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ok(s):
    return s and s.get("status") == "ok"


def met(value, limit):
    if value is None:
        return "–"
    return "yes" if value <= limit else "**no**"


class Report:
    def __init__(self, out):
        self.out = out
        with open(os.path.join(out, "results.json")) as fh:
            self.r = json.load(fh)
        self.s = self.r["sections"]
        # Flower's numbers are for the full data set: quick runs are not comparable with them.
        self.full = self.r["meta"]["mode"] == "full"

    # ---------------------------------------------------------------------------------

    def targets(self):
        rows = []
        ro = self.s.get("round_overhead")
        cnn_runs = []
        if ok(ro):
            for c in ro["configs"]:
                st = c["steady"]
                if st.get("ratio_to_cpu_floor_in_run") is not None:
                    rows.append([f"round time / CPU floor measured in the run, {c['workers']} "
                                 f"workers {c['model']}",
                                 f(st["ratio_to_cpu_floor_in_run"], "{:.3f}x") +
                                 f" ({f(st['round_s'])} s vs {f(st['cpu_floor_in_run_s'])} s)",
                                 f"<= {TARGETS['floor_ratio']}x",
                                 met(st["ratio_to_cpu_floor_in_run"], TARGETS["floor_ratio"])])
                rows.append([f"round time / CPU floor from the calibration runs, {c['workers']} "
                             f"workers {c['model']}",
                             f(st["ratio_to_cpu_floor"], "{:.3f}x") +
                             f" ({f(st['round_s'])} s vs {f(st['cpu_floor_s'])} s)",
                             f"<= {TARGETS['floor_ratio']}x",
                             met(st["ratio_to_cpu_floor"], TARGETS["floor_ratio"])])
                if self.full and c["model"] == "cnn" and c["workers"] in FLOWER["round_s"]:
                    fl = FLOWER["round_s"][c["workers"]]
                    rows.append([f"round time vs Flower 1.23, {c['workers']} workers cnn",
                                 f"{f(st['round_s'])} s", f"{fl} s", met(st["round_s"], fl)])
                cnn_runs.append(c)
        tta = self.s.get("time_to_accuracy")
        if ok(tta):
            for run in tta["runs"]:
                if run["scheme"] != "iid":
                    continue
                sec = run["reached"]["85"]["seconds_from_launch"]
                # The target is for Flower's settings (3 clients); other sizes are reported.
                targeted = run["workers"] == 3
                rows.append([f"time to 85% from launch, {run['workers']} workers {run['model']} IID",
                             f(sec, "{:.0f} s") + f" (round {f(run['reached']['85']['round'], '{}')})"
                             if sec is not None else f"not reached in {run['rounds_done']} rounds",
                             f"<= {TARGETS['to_85_s']} s (Flower, 3 clients: {FLOWER['to_85']['seconds']} s)"
                             if targeted else "(no target: the target is for 3 workers)",
                             (met(sec, TARGETS["to_85_s"]) if sec is not None else "**no**")
                             if targeted else ""])
        rss_c, rss_w = [], []
        for c in cnn_runs:
            if c["model"] == "cnn":
                rss_c.append((c["peak_rss_mib"]["coordinator"], c["workers"],
                              c["peak_rss_mib"].get("evaluator")))
                rss_w.append((c["peak_rss_mib"]["worker_max"], c["workers"]))
        if ok(tta):
            for run in tta["runs"]:
                if run["model"] == "cnn":
                    rss_c.append((run["peak_rss_mib"]["coordinator"], run["workers"],
                                  run["peak_rss_mib"].get("evaluator")))
                    rss_w.append((run["peak_rss_mib"]["worker_max"], run["workers"]))
        rss_c = [x for x in rss_c if x[0] is not None]
        rss_w = [x for x in rss_w if x[0] is not None]
        if rss_c:
            v, n, ev = max(rss_c, key=lambda x: x[0])
            rows.append(["coordinator peak RSS (CNN runs)", f"{v:.0f} MiB ({n} workers)",
                         f"<= {TARGETS['coordinator_rss_mib']} MiB (Flower server: 639 / 915-990 MiB)",
                         met(v, TARGETS["coordinator_rss_mib"])])
            evs = [x[2] for x in rss_c if x[2] is not None]
            if evs:
                both = max(x[0] + (x[2] or 0) for x in rss_c)
                rows.append(["its LibTorch process (shoal-evaluator: central evaluation), peak RSS",
                             f"{max(evs):.0f} MiB (coordinator + evaluator: {both:.0f} MiB)",
                             "(not a target; Flower's server does both in one process)", ""])
        if rss_w:
            v, n = max(rss_w)
            rows.append(["worker peak RSS (CNN runs)", f"{v:.0f} MiB ({n} workers)",
                         f"<= {TARGETS['worker_rss_mib']} MiB (Flower client: ~480 MiB)",
                         met(v, TARGETS["worker_rss_mib"])])
        mode = self.r["meta"]["mode"]
        if mode == "quick":  # MLP on small silos: the targets are about the full run
            rows = [r[:3] + ["n/a (quick)"] for r in rows]
        limit = TARGETS["quick_s" if mode == "quick" else "full_s"]
        el = self.r["meta"].get("elapsed_s")
        partial = len(self.r["meta"].get("sections_requested", self.s)) < 5
        rows.append([f"runner wall time ({mode}{', partial run' if partial else ''})",
                     f(el, "{:.0f} s"), f"<= {limit} s", "n/a (partial)" if partial else met(el, limit)])
        out = table(["target", "measured", "target / reference", "met"], rows)
        foreign = [c["steady"].get("foreign_cores") or 0 for c in (ro or {}).get("configs", [])]
        if foreign and max(foreign) > 0.1:
            out = (f"**Not a clean measurement**: other processes kept {max(foreign):.2f} of the 2 "
                   "cores busy during the measured rounds (section 2). Re-run on a quiet machine "
                   "before quoting round times.\n\n" + out)
        return out

    def micro(self):
        m = self.s.get("micro")
        if not ok(m):
            return f"_not run: {(m or {}).get('error', 'section skipped')}_"
        bm = m["benchmarks"]
        names = {
            "BM_FedAvgFold": "FedAvg fold (validate + weighted add)",
            "BM_Memcpy": "memcpy (bandwidth ceiling)",
            "BM_EncodeChunks": "encode weights into 1 MiB chunk frames",
            "BM_DecodeChunks": "decode + reassemble chunk frames",
            "BM_SealOpenInMemory": "TLS 1.3 seal + open, in memory",
            "BM_TlsOverZmq": "TLS over ZeroMQ loopback",
            "BM_PlainZmq": "plain ZeroMQ loopback",
            "BM_WriteReleasedHeap": "write a 4 MiB frame into heap handed back",
            "BM_SealUpload": "seal a worker's upload (1 MiB chunk frames)",
            "BM_OpenUpload": "open and assemble an upload (1 MiB chunk frames)",
        }
        fixed_size = {"BM_WriteReleasedHeap": "4 MiB", "BM_SealUpload": "6.65 MB",
                      "BM_OpenUpload": "6.65 MB"}
        rows = []
        for name, b in bm.items():
            parts = name.split("/")
            if "error" in b:
                rows.append([names.get(parts[0], parts[0]), "", "", "", b["error"]])
                continue
            arg = parts[1] if len(parts) > 1 else ""
            size = fixed_size.get(parts[0]) or (f"{int(arg) / 1e6:.2f}M params" if parts[0] in
                    ("BM_FedAvgFold", "BM_Memcpy", "BM_EncodeChunks", "BM_DecodeChunks")
                    else f"{int(arg) / 1e6:.1f} MB") if arg.isdigit() else arg
            rows.append([names.get(parts[0], parts[0]), size, b.get("label") or "",
                         f(b["real_time_ms"], "{:.2f}"), f(b["gb_per_s"], "{:.2f}")])
        d = m.get("derived", {})
        lines = [table(["benchmark", "size", "variant", "time/op (ms)", "GB/s"], rows), ""]
        for k, v in d.items():
            lines.append(f"- `{k}`: {v:.2f}")
        stat = next(iter(bm.values()), {}).get("statistic", "")
        lines.append(f"\n_Statistic: {stat}. GB/s = 10^9 bytes/s of float32 weights (or message bytes), as "
                     "Google Benchmark reports it (CPU time for core_bench, real time for the "
                     f"channel). Run with `{m.get('malloc', 'default malloc')}`, the settings "
                     "TuneMallocForLargeBuffers() gives the executables._")
        return "\n".join(lines)

    def overhead(self):
        ro = self.s.get("round_overhead")
        if not ok(ro):
            return f"_not run: {(ro or {}).get('error', 'section skipped')}_"
        rows, ph_rows, cal_rows, cpu_rows, noisy = [], [], [], [], []
        for c in ro["configs"]:
            st = c["steady"]
            fl = FLOWER["round_s"].get(c["workers"]) if self.full and c["model"] == "cnn" else None
            rows.append([c["workers"], c["model"], c["transport"], f(st["round_s"]),
                         f(st["max_worker_train_s"]), f(st["ratio_to_slowest_train"], "{:.3f}"),
                         f(st.get("cpu_floor_in_run_s")),
                         f(st.get("ratio_to_cpu_floor_in_run"), "{:.3f}"),
                         f(st["cpu_floor_s"]), f(st["ratio_to_cpu_floor"], "{:.3f}"),
                         f(st.get("cpu_floor_wall_calibrated_s")), f(st["cpu_floor_pair_s"]),
                         f(fl), ", ".join(str(x) for x in st["rounds_used"])])
            if (st.get("foreign_cores") or 0) > 0.1:
                noisy.append(f"{st['foreign_cores']:.2f} cores ({c['workers']}-worker run)")
            b = st["breakdown_s"]
            ph_rows.append([c["workers"], c["model"]] + [f(b.get(k), "{:.2f}") for k in PHASES])
            cal = c["calibration"]
            cal_rows.append([c["workers"], c["model"],
                             f(cal.get("train_samples_per_cpu_s"), "{:.0f}"),
                             f(cal["train_samples_per_s_1core"], "{:.0f}"),
                             f(cal["train_samples_per_s_2cores"], "{:.0f}"),
                             f(cal["pair_scaling"], "{:.2f}x"),
                             f(cal.get("eval_samples_per_cpu_s"), "{:.0f}"),
                             f(cal["eval_samples_per_s_1core"], "{:.0f}"),
                             f(cal["solo"].get("foreign_cpu_s"))])
            in_run = (st["shoal_cpu_s"] / (2 * st["cpu_floor_in_run_s"])
                      if st.get("shoal_cpu_s") and st.get("cpu_floor_in_run_s") else None)
            cpu_rows.append([c["workers"], c["model"], f(st["shoal_cpu_s"]), f(in_run, "{:.3f}"),
                             f(st.get("shoal_cpu_vs_work"), "{:.3f}"),
                             f(st["cores_busy_shoal"], "{:.2f}"), f(st.get("foreign_cores"), "{:.2f}"),
                             f(st["sum_worker_train_s"]),
                             f(c["peak_rss_mib"]["coordinator"], "{:.0f}"),
                             f(c["peak_rss_mib"].get("evaluator"), "{:.0f}"),
                             f(c["peak_rss_mib"]["worker_max"], "{:.0f}"),
                             f(c["start_up_s"])])
        warn = []
        if noisy:
            warn = ["**The machine was not quiet**: other processes used " + ", ".join(noisy) +
                    " of the 2 on average during the measured rounds, so round times and the "
                    "ratios are inflated (the CPU floor, in CPU seconds, is not).", ""]
        return "\n".join(warn + [
            table(["workers", "model", "wire", "round (s)", "slowest worker train (s)", "round / train",
                   "CPU floor in the run (s)", "round / floor in the run",
                   "CPU floor, calibrated (s)", "round / calibrated floor",
                   "calibrated floor from wall-clock rates (s)",
                   "calibrated floor from 2-process rate (s)", "Flower 1.23 (s)", "rounds"], rows),
            "",
            "A round is from its start to the next round's start. `CPU floor in the run` = (CPU "
            "seconds of the workers' training threads + CPU seconds of the evaluations of the "
            "round's version, central and federated) / 2 cores, as the processes measured them in "
            "that round; `calibrated` = the same work priced with the rates of the calibration "
            "runs below (one worker alone, before the run).",
            "",
            "Where the round goes (seconds, median over the same rounds; `train` = the slowest "
            "worker's local training, `upload` = COLLECT minus that: weights reaching workers, "
            "upload slots, uploads, SHA-256, fold; `evaluate` = what the round waited for an "
            "evaluation: with `eval.overlap` (the default) the previous version's evaluation runs "
            "during the round and is waited for only if it is still running at the commit):",
            "",
            table(["workers", "model"] + PHASES, ph_rows),
            "",
            "CPU floor calibration (same invocation, same silos, just before the run; one worker "
            "alone, then two at once): floor = (train samples / training samples per CPU second "
            "+ eval samples / evaluation samples per CPU second) / 2 cores.",
            "",
            table(["workers", "model", "train samples/CPU s", "train samples/s, 1 process",
                   "train samples/s, 2 processes", "2-process scaling", "eval samples/CPU s",
                   "eval samples/s", "other processes' CPU during calibration (s)"],
                  cal_rows),
            "",
            "Accounting from /proc during the same rounds (median per round). `Shoal CPU / floor "
            "work` = CPU seconds of all Shoal processes / (2 x CPU floor), with the floor measured "
            "in the run and, next to it, the calibrated one (which drifts when the machine's speed "
            "changes between the calibration and the run): the overhead in CPU terms, which other "
            "load on the machine does not inflate the way it inflates round times:",
            "",
            table(["workers", "model", "Shoal CPU (s)", "Shoal CPU / floor work in the run",
                   "Shoal CPU / calibrated floor work", "cores busy (Shoal)",
                   "cores busy (other processes)", "sum of workers' train wall (s)",
                   "coordinator peak RSS (MiB)", "evaluator process peak RSS (MiB)",
                   "worker peak RSS (MiB)", "start-up (s)"], cpu_rows),
        ])

    def scale(self):
        s = self.s.get("coordinator_scale")
        if not s:
            return "_section not run_"
        if s.get("status") == "skipped":
            return f"_skipped: {s.get('reason')}_"
        if s.get("status") == "failed":
            return f"_failed (exit {s.get('exit')}): {s.get('error', '')[-500:]}_"
        t = s.get("table", "")
        if t.strip().startswith("|"):
            return t
        return "```\n" + t + "\n```"

    def tta(self):
        t = self.s.get("time_to_accuracy")
        if not ok(t):
            return f"_not run: {(t or {}).get('error', 'section skipped')}_"
        rows = []
        for run in t["runs"]:
            r85, r88 = run["reached"]["85"], run["reached"]["88"]
            rows.append([run["workers"], run["model"],
                         "IID" if run["scheme"] == "iid" else "Dirichlet(0.5)",
                         f(r85["round"], "{}"), f(r85["seconds_from_launch"], "{:.0f}"),
                         f(r88["round"], "{}"), f(r88["seconds_from_launch"], "{:.0f}"),
                         pct(run["best_acc"]),
                         f"{run['rounds_done']}/{run['rounds_max']}" +
                         (f" (stopped at {100 * (run.get('stop_at') or 0.88):.0f}%)" if run["early_stopped"] else ""),
                         f(run["start_up_s"]), f(run["median_round_s"])])
        fl = ", ".join(f"{100 * a:.1f}%" for a in FLOWER["acc_3_clients"])
        images = " / ".join(sorted({f"{r.get('test_samples') or 0:,}" for r in t["runs"]}))
        models = "/".join(sorted({r["model"] for r in t["runs"]}))
        return "\n".join([
            table(["workers", "model", "partition", "rounds to 85%", "s to 85%", "rounds to 88%",
                   "s to 88%", "best test acc", "rounds run", "start-up (s)", "median round (s)"], rows),
            "",
            "Seconds are from launching the coordinator (start-up included) to the commit of the "
            f"round whose central test accuracy ({images} test images) first reached the target. "
            f"{models}, 1 local epoch, batch 32, "
            "SGD lr 0.05, one thread per process, every worker every round.",
            "",
            f"References (anchors.md): Flower 1.23, 3 clients, same settings: rounds 1-5 at {fl}; "
            f"85% at round {FLOWER['to_85']['round']}, {FLOWER['to_85']['seconds']} s after launch. "
            "NIID-Bench (10 clients, 10 local epochs, batch 64, momentum 0.9, 50 rounds): best "
            "FedAvg 89.2% IID, 88.1% Dirichlet(0.5).",
        ] + self.compression(t.get("compression")))

    def compression(self, rows):
        if not rows:
            return []
        out = []
        for x in rows:
            out.append([x["encoding"], f"{x['workers']} x {x['model']}", x["rounds_done"],
                        f(x["upload_bytes_per_worker_round"] / 1e6, "{:.3f}"),
                        f(x.get("upload_vs_float32"), "{:.2f}x"), pct(x["final_acc"]),
                        f(None if x.get("final_acc_minus_float32") is None
                          else 100 * x["final_acc_minus_float32"], "{:+.2f} pt"),
                        f(x["median_round_s"])])
        return ["", "Update compression (IID, error feedback on the workers; the broadcast stays "
                "float32):", "",
                table(["updates", "federation", "rounds", "upload MB / worker / round",
                       "vs float32", "test acc after last round", "vs float32", "median round (s)"],
                      out)]

    def bytes(self):
        b = self.s.get("bytes_on_wire")
        if not ok(b):
            return f"_not run: {(b or {}).get('error', 'section skipped')}_"
        rows = []
        transport = next((m.get("transport") for m in b["models"] if m.get("transport")), "")
        for m in b["models"]:
            if m.get("status") == "skipped":
                rows.append([m["model"], "–", "–", "–", "–", "–", "–", "–", "–", "skipped"])
                continue
            rd, wr = m.get("wire_bytes_to_worker"), m.get("wire_bytes_from_worker")
            rows.append([m["model"], f"{m['parameters']:,}", f(m["model_bytes"] / 1e6, "{:.3f}"),
                         f(m["bytes_out_per_worker"] / 1e6, "{:.3f}"),
                         f(m["bytes_in_per_worker"] / 1e6, "{:.3f}"),
                         f(m["out_vs_model"], "{:.4f}"), f(m["in_vs_model"], "{:.4f}"),
                         f(rd / 1e6 if rd else None, "{:.3f}"), f(wr / 1e6 if wr else None, "{:.3f}"),
                         f(m["round_s"])])
        return "\n".join([
            table(["model", "parameters", "model (MB)", "coordinator -> worker per round (MB)",
                   "worker -> coordinator per round (MB)", "out / model", "in / model",
                   f"on the wire to a worker (MB, {transport})", f"on the wire from a worker (MB, {transport})",
                   "round (s)"], rows),
            "",
            "Message bytes as the coordinator counts them (metrics.jsonl bytes_in/bytes_out: "
            "application frames, before TLS) for a middle round, divided by the workers; and "
            "the TCP bytes of each worker's connection per round (kernel tcp_info via `ss -ti` "
            "at each round start, middle rounds, median over workers: TLS records, ZeroMQ framing and "
            "heartbeats included; `–` when rounds are too short for the 0.2 s sampling). Out carries the weights once (the TrainTask, which also asks "
            "for the federated evaluation of the version it carries); in carries one update. Flower 1.23 (CNN): "
            f"{FLOWER['bytes_each_way'] / 1e6} MB per client each way per round.",
        ])

    def strategies(self):
        st = self.s.get("strategies")
        if not ok(st):
            return f"_not run: {(st or {}).get('error', 'section skipped')}_"
        rows = []
        for run in st["runs"]:
            rows.append([run["preset"], f"Dirichlet({run['alpha']})",
                         f(run["reached"]["80"], "{}"), f(run["reached"]["85"], "{}"),
                         pct(run["best_acc"]), pct(run["final_acc"]),
                         f"{run['rounds_done']}/{st['rounds']}", f(run["median_round_s"])])
        verdict = []
        for alpha, v in sorted(st.get("verdict", {}).items()):
            verdict.append(f"Dirichlet({alpha}): best preset {v['best_preset']}, "
                           f"{v['best_minus_fedavg_points']:+.1f} points over FedAvg's best; rounds "
                           f"to 85%: FedAvg {v['fedavg_rounds_to_85']}, best {v['best_rounds_to_85']}.")
        return "\n".join([
            table(["preset", "partition", "rounds to 80%", "rounds to 85%", "best test acc",
                   "final test acc", "rounds run", "median round (s)"], rows),
            "",
            f"{st['model']}, {st['workers']} workers, a fixed budget of {st['rounds']} rounds "
            "(no early stop), 1 local epoch, batch 32, lr 0.05; presets as in docs/config.md. "
            "Target (issue #22): on Dirichlet(0.1) the best preset reaches 85% in at most 0.75x "
            "FedAvg's rounds, or ends at least 2 points higher.",
            "",
        ] + verdict)

    def markdown(self):
        m = self.r["meta"]
        head = (f"Measured {m['started']} on {m['cores']} cores ({m['cpu']}, {m['mem_gib']} GiB), "
                f"commit `{m['git_commit'][:12]}`{' (dirty tree)' if m.get('git_dirty') else ''}, "
                f"mode **{m['mode']}**, transport **{m['transport']}**, load average at start "
                f"{m['loadavg_start'][0]:.2f}, suite wall time {f(m.get('elapsed_s'), '{:.0f}')} s.")
        parts = [
            "# Shoal benchmarks", "", head, "",
            "## Targets", "", self.targets(), "",
            "## 1. Micro-benchmarks", "", self.micro(), "",
            "## 2. Round overhead", "", self.overhead(), "",
            "![round phases](round_phases.png)", "",
            "## 3. Coordinator scale", "", self.scale(), "",
            "## 4. Time to accuracy (Fashion-MNIST)", "", self.tta(), "",
            "![accuracy per round](accuracy.png)", "",
            "## 5. Bytes on the wire per round", "", self.bytes(), "",
            "![bytes on the wire](bytes_on_wire.png)", "",
            "## 6. Strategies on label-skewed silos (Fashion-MNIST)", "", self.strategies(), "",
            "![strategies](strategies.png)", "",
        ]
        for name, sec in self.s.items():
            if sec.get("status") == "failed":
                parts += [f"**Section {name} failed:** `{sec.get('error', '')[-300:]}`", ""]
        return "\n".join(parts)

    # ---------------------------------------------------------------------------------

    def plots(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import matplotlib.ticker  # noqa: F401
        except ImportError:
            print("report: python3-matplotlib missing, no plots", file=sys.stderr)
            return []
        made = []

        def save(fig, name, **kw):
            fig.tight_layout()
            path = os.path.join(self.out, name)
            fig.savefig(path, dpi=110, **kw)
            plt.close(fig)
            made.append(path)

        t = self.s.get("time_to_accuracy")
        if ok(t):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
            for run in t["runs"]:
                label = (f"{run['workers']} workers, " +
                         ("IID" if run["scheme"] == "iid" else "Dirichlet(0.5)"))
                pts = [x for x in run["per_round"] if x["central_acc"] is not None]
                a1.plot([x["round"] for x in pts], [100 * x["central_acc"] for x in pts], "o-", label=label)
                a2.plot([x["at_s"] for x in pts], [100 * x["central_acc"] for x in pts], "o-", label=label)
            if any(r["model"] == "cnn" for r in t["runs"]):
                a1.plot(range(1, 6), [100 * a for a in FLOWER["acc_3_clients"]], "k--", alpha=0.6,
                        label="Flower 1.23, 3 clients")
                a2.plot([FLOWER["to_85"]["seconds"]], [85], "kx", label="Flower: 85% at 105 s")
            for ax in (a1, a2):
                for y in (85, 88):
                    ax.axhline(y, color="grey", lw=0.6, ls=":")
                ax.set_ylabel("central test accuracy (%)")
                ax.grid(alpha=0.3)
            a1.set_xlabel("round")
            a1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            a2.set_xlabel("seconds since launch")
            a1.legend(fontsize=8)
            model = t["runs"][0]["model"] if t["runs"] else ""
            fig.suptitle(f"Fashion-MNIST, {model}: accuracy per round")
            save(fig, "accuracy.png")
        b = self.s.get("bytes_on_wire")
        if ok(b):
            ms = [m for m in b["models"] if m.get("model_bytes")]
            if ms:
                fig, ax = plt.subplots(figsize=(6.5, 4.5))
                xs = [m["model_bytes"] for m in ms]
                ax.loglog(xs, [m["bytes_out_per_worker"] for m in ms], "o-", label="coordinator -> worker")
                ax.loglog(xs, [m["bytes_in_per_worker"] for m in ms], "s-", label="worker -> coordinator")
                ax.loglog(xs, xs, "k:", lw=0.8, label="model size")
                for m in ms:
                    ax.annotate(m["model"], (m["model_bytes"], m["bytes_out_per_worker"]),
                                textcoords="offset points", xytext=(4, 4), fontsize=8)
                ax.set_xlabel("model size (bytes of float32 weights)")
                ax.set_ylabel("bytes per worker per round")
                ax.set_title("Bytes on the wire per round vs model size")
                ax.grid(alpha=0.3, which="both")
                ax.legend(fontsize=8)
                save(fig, "bytes_on_wire.png")
        st = self.s.get("strategies")
        if ok(st) and st["runs"]:
            alphas = sorted({r["alpha"] for r in st["runs"]})
            fig, axes = plt.subplots(1, len(alphas), figsize=(5.5 * len(alphas), 4.2), squeeze=False)
            for ax, alpha in zip(axes[0], alphas):
                for run in [r for r in st["runs"] if r["alpha"] == alpha]:
                    pts = [(i + 1, 100 * a) for i, a in enumerate(run["per_round_acc"]) if a is not None]
                    ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=3, label=run["preset"])
                for y in (80, 85):
                    ax.axhline(y, color="grey", lw=0.6, ls=":")
                ax.set_title(f"Dirichlet({alpha})")
                ax.set_xlabel("round")
                ax.set_ylabel("central test accuracy (%)")
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            fig.suptitle(f"Strategies, Fashion-MNIST, {st['model']}, {st['workers']} workers")
            save(fig, "strategies.png")
        ro = self.s.get("round_overhead")
        if ok(ro) and ro["configs"]:
            fig, ax = plt.subplots(figsize=(9, 1.3 + 0.9 * len(ro["configs"])))
            colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#999999"]
            labels = []
            for i, c in enumerate(ro["configs"]):
                left = 0
                for k, col in zip(PHASES, colors):
                    v = c["steady"]["breakdown_s"].get(k, 0) or 0
                    ax.barh(i, v, left=left, color=col, label=k if i == 0 else None)
                    left += v
                floor = c["steady"]["cpu_floor_s"]
                if floor:
                    ax.plot([floor, floor], [i - 0.45, i + 0.45], "k-", lw=2,
                            label="CPU floor" if i == 0 else None)
                fl = FLOWER["round_s"].get(c["workers"]) if self.full and c["model"] == "cnn" else None
                if fl:
                    ax.plot([fl], [i], "kx", ms=9, label="Flower 1.23" if not any(
                        "Flower" in (l or "") for l in labels) else None)
                    labels.append("Flower")
            ax.set_yticks(range(len(ro["configs"])))
            ax.set_yticklabels([f"{c['workers']} workers\n{c['model']}" for c in ro["configs"]])
            ax.set_xlabel("seconds per round (median of steady rounds)")
            ax.set_title("Where a round's wall time goes")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            save(fig, "round_phases.png", bbox_inches="tight")
        return made


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rep = Report(sys.argv[1])
    made = rep.plots()
    md = rep.markdown()
    with open(os.path.join(sys.argv[1], "summary.md"), "w") as fh:
        fh.write(md + "\n")
    print(md)
    for p in made:
        print(f"plot: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
