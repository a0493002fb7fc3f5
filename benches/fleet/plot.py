"""Plot delivered events/s over time around the salt-master restart (benches/fleet/run.sh)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
t, r = [], []
with open(src, encoding="utf-8") as f:
    for row in csv.DictReader(f):
        t.append(float(row["seconds"]))
        r.append(float(row["delivered_per_s"]))
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(t, r, drawstyle="steps-post")
ax.set_xlabel("seconds since salt-master was started again")
ax.set_ylabel("events/s acknowledged by the master")
ax.set_title("beacond fleet: backlog delivery after a salt-master restart")
ax.grid(True, alpha=0.3)
fig.tight_layout()
fig.savefig(dst, dpi=100)
