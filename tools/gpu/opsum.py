import sys, re, collections
# Sums the op profile's ms by op-name prefix (first word), from bench stderr.
tot = collections.Counter(); calls = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s+(.+?)\s+([\d.]+) ms\s+([\d.]+) %\s+(\d+) calls", line)
    if m:
        name = m.group(1).strip()
        tot[name] += float(m.group(2)); calls[name] += int(m.group(4))
for k, v in tot.most_common(60):
    print(f"{v:10.1f} ms {calls[k]:7d}  {k}")
print("total", sum(tot.values()))
