#!/usr/bin/python3
"""Prints the SMTP benchmark's tables (Markdown) from run.sh's results file.

    report.py RESULTS.tsv ROUNDS SECONDS

RESULTS.tsv: round, kind (source|bdat), load (sessions:messages:octets), target, messages accepted,
seconds, msg/s, server CPU ticks (1/100 s), client CPU ticks, cores used by other processes.
"""

import collections
import statistics
import sys

path, rounds, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rates = collections.defaultdict(list)
cpu = collections.defaultdict(list)      # server CPU µs per message
client_cpu = collections.defaultdict(list)  # load generator CPU µs per message
other = collections.defaultdict(list)    # cores used by other processes
loads = {"source": [], "bdat": []}
for line in open(path):
    fields = line.rstrip("\n").split("\t")
    rnd, kind, load, target, sent, secs, rate = fields[:7]
    key = (kind, load, target)
    rates[key].append(float(rate))
    if len(fields) >= 10 and fields[7] and int(sent) > 0:
        cpu[key].append(int(fields[7]) * 10000 / int(sent))
        client_cpu[key].append(int(fields[8]) * 10000 / int(sent))
        other[key].append(float(fields[9]))
    if load not in loads[kind]:
        loads[kind].append(load)
median = {key: statistics.median(values) for key, values in rates.items()}


def name(load):
    s, m, l = load.split(":")
    size = "%d KiB" % (int(l) // 1024) if int(l) % 1024 == 0 else "%s B" % l
    return "%s × %s × %s" % (s, m, size)


def cell(kind, load, target):
    key = (kind, load, target)
    if key not in median:
        return "–"
    return "**%.0f** (%s)" % (median[key], " / ".join("%.0f" % r for r in rates[key]))


def ratio(kind, load, a, b, goal=None):
    if (kind, load, a) not in median or (kind, load, b) not in median or median[kind, load, b] == 0:
        return "–"
    r = median[kind, load, a] / median[kind, load, b]
    if goal is None:
        return "%.2f×" % r
    return "%.2f× %s" % (r, "met" if r >= goal else "**not met**")


print()
print("Medians of %d rounds in messages per second, the %d runs in brackets (measuring took %d s)."
      % (rounds, rounds, seconds))
print()
print("smtp-source (DATA, no pipelining, -d: connections kept open):")
print()
columns = ["ours-journal", "ours-direct", "aiosmtpd-maildir", "aiosmtpd-inline", "postfix", "postfix-e2e", "ours-discard", "smtp-sink"]
columns = [c for c in columns if any(("source", l, c) in median for l in loads["source"])]
print("| load | " + " | ".join(columns) + " |")
print("| --- |" + " ---: |" * len(columns))
for load in loads["source"]:
    print("| %s | " % name(load) + " | ".join(cell("source", load, c) for c in columns) + " |")
print()
print("Ratios of the medians, against the targets:")
print()
print("| load | journal / aiosmtpd (≥ 2.5× one session, ≥ 6× 20 × 4 KiB) | direct / aiosmtpd | journal / aiosmtpd-inline | journal / postfix | journal / postfix-e2e | discard / smtp-sink (≥ 0.8×) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for load in loads["source"]:
    target = 2.5 if load.startswith("1:") else 6 if load.startswith("20:") and load.endswith(":4096") else None
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        name(load),
        ratio("source", load, "ours-journal", "aiosmtpd-maildir", target),
        ratio("source", load, "ours-direct", "aiosmtpd-maildir"),
        ratio("source", load, "ours-journal", "aiosmtpd-inline"),
        ratio("source", load, "ours-journal", "postfix"),
        ratio("source", load, "ours-journal", "postfix-e2e"),
        ratio("source", load, "ours-discard", "smtp-sink", 0.8)))
if loads["bdat"]:
    print()
    print("bdat_load.py (MAIL, RCPT and BDAT LAST pipelined in one write), next to smtp-source's DATA on the same load:")
    print()
    print("| load | ours-journal BDAT | ours-journal DATA | ours-discard BDAT | ours-discard DATA |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for load in loads["bdat"]:
        print("| %s | %s | %s | %s | %s |" % (
            name(load), cell("bdat", load, "ours-journal"), cell("source", load, "ours-journal"),
            cell("bdat", load, "ours-discard"), cell("source", load, "ours-discard")))
print()
print("Server CPU per message in µs (median; Postfix: master and its daemons, during the smtp-source run only),")
print("and the most cores other processes used during any run of the case:")
print()
cpu_columns = [c for c in columns if c != "postfix-e2e"]
print("| load | " + " | ".join(cpu_columns) + " |")
print("| --- |" + " ---: |" * len(cpu_columns))
for kind in ("source", "bdat"):
    for load in loads[kind]:
        cells = []
        for c in cpu_columns:
            key = (kind, load, c)
            cells.append("%.0f (%.2f)" % (statistics.median(cpu[key]), max(other[key])) if cpu.get(key) else "–")
        print("| %s%s | " % (name(load), " BDAT" if kind == "bdat" else "") + " | ".join(cells) + " |")
if loads["bdat"]:
    print()
    print("Load generator CPU per message in µs (median), smtp-source vs bdat_load.py (Python), against ours-discard:")
    print()
    print("| load | smtp-source | bdat_load.py |")
    print("| --- | ---: | ---: |")
    for load in loads["bdat"]:
        a, b = client_cpu.get(("source", load, "ours-discard")), client_cpu.get(("bdat", load, "ours-discard"))
        print("| %s | %s | %s |" % (name(load), "%.0f" % statistics.median(a) if a else "–", "%.0f" % statistics.median(b) if b else "–"))
