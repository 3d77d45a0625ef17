#!/usr/bin/env python3
"""Status codes per operation from a schemathesis NDJSON report, to see what
the fuzzer reached (e.g. whether requests got past authentication and
validation). Usage: python3 bench/schemathesis_summary.py REPORT.ndjson"""
import collections
import json
import sys


def main(path: str) -> None:
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in open(path):
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        cases = recorder.get("cases", {})
        for case_id, it in recorder.get("interactions", {}).items():
            req, resp = it.get("request") or {}, it.get("response") or {}
            case = (cases.get(case_id) or {}).get("value") or {}
            op = f"{req.get('method')} {case.get('path') or recorder.get('label')}"
            stats[op][resp.get("status_code", "no response")] += 1
    width = max((len(k) for k in stats), default=10)
    for op in sorted(stats):
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(stats[op].items(), key=lambda x: str(x[0])))
        print(f"  {op.ljust(width)}  {codes}")


if __name__ == "__main__":
    main(sys.argv[1])
