"""Continue a tinyar run in PyTorch on many processes: x-transformers for the model, torch's
DistributedDataParallel (DDP) for the scale-out. Standalone (torch, x-transformers, safetensors,
numpy; no tinygrad, no tinyar import), so it can be copied to a cluster as it is.

    python cli.py export runs/mine export/                 # tinyar side, no torch needed
    torchrun --nproc-per-node 2 tinyar/ddp_continue.py export/ corpus.txt --steps 100 --out torch_run/
    python cli.py train corpus.txt --init-from torch_run/  # and back into tinyar, if you like

One process per device (CUDA GPUs with NCCL, else CPU with gloo). Each process draws its own
windows of `window` tokens from the first 90% of the corpus (tinyar's training split); DDP
averages the gradients, so one step sees world_size x batch windows. AdamW goes on with the
run's settings, its moments (OUT/optimizer.safetensors) and its learning-rate schedule from its
step (an export without moments ramps the rate up again over --rewarmup steps). Rank 0 prints
the losses and writes OUT/model.safetensors, model.json and optimizer.safetensors in the
export's own format, which this script and `train --init-from` read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper


def lr_at(step: int, a: dict) -> float:
    """tinyar.train.lr_at from the exported settings: linear warmup, then cosine to a floor."""
    s, lr = a["optimizer"]["schedule"], a["optimizer"]["AdamW"]["lr"]
    if step < s["warmup"]:
        return lr * (step + 1) / s["warmup"]
    progress = min(1.0, (step - s["warmup"]) / max(1, s["steps"] - s["warmup"]))
    floor = lr * s["min_lr_ratio"]
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(net, a: dict, moments: dict | None, step: int) -> torch.optim.AdamW:
    """AdamW with the run's settings: weight decay on matrices only (as tinyar), and the run's
    moments ("exp_avg.<name>", "exp_avg_sq.<name>") after `step` updates, when exported."""
    o = a["optimizer"]["AdamW"]
    params = list(net.parameters())
    opt = torch.optim.AdamW([{"params": [q for q in params if q.ndim >= 2]},
                             {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0}],
                            lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    if moments is not None:
        for name, q in net.named_parameters():
            opt.state[q] = {"step": torch.tensor(float(step)), "exp_avg": moments[f"exp_avg.{name}"].clone(),
                            "exp_avg_sq": moments[f"exp_avg_sq.{name}"].clone()}
    return opt


def windows(data: np.ndarray, rng: np.random.Generator, batch: int, n: int) -> torch.Tensor:
    """batch random windows of n bytes. -> (batch, n) int64"""
    starts = rng.integers(0, len(data) - n + 1, batch)
    return torch.from_numpy(np.stack([data[s:s + n] for s in starts]).astype(np.int64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export", type=Path, help="folder written by `python cli.py export`")
    p.add_argument("corpus", type=Path, nargs="+", help="text files, read as one byte stream")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps to add")
    p.add_argument("--batch-size", type=int, default=None, help="windows per process [default: the run's / processes]")
    p.add_argument("--rewarmup", type=int, default=None,
                   help="steps to ramp the learning rate up again [default: 0 with the export's AdamW moments, else 10]")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("torch_run"))
    args = p.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")   # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR ...
    rank, world, local = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed + rank)           # the wrapper's fcm masks differ per process

    a = json.loads((args.export / "model.json").read_text())
    net = TransformerWrapper(**a["TransformerWrapper"], attn_layers=Decoder(**a["Decoder"]))
    net.load_state_dict(load_file(args.export / "model.safetensors"), strict=True)
    model = AutoregressiveWrapper(net, **a["AutoregressiveWrapper"]).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local] if cuda else None)
    params = list(net.parameters())
    o = a["optimizer"]
    start = a.get("step") or 0
    moments = args.export / "optimizer.safetensors"
    opt = make_optimizer(net, a, load_file(moments, device=str(device)) if moments.exists() else None, start)
    rewarmup = args.rewarmup if args.rewarmup is not None else 0 if moments.exists() else 10

    data = np.concatenate([np.fromfile(c, dtype=np.uint8) for c in args.corpus])
    train, val = data[:int(len(data) * 0.9)], data[int(len(data) * 0.9):]
    n = a["window"]
    batch = args.batch_size or max(1, o["batch_size"] // world)
    rng = np.random.default_rng(args.seed * 1009 + rank)
    val_x = windows(val if len(val) > n else train, np.random.default_rng(args.seed), 8, n).to(device)

    def val_ce() -> float:   # plain next-byte cross-entropy, no masking (as tinyar's validation)
        with torch.no_grad():
            logits = net(val_x[:, :-1])
            return F.cross_entropy(logits.transpose(1, 2), val_x[:, 1:], ignore_index=a["tokens"]["PAD"]).item()

    if rank == 0:
        print(f"continuing from step {start} on {world} process(es) ({device.type}), {batch} windows of {n} "
              f"tokens each; val ce {val_ce():.4f}", flush=True)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step = start + i
        lr = lr_at(step, a) * min(1.0, (i + 1) / max(1, rewarmup))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = ddp(windows(train, rng, batch, n).to(device), **a["forward"])
        opt.zero_grad(set_to_none=True)
        loss.backward()                                 # DDP all-reduces (averages) the gradients here
        norm = torch.nn.utils.clip_grad_norm_(params, o["grad_clip"] if o["grad_clip"] > 0 else float("inf"))
        opt.step()
        if (i + 1) % args.log_every == 0 or i + 1 == args.steps:
            mean = loss.detach().clone()
            dist.all_reduce(mean)                       # every process must take part
            if rank == 0:
                tok_s = (i + 1) * batch * world * (n - 1) / (time.perf_counter() - t0)
                print(f"step {step + 1} loss {mean.item() / world:.4f} lr {lr:.2e} |grad| {norm.item():.3f} "
                      f"tok/s {tok_s:,.0f}", flush=True)

    flat = torch.cat([q.detach().flatten() for q in params])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        a = a | {"step": start + args.steps}
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        mv = {f"{k}.{n}": opt.state[q][k].cpu().contiguous() for n, q in net.named_parameters()
              for k in ("exp_avg", "exp_avg_sq")}
        for name, write in (("model.safetensors", lambda f: save_file(state, f, metadata={
                "format": "pt", "x_transformers": json.dumps(a)})),
                            ("optimizer.safetensors", lambda f: save_file(mv, f, metadata={
                                "format": "pt", "step": str(a["step"])})),
                            ("model.json", lambda f: f.write_text(json.dumps(a, indent=2) + "\n"))):
            tmp = args.out / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, args.out / name)            # a reader never sees half a file
        print(f"val ce {val_ce():.4f} · replicas identical: {torch.equal(hi, lo)} · wrote {args.out}/model.safetensors",
              flush=True)
    # every process waits for rank 0's files before leaving: a rank that tore its process group down
    # while rank 0 was still writing left rank 0 (and torchrun) waiting forever (seen under load)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
