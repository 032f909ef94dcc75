import re, sys
prev = None
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"(\d+) (.*)", line)
    if not m:
        continue
    t, text = int(m.group(1)), m.group(2)
    s = re.search(r"Running stage '([^']+)'|Reproducing experiment '([^']+)'", text)
    if s:
        if prev:
            rows.append((prev[1], t - prev[0]))
        prev = (t, s.group(1) or "exp " + s.group(2))
    last = t
if prev:
    rows.append((prev[1], last - prev[0]))
for name, d in rows:
    print(f"{name:30s} {d:6d}")
print("last timestamp", last)
