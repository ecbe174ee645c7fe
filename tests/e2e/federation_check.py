#!/usr/bin/env python3
"""Waits for and checks a running Shoal federation through the coordinator's HTTP API.

  federation_check.py URL wait-rounds N TIMEOUT_S
      until N rounds are committed (fails at once if the run failed)
  federation_check.py URL expect MIN_ACCURACY WORKER[,WORKER...] [--rose]
      the last committed round's central accuracy is at least MIN_ACCURACY (a fraction) and,
      with --rose, above round 1's; every named worker took part in round 1 and in every round
      since, as /api/rounds and /api/workers both say
  federation_check.py URL wait-contribution WORKER AFTER_ROUND TIMEOUT_S
      until a round later than AFTER_ROUND is committed with WORKER among its participants
  federation_check.py URL wait-finished TIMEOUT_S
      until the run is finished; then the dashboard page must still be served
The coordinator's bearer token, if it needs one, comes from the environment: SHOAL_HTTP_TOKEN.
Standard library only. Exit 0 when the condition holds, 1 otherwise (with the reason).
"""
import os
import json
import sys
import time
import urllib.error
import urllib.request


def get(url, path, raw=False):
    request = urllib.request.Request(url + path)
    token = os.environ.get("SHOAL_HTTP_TOKEN", "")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
        return body.decode() if raw else json.loads(body)


def try_get(url, path):
    try:
        return get(url, path)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return e


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def describe(r):
    acc = (r.get("central") or {}).get("accuracy")
    acc_s = "%.2f%%" % (100 * acc) if isinstance(acc, (int, float)) else "-"
    return "round %s: central accuracy %s, participants %s, %.1f s" % (
        r.get("round"), acc_s, ",".join(sorted(r.get("participants", []))),
        sum((r.get("phases_s") or {}).values()))


def poll(url, timeout_s, done):
    """Calls done(status, rounds) every second until it returns True or the time is up."""
    deadline = time.time() + timeout_s
    seen = 0
    last_err = None
    while time.time() < deadline:
        status = try_get(url, "/api/status")
        rounds = try_get(url, "/api/rounds")
        if isinstance(status, Exception) or isinstance(rounds, Exception):
            last_err = status if isinstance(status, Exception) else rounds
        else:
            for r in rounds[seen:]:
                print("  " + describe(r), flush=True)
            seen = max(seen, len(rounds))
            if status.get("state") == "failed":
                fail("the run failed: %s" % json.dumps(status))
            if done(status, rounds):
                return status, rounds
        time.sleep(1)
    fail("timed out after %d s (last error: %s)" % (timeout_s, last_err))


def main(argv):
    url, cmd, args = argv[1].rstrip("/"), argv[2], argv[3:]
    if cmd == "wait-rounds":
        n, timeout_s = int(args[0]), float(args[1])
        poll(url, timeout_s, lambda s, rounds: len(rounds) >= n)
    elif cmd == "expect":
        min_acc, names, rose = float(args[0]), args[1].split(","), "--rose" in args[2:]
        rounds, workers = get(url, "/api/rounds"), get(url, "/api/workers")
        if not rounds:
            fail("no committed round")
        acc = rounds[-1]["central"]["accuracy"]
        if acc < min_acc:
            fail("accuracy %.4f after round %d is below %.4f" % (acc, rounds[-1]["round"], min_acc))
        if rose and acc <= rounds[0]["central"]["accuracy"]:
            fail("accuracy did not rise: %s" % [r["central"]["accuracy"] for r in rounds])
        by_name = {w["name"]: w for w in workers}
        for name in names:
            took = [r["round"] for r in rounds if name in r["participants"]]
            if took != [r["round"] for r in rounds]:
                fail("%s took part in rounds %s of %d" % (name, took, len(rounds)))
            if name not in by_name or not set(took) <= set(by_name[name].get("rounds", [])):
                fail("/api/workers does not show %s in rounds %s: %s" % (name, took, by_name.get(name)))
        print("ok: accuracy %.2f%% after round %d; %s took part in every round" % (
            100 * acc, rounds[-1]["round"], ", ".join(names)))
    elif cmd == "wait-contribution":
        name, after, timeout_s = args[0], int(args[1]), float(args[2])
        _, rounds = poll(url, timeout_s, lambda s, rounds: any(
            r["round"] > after and name in r["participants"] for r in rounds))
        first = min(r["round"] for r in rounds if r["round"] > after and name in r["participants"])
        w = {w["name"]: w for w in get(url, "/api/workers")}.get(name)
        if not w or first not in w.get("rounds", []):
            fail("/api/workers does not list %s in round %d: %s" % (name, first, w))
        print("ok: %s joined after round %d and contributed to round %d (samples %s)" % (
            name, after, first, w.get("samples")))
    elif cmd == "wait-finished":
        timeout_s = float(args[0])
        status, rounds = poll(url, timeout_s, lambda s, rounds: s.get("state") == "finished")
        page = get(url, "/", raw=True)
        if "<html" not in page.lower():
            fail("the dashboard page is not served after the run")
        print("ok: run finished after round %s (version %s); dashboard still served" % (
            status.get("round"), status.get("version")))
    else:
        fail("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
