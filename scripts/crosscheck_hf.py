#!/usr/bin/env python3
"""Loads a Hugging Face directory written by `kvant quantize --out-format hf|gptq|compressed-tensors` with
transformers on CPU (float32 activations) and compares its logits with kvant's own logits of the same directory.

usage: crosscheck_hf.py DIR IDS_FILE KVANT_LOGITS [KVANT_LOGITS_NO_ACT] [--tol 1e-2]
  IDS_FILE       int32 little-endian token ids (one sequence)
  KVANT_LOGITS   float32 [n_ids, vocab] from kvant's forward pass of DIR
  KVANT_LOGITS_NO_ACT  for checkpoints with dynamic activation quantization (W8A8, FP8_DYNAMIC): kvant's logits
                 with the activation quantizer off. The weights are then checked against transformers with its
                 input-activation quantizer off (<= tol, same argmax); with both quantizers on, a rounding flip of
                 one activation moves the logits, so two implementations can agree only to the model's own noise
                 floor: transformers' change under a 1e-7 relative perturbation of the input embeddings. That check
                 asks for <= max(tol, 1.5 x floor) and >= 95% argmax agreement, and prints both numbers.
Prints the max abs logit difference and argmax agreement; exit 0 when max abs diff <= tol and every argmax
agrees, 1 otherwise, 77 when a package is missing (the test skips).
GPTQ directories need optimum + gptqmodel (their torch kernel runs on CPU); compressed-tensors directories need
compressed-tensors (transformers decompresses the weights and applies the dynamic activation quantizer)."""
import json
import sys


def main():
    args = sys.argv[1:]
    tol = 1e-2
    if "--tol" in args:
        i = args.index("--tol")
        tol = float(args[i + 1])
        del args[i:i + 2]
    if len(args) not in (3, 4):
        print(__doc__)
        return 2
    d, ids_path, logits_path = args[:3]
    noact_path = args[3] if len(args) == 4 else None
    try:
        import numpy as np
        import torch
        import transformers
    except ImportError as e:
        print(f"missing package: {e}")
        return 77
    method = json.load(open(f"{d}/config.json")).get("quantization_config", {}).get("quant_method", "none")
    try:
        if method == "gptq":
            import optimum  # noqa: F401
            import gptqmodel  # noqa: F401
        elif method == "compressed-tensors":
            import compressed_tensors  # noqa: F401
    except ImportError as e:
        print(f"missing package for {method}: {e}")
        return 77
    torch.manual_seed(0)
    kw = {"dtype": torch.float32}
    if method == "gptq":
        kw["device_map"] = "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(d, **kw)
    model.eval()
    ids = np.fromfile(ids_path, dtype="<i4")
    x = torch.tensor(ids[None, :].astype(np.int64))
    with torch.no_grad():
        out = model(x).logits[0].float().numpy()
    ref = np.fromfile(logits_path, dtype="<f4").reshape(out.shape)
    diff = float(np.abs(out - ref).max())
    agree = int((out.argmax(-1) == ref.argmax(-1)).sum())
    n = len(ids)
    print(f"{method}: transformers {transformers.__version__}, {n} tokens: max abs logit diff {diff:.3g}, "
          f"argmax agrees {agree}/{n}")
    if noact_path is None:
        return 0 if diff <= tol and agree == n else 1
    noact = np.fromfile(noact_path, dtype="<f4").reshape(out.shape)
    with torch.no_grad():
        emb = model.model.embed_tokens(x)
        floor = 0.0
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            pert = model(inputs_embeds=emb * (1 + 1e-7 * torch.randn(emb.shape, generator=g))).logits[0].numpy()
            floor = max(floor, float(np.abs(pert - out).max()))
        for mod in model.modules():
            sch = getattr(mod, "quantization_scheme", None)
            if sch is not None and sch.input_activations is not None:
                sch.input_activations = None
        off = model(x).logits[0].float().numpy()
    wdiff = float(np.abs(off - noact).max())
    wagree = int((off.argmax(-1) == noact.argmax(-1)).sum())
    print(f"{method}: activation quantizers off: max abs logit diff {wdiff:.3g}, argmax agrees {wagree}/{n}; "
          f"on: noise floor (transformers vs itself, 1e-7 input perturbation) {floor:.3g}")
    ok_w = wdiff <= tol and wagree == n
    ok_a = diff <= max(tol, 1.5 * floor) and agree >= 0.95 * n
    return 0 if ok_w and ok_a else 1

if __name__ == "__main__":
    sys.exit(main())
