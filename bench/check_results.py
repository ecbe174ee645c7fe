#!/usr/bin/python3
"""Checks a bench results folder (the ctest `bench_quick` test): results.json has every section,
each finished with numbers where numbers belong, summary.md exists, and so do the plots when
python3-matplotlib is installed. Exit 0 when complete; otherwise prints what is missing.

Usage: check_results.py OUT_DIR
"""
import importlib.util
import json
import math
import os
import sys


def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    s = r.get("sections", {})
    for name in ["micro", "round_overhead", "coordinator_scale", "time_to_accuracy", "bytes_on_wire"]:
        need(name in s, f"section {name} missing")
    for name, sec in s.items():
        allowed = ("ok", "skipped") if name == "coordinator_scale" else ("ok",)
        need(sec.get("status") in allowed, f"{name}: status {sec.get('status')} {sec.get('error', '')[-300:]}")

    m = s.get("micro", {})
    bms = m.get("benchmarks", {})
    need(len(bms) >= 10, f"micro: only {len(bms)} benchmarks")
    for n, b in bms.items():
        need(num(b.get("gb_per_s")) and b["gb_per_s"] > 0, f"micro: {n} has no GB/s")
    need(num(m.get("derived", {}).get("fold_float_vs_memcpy_1663370")), "micro: fold vs memcpy")
    need(num(m.get("derived", {}).get("tls_vs_plain_zmq_6600000")), "micro: tls vs plain")

    ro = s.get("round_overhead", {})
    need(ro.get("configs"), "round_overhead: no configs")
    for c in ro.get("configs", []):
        st = c.get("steady", {})
        for k in ["round_s", "max_worker_train_s", "ratio_to_slowest_train", "cpu_floor_s",
                  "ratio_to_cpu_floor", "cpu_floor_pair_s", "cpu_floor_in_run_s",
                  "ratio_to_cpu_floor_in_run", "train_cpu_s", "eval_cpu_s"]:
            need(num(st.get(k)) and st[k] > 0, f"round_overhead {c.get('run')}: {k}")
        # /proc is sampled every 0.2 s: a round shorter than that has no CPU window.
        need(st.get("shoal_cpu_s") is None or num(st["shoal_cpu_s"]), f"round_overhead {c.get('run')}: shoal_cpu_s")
        for k in ["broadcast", "train", "upload", "aggregate", "evaluate", "commit"]:
            need(num(st.get("breakdown_s", {}).get(k)), f"round_overhead {c.get('run')}: phase {k}")
        for k in ["coordinator", "worker_max"]:
            need(num(c.get("peak_rss_mib", {}).get(k)), f"round_overhead {c.get('run')}: rss {k}")
        cal = c.get("calibration", {})
        for k in ["train_samples_per_s_1core", "train_samples_per_s_2cores", "eval_samples_per_s_1core"]:
            need(num(cal.get(k)) and cal[k] > 0, f"round_overhead {c.get('run')}: calibration {k}")

    sc = s.get("coordinator_scale", {})
    if sc.get("status") == "ok":
        need(sc.get("json") or sc.get("table"), "coordinator_scale: neither JSON nor table")

    tta = s.get("time_to_accuracy", {})
    schemes = {x.get("scheme") for x in tta.get("runs", [])}
    need({"iid", "dirichlet"} <= schemes, f"time_to_accuracy: schemes {schemes}")
    for run in tta.get("runs", []):
        accs = [x.get("central_acc") for x in run.get("per_round", [])]
        need(accs and all(num(a) for a in accs), f"time_to_accuracy {run.get('run')}: accuracies")
        need(all(num(x.get("at_s")) for x in run.get("per_round", [])), f"time_to_accuracy {run.get('run')}: times")
        need(set(run.get("reached", {})) == {"85", "88"}, f"time_to_accuracy {run.get('run')}: targets")
    comp = tta.get("compression") or []
    need({x.get("encoding") for x in comp} >= {"none", "int8"}, "time_to_accuracy: compression runs")
    for x in comp:
        need(num(x.get("final_acc")) and num(x.get("upload_bytes_per_worker_round")),
             f"compression {x.get('encoding')}: accuracy and bytes")

    b = s.get("bytes_on_wire", {})
    measured = [x for x in b.get("models", []) if x.get("status") != "skipped"]
    need(len(measured) >= 3, "bytes_on_wire: fewer than 3 models")
    for x in measured:
        for k in ["parameters", "model_bytes", "bytes_out_per_worker", "bytes_in_per_worker", "round_s"]:
            need(num(x.get(k)) and x[k] > 0, f"bytes_on_wire {x.get('model')}: {k}")
    # TCP bytes need rounds longer than the 0.2 s sampling: the CNN's are, even in quick mode.
    cnn = [x for x in measured if x.get("model") == "cnn"]
    need(cnn and num(cnn[0].get("wire_bytes_to_worker")), "bytes_on_wire cnn: wire bytes")

    st = s.get("strategies", {})
    if "strategies" in s:
        runs = st.get("runs", [])
        alphas = {x.get("alpha") for x in runs}
        need(alphas and len(runs) == 6 * len(alphas),
             f"strategies: {len(runs)} runs, expected 6 presets per alpha")
        for x in runs:
            need(num(x.get("best_acc")) and 0 < x["best_acc"] <= 1,
                 f"strategies {x.get('preset')} alpha {x.get('alpha')}: best_acc")
    need(os.path.getsize(os.path.join(out, "summary.md")) > 500 if os.path.exists(
        os.path.join(out, "summary.md")) else False, "summary.md missing")
    if importlib.util.find_spec("matplotlib"):
        for p in ["accuracy.png", "bytes_on_wire.png", "round_phases.png"] + (
                ["strategies.png"] if "strategies" in s else []):
            need(os.path.exists(os.path.join(out, p)), f"plot {p} missing")
    if problems:
        print("bench results incomplete:\n  " + "\n  ".join(problems))
        return 1
    print(f"bench results complete: {out} ({r['meta'].get('elapsed_s', 0):.0f} s, {r['meta']['mode']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
