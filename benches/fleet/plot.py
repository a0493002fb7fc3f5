"""Plot delivered events/s over time after a salt-master restart (benches/fleet/run.sh).

    plot.py OUT.png LABEL=CSV [LABEL=CSV ...]   (CSV columns: seconds, delivered_per_s)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

dst = sys.argv[1]
fig, ax = plt.subplots(figsize=(8, 4))
for spec in sys.argv[2:]:
    label, _, src = spec.rpartition("=")
    t, r = [0.0], [0.0]
    with open(src, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            t.append(float(row["seconds"]))
            r.append(float(row["delivered_per_s"]))
    # Each rate is the mean over the interval that ends at its time stamp.
    ax.plot(t, r, drawstyle="steps-pre", label=label)
ax.set_xlabel("seconds since salt-master was started again")
ax.set_ylabel("events/s acknowledged by the master")
ax.set_title("beacond fleet: backlog delivery after a salt-master restart")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(dst, dpi=100)
