#!/usr/bin/env python3
"""render_alloc.py OUT — Markdown tables of scripts/results_alloc.sh's JSON outputs (stdlib only)."""
import json, sys, os

out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))

def linear_bits(inspect):
    bits = params = 0
    for t in inspect["tensors"]:
        if t["name"].startswith("blk.") and len(t["shape"]) == 2:
            n = 1
            for d in t["shape"]:
                n *= d
            bits += 8 * t["bytes"]
            params += n
    return bits / params

al = load("alphas_report.json")
print("### Layer sensitivities (proxy-27m, KLD metric, calib.txt 4096 tokens)\n")
alphas = sorted(al["layers"], key=lambda l: -l["alpha"])
r2 = [l["r2"] for l in al["layers"]]
print(f"{len(al['layers'])} linear layers; fit R² median {sorted(r2)[len(r2)//2]:.4f}, min {min(r2):.4f}. "
      "Most sensitive: " + ", ".join(f"{l['name']} ({l['alpha']:.3g})" for l in alphas[:5]) +
      "; least: " + ", ".join(f"{l['name']} ({l['alpha']:.3g})" for l in alphas[-3:]) + ".\n")
print("| check | configurations | Pearson r | mean rel. error (value) | mean rel. error (change) |")
print("|---|---|---|---|---|")
for name, f in (("ggml q2_k…q6_k", "check_ggml.json"), ("HIGGS grids + rht", "check_higgs.json")):
    c = load(f)
    print(f"| {name} | {len(c['configs'])} | {c['correlation']:.4f} | {100*c['mean_rel_err']:.1f}% | "
          f"{100*c['mean_rel_err_change']:.1f}% |")
print()
for title, f in (("ggml types (q2_k … q8_0)", "sweep_ggml.json"), ("HIGGS grids after rht:512", "sweep_higgs.json")):
    s = load(f)
    print(f"### Allocation with {title} — WikiText-2 first 40 windows (base PPL {s['base_ppl']:.4f})\n")
    print("| budget | uniform bits | uniform PPL | uniform KLD | DP bits | DP PPL | DP KLD | waterfill bits | waterfill PPL | waterfill KLD |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by = {}
    for r in s["rows"]:
        by.setdefault(r["budget"], {})[r["mode"]] = r
    for b in sorted(by):
        cells = [f"{b:g}"]
        for m in ("uniform", "linearity", "waterfill"):
            r = by[b].get(m)
            if not r or not r["feasible"]:
                cells += ["—", "—", "—"]
            else:
                cells += [f"{r['bits_per_weight']:.3f}", f"{r['ppl']:.3f}", f"{r['kld']:.4f}"]
        print("| " + " | ".join(cells) + " |")
    print()
q = load("q4_k_m.json")
dp = load("dp425.json")
def row(j):
    r = j["eval"]["rows"][1]
    return r["ppl"], r["kld_mean"]
qb, db = linear_bits(load("q4_k_m.inspect.json")), linear_bits(load("dp425.inspect.json"))
qp, qk = row(q)
dpp, dk = row(dp)
print("### Against llama.cpp's q4_k_m mix (same scope: embedding and head bf16)\n")
print("| model | bits/weight (decoder linears) | file MiB | PPL | KLD |")
print("|---|---|---|---|---|")
print(f"| q4_k_m (llama.cpp rules) | {qb:.3f} | {q['file_bytes']/2**20:.2f} | {qp:.3f} | {qk:.4f} |")
print(f"| linearity DP, 4.25 bits, ggml menu | {db:.3f} | {dp['file_bytes']/2**20:.2f} | {dpp:.3f} | {dk:.4f} |")
