"""A small real program for tunekit's tests: reads a params JSON, writes a results JSON.

Usage: trial.py PARAMS RESULTS [--progress PATH] [--counter PATH] [--device-id IDS]
The parameter ``behavior`` picks what it does: crash (exit 3 after a stderr message), hang (never ends),
malformed (results file is not JSON), no_metric (results lack "loss"), progress (three progress lines
before the results), progress_then_hang (one progress line with its pid, then never ends); any other
value: loss = (x - 0.3)^2. It echoes what it received in its results (parameters, device ids,
environment, working directory) and appends its parameters to the counter file.
"""

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("params")
    parser.add_argument("results")
    parser.add_argument("--progress")
    parser.add_argument("--counter")
    parser.add_argument("--device-id")
    args = parser.parse_args()
    with open(args.params) as handle:
        params = json.load(handle)
    behavior = params.get("behavior", "ok")
    x = float(params.get("x", 0.0))
    time.sleep(float(params.get("sleep_s", 0.0)))
    if behavior == "crash":
        print("about to fail", file=sys.stderr)
        print("boom: the model diverged", file=sys.stderr)
        return 3
    if behavior == "hang":
        time.sleep(600)
    if behavior == "malformed":
        with open(args.results, "w") as handle:
            handle.write("{not json")
        return 0
    if behavior == "no_metric":
        with open(args.results, "w") as handle:
            json.dump({"accuracy": 0.5}, handle)
        return 0
    loss = (x - 0.3) ** 2
    if behavior == "progress_then_hang":
        with open(args.progress, "a") as handle:
            handle.write(json.dumps({"loss": 1.0, "pid": os.getpid()}) + "\n")
        time.sleep(600)
    if behavior == "progress":
        for epoch in range(1, 4):
            with open(args.progress, "a") as handle:
                handle.write(json.dumps({"loss": loss + 1.0 / epoch, "epoch": epoch}) + "\n")
            time.sleep(0.3)
    results = {"loss": loss, "received": params, "device_id": args.device_id,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "greeting": os.environ.get("TRIAL_GREETING"), "cwd": os.getcwd()}
    with open(args.results, "w") as handle:
        json.dump(results, handle)
    if args.counter:
        with open(args.counter, "a") as handle:
            handle.write(json.dumps(params, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
