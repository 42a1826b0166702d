"""
Self-supervised MotionMAE pretraining: L = L_space + λ·L_time on tube-masked clips.

CPU demo (no arguments; generates the demo dataset, trains a tiny model for a few minutes and
leaves out/ckpt.pt, out/log.jsonl and out/recon_epXXX.png):
    python pretrain.py
The paper's recipe on 8 GPUs (per-dataset presets below; every flag overrides its preset):
    python pretrain.py --data ssv2 --data-root /data/ssv2 --gpus 8
Multi-node: torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 pretrain.py --data k400 ...
VideoMAE baseline: --time-weight 0.  Benchmark on random clips: python pretrain.py --bench --model base
A pretext target of your own: one function in model.TARGETS, then --target-weights NAME=W (README).
Below the pretraining, the training engine finetune.py imports: launch, process group, AMP, lr schedule, the optimizer
step, logs, checkpoint files, preemption, resume.
"""
import argparse
import datetime
import json
import math
import os
import resource
import signal
import socket
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace

import cv2
import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tqdm import tqdm

from data import (BadData, PretrainDataset, clip_args, close_loaders, collate, dataset_info, ensure_demo,
                  fill_clip_args, load_split, make_loader, normalize)
from model import (PRESETS, TARGETS, CheckpointError, ModelConfig, MotionMAE, checkpoint_config, configure_optimizer,
                   decoder_mask, load_checkpoint, num_decoded, patchify, read_checkpoint, sync, unnormalize, unpatchify)

# -----------------------------------------------------------------------------
# recipes: [VideoMAE] full-scale pretraining per dataset (its scripts; EXPERIMENTS.md: Recipes); 'demo' is ours,
# sized for 2 CPU cores

_VIDEOMAE = dict(model='base', epochs=800, warmup_epochs=40, lr=1.5e-4, batch_size=32, mask_ratio=0.9, workers=10)
RECIPES = {
    'ssv2': _VIDEOMAE,
    'k400': _VIDEOMAE,
    'ucf101': dict(_VIDEOMAE, epochs=3200, lr=3e-4, batch_size=24, mask_ratio=0.75),  # its only UCF101 recipe
    # demo [ours]: 640 videos / 32 = 20 steps an epoch; mask 0.75 of a 4 x 4 grid (EXPERIMENTS.md: Today's demo)
    'demo': dict(model='tiny', epochs=44, warmup_epochs=1, lr=4.8e-3, batch_size=32, mask_ratio=0.75, workers=1,
                 log_every=10, vis_every=11),
}
DEFAULTS = dict(repeat=1, log_every=50, vis_every=20)  # where a recipe is silent

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a('--data', help='ssv2 | k400 | ucf101 | list:<file> | demo (ours: demo; k400 sizes with --bench)')
    a('--data-root', default=None, help='dataset folder in its published layout (see README)')
    a('--model', choices=list(PRESETS), help='model size (recipe: base; demo: tiny)')
    a('--batch-size', type=int, help='clips per GPU per step (VideoMAE: 32, UCF101 24)')
    a('--accum', type=int, default=1, help='gradient accumulation steps (ours: 1)')
    a('--epochs', type=int, help='VideoMAE: 800 (ablations 400), UCF101 3200')
    a('--warmup-epochs', type=int, help='VideoMAE: 40')
    a('--lr', type=float, help='lr per 256 clips, times global batch/256 (VideoMAE: 1.5e-4, UCF101 3e-4; demo 4.8e-3)')
    a('--min-lr', type=float, default=1e-5, help='cosine floor per 256 clips (VideoMAE: 1e-5)')
    a('--weight-decay', type=float, default=0.05, help='VideoMAE: 0.05')
    a('--clip-grad', type=float, default=None, help='max grad norm; off by default as in the paper')
    a('--mask-ratio', type=float, help='VideoMAE: 0.9 (UCF101 0.75)')
    a('--mask-type', default='tube', choices=['tube', 'random'], help='paper: tube')
    a('--decoder', default='separate', choices=['separate', 'shared'],
      help="paper's decoder ablation: separate (one decoder a target); shared: one trunk, a head a target")
    a('--time-weight', type=float, default=1.0, help='λ on the motion loss (paper: 1); 0 = VideoMAE')
    a('--target-weights', default='', metavar='NAME=W[,NAME=W]',
      help=f"weights of model.TARGETS ({', '.join(TARGETS)}) over the default space=1,time=λ; 0 drops one (ours)")
    a('--motion-gap', type=int, default=1, help='frames between a frame and its motion partner (paper: 1)')
    a('--motion-norm', default='clip', choices=['clip', 'patch', 'none'], help="ours: one scale per clip (clip)")
    a('--decoder-mask-ratio', type=float, default=0.0, help='share of hidden tokens not decoded (paper: 0; v2: 0.5)')
    a('--checkpoint-activations', action='store_true', help='recompute blocks in backward: less memory (ours: off)')
    a('--repeat', type=int, help='clips cut from each decoded video (ours: 1)')
    a('--out', default='out', help='checkpoint, log.jsonl and pictures')
    clip_args(a)  # --img-size --num-frames --stride: the --data preset's where not given; --flip (data.py)
    run_args(a)  # --workers --amp --compile --gpus --device --seed --resume --save-minutes (the engine, below)
    a('--init', default=None, help='start from a VideoMAE or MotionMAE checkpoint')
    a('--log-every', type=int, help='optimizer steps between log lines (ours: 50; demo 10)')
    a('--vis-every', type=int, help='epochs between reconstruction pictures (ours: 20; demo 11)')
    a('--val-clips', type=int, default=64, help='held-out clips scored each epoch, fixed mask (ours: 64; 0 = off)')
    a('--bench', action='store_true', help='time steps on random clips; print clips/s, MFU, memory')
    a('--bench-steps', type=int, help='timed steps a variant (ours: 20 on CUDA, 3 on CPU)')
    args = p.parse_args(argv)
    args.data = args.data or ('k400' if args.bench else 'demo')
    preset = args.data if args.data in RECIPES else 'k400'
    for k, v in {**DEFAULTS, **RECIPES[preset]}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    fill_clip_args(args, dataset_info(args.data))
    args.flip = bool(args.flip)                                         # [VideoMAE] no flips in pretraining
    try:                                                                # names are checked by the model
        args.target_weights = {n: float(w) for n, w in (i.split('=') for i in args.target_weights.split(',') if i)}
    except ValueError:
        p.error(f'--target-weights {args.target_weights}: expected NAME=W[,NAME=W...] with W a number')
    args.target_weights = args.target_weights or None
    return args

def model_config(args):
    return ModelConfig(**PRESETS[args.model], img_size=args.img_size, num_frames=args.num_frames,
                       mask_ratio=args.mask_ratio, mask_type=args.mask_type, decoder=args.decoder,
                       time_weight=args.time_weight, target_weights=args.target_weights, motion_norm=args.motion_norm,
                       decoder_mask_ratio=args.decoder_mask_ratio, checkpoint_activations=args.checkpoint_activations)

# -----------------------------------------------------------------------------
# training

def main(argv=None):
    args = get_args(argv)
    if args.gpus > 1 and 'RANK' not in os.environ:
        return launch(main, argv, args)
    rank, world, device = init_distributed(args)
    cfg = model_config(args)
    if args.bench:
        return bench(args, cfg, device)
    if args.data == 'demo':                                             # rank 0 generates it, the others wait
        args.data_root = ensure_demo(args.data_root)
    with agreed(world):                                                 # one rank's failure stops all at once
        check_writable(args.out, rank)
        samples, _ = load_split(args.data, args.data_root, 'train')
        if args.batch_size % args.repeat:
            raise SystemExit(f'--batch-size {args.batch_size} must be a multiple of --repeat {args.repeat}')
        dataset = PretrainDataset(samples, num_frames=cfg.num_frames, stride=args.stride, motion_gap=args.motion_gap,
                                  img_size=cfg.img_size, repeat=args.repeat, flip=args.flip)
        loader = make_loader(dataset, args.batch_size // args.repeat, args.workers, shuffle=True, seed=args.seed,
                             rank=rank, world=world)
        steps_per_epoch, clips_per_step, lrs = schedule(args, loader, world)
        torch.manual_seed(args.seed)                                    # same initial weights on every rank
        raw = MotionMAE(cfg).to(device)
        val = val_clips(args, raw)
        if args.init:
            load_checkpoint(raw, args.init)
    opt = configure_optimizer(raw, lrs['peak'], args.weight_decay, (0.9, 0.95), fused=device.type == 'cuda')
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    path = os.path.join(args.out, 'ckpt.pt')
    state = load_resume(args.out, rank, world, device, args.resume)     # rank 0 decides, every rank reads
    if state is not None:
        saved = asdict(checkpoint_config(state, path))                   # fields it predates: their defaults
        changed = [k for k, v in asdict(cfg).items() if saved[k] != v and k != 'checkpoint_activations']
        if changed:
            raise SystemExit(f"{path} was trained with another model config ({', '.join(changed)}); "
                             'use another --out or --no-resume')
        missing, unexpected = load_checkpoint(raw, state, verbose=False, path=path)   # older layouts renamed
        if missing or unexpected:
            raise SystemExit(f'{path} does not hold this model ({len(missing)} tensors missing, {len(unexpected)} '
                             'left over); use another --out or --no-resume')
    step, epoch, it0, nan = restore(state, opt, scaler, clips_per_step, loader.batch_size * world, path, world)
    del state                                                           # the resume copy of model and moments
    model = wrap(raw, device, world, args.compile)                      # after loading: DDP starts from these

    def checkpoint(epoch, it):                                          # it: micro-batches of the epoch done
        state = train_state(opt, scaler, step, epoch, it * loader.batch_size * world, nan, clips_per_step)
        stop = save_checkpoint(path, lambda: dict(model=raw.state_dict(), config=asdict(cfg), args=vars(args), **state),
                               rank, world, device)
        log.last_save = time.time()                                     # the next timed save counts from here
        return stop                                                     # a signal reached some rank

    print0(f'{len(samples)} videos, {steps_per_epoch} steps/epoch of {clips_per_step} clips, lr {lrs["peak"]:.2e}, '
           f'{sum(p.numel() for p in raw.parameters()) / 1e6:.1f}M params, {device}, world {world}, '
           f"targets {', '.join(f'{n}={w:g}' for n, w in raw.weights.items())}")
    log = RunLog(args.out, rank, world, step, epoch, lrs['total'], args.log_every, loader, device)
    B, N = args.batch_size, math.prod(cfg.grid)                         # clips a rank a micro-step, tokens a clip
    # the picture shows the first two held-out clips with their fixed mask (else the first training batch's)
    vis = None if val is None else (normalize(val['x'][:2]).to(device), normalize(val['x_next'][:2]).to(device),
                                    val['mask'][:2].to(device))
    while epoch < args.epochs:
        loader.sampler.set_epoch(epoch, skip=it0 * loader.batch_size)
        for it, batch in enumerate(loader, start=it0):
            if it >= steps_per_epoch * args.accum:                      # the tail that can't fill an accumulation
                break
            micro = it % args.accum
            lr_now = lr_at(step, **lrs)
            set_lr(opt, lr_now)
            x = normalize(batch['x'].to(device, non_blocking=True))     # (B, 3, T, H, W) on the device
            x_next = normalize(batch['x_next'].to(device, non_blocking=True))
            # masks are drawn for the whole global step with one seed and taken by the clip's position in the epoch's
            # order (the sampler deals videos to ranks in turn, micro-batch after micro-batch), so that any world
            # size and --accum with the same global batch, and a resumed run, give each video the same mask
            if micro == 0:                                              # a step starts at micro-batch 0, resumed too
                torch.manual_seed(step_seed(args.seed, step, rank=0))
                masks = raw.draw_mask(clips_per_step, device)           # (B·world·accum, N)
                decs = decoder_mask(masks, num_decoded(cfg)) if cfg.decoder_mask_ratio > 0 else masks
            mask, dec = (m.view(args.accum, -1, world, args.repeat, N)[micro, :, rank].flatten(0, 1)
                         for m in (masks, decs))
            last = micro == args.accum - 1                              # the optimizer step; DDP syncs gradients
            with autocast(device, args.amp), (model.no_sync() if world > 1 and not last else nullcontext()):
                out = model(x, x_next, mask, dec)
                scaler.scale(out['loss'] / args.accum).backward()
            log.batch(batch, len(x) // args.repeat, out, args.accum)
            vis = vis if vis is not None else (x[:2].clone(), x_next[:2].clone(), mask[:2].clone())
            if not last:
                continue
            due = log.save_due(args.save_minutes)                       # on this rank's clock
            loss = log.pending['loss']                                  # the step's, summed over its micro-batches
            stepped, stop, save = optimizer_step(opt, scaler, loss, world, nan, step, args.clip_grad, due)
            step += 1
            log.step(step, epoch, lr_now, clips_per_step, nan['total'], stepped)
            if save:                                                    # every --save-minutes, and when stopped
                stop = checkpoint(epoch, it + 1) or stop
            if stop:                                                    # SIGTERM / SIGUSR1: saved, leave
                preempted(path, step, world, log)
        # end of epoch: bad videos and a stop agreed; held-out losses relative to predicting 0 (not when stopping),
        # checkpoint, pictures
        stop = log.epoch(epoch, step, device, lambda: validate(raw, val, device, args.amp, B) if val and rank == 0
                         else {})
        epoch, it0 = epoch + 1, 0
        if checkpoint(epoch, 0) or stop:
            preempted(path, step, world, log)
        if rank == 0 and vis is not None and (epoch % args.vis_every == 0 or epoch == args.epochs):
            save_reconstruction(raw, *vis, os.path.join(args.out, f'recon_ep{epoch:03d}.png'))
    log.close()
    end_distributed(world)
    print0(f'done: {step} steps, checkpoint {args.out}/ckpt.pt, log {args.out}/log.jsonl')

# -----------------------------------------------------------------------------
# validation: losses on fixed held-out clips and a fixed mask, relative to predicting 0 [ours]

def val_clips(args, raw):
    """The first --val-clips videos of the validation split, one clip each (item i is drawn with seed i: the same
    clips in every run), and a mask drawn with a fixed seed -> {'x', 'x_next': uint8, 'mask'}, or None."""
    try:
        samples = load_split(args.data, args.data_root, 'val')[0][:args.val_clips] if args.val_clips > 0 else []
    except SystemExit as e:                                             # a dataset without a validation split
        print0(f'no held-out losses ({e})')
        return None
    ds = PretrainDataset(samples, num_frames=raw.cfg.num_frames, stride=args.stride, motion_gap=args.motion_gap,
                         img_size=raw.cfg.img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            items = [ds[i] for i in range(len(ds))]
        except BadData as e:
            raise SystemExit(f'validation split: {e}') from None
        return dict(collate(items), mask=raw.draw_mask(len(ds), 'cpu')) if samples else None

@torch.no_grad()
def validate(raw, val, device, amp, chunk):
    """For every target n: val_n_rel = held-out loss / loss of predicting 0 on the same tokens, and beside it
    val_n_mean_rel for the trivial rule (every hidden tubelet = the mean of its clip's visible targets): a model
    below it has learnt more than interpolation. Same clips and mask every time, so runs and epochs compare."""
    was_training, sums = raw.training, {}
    raw.eval()
    for i in range(0, len(val['x']), chunk):
        x, x_next = normalize(val['x'][i:i + chunk].to(device)), normalize(val['x_next'][i:i + chunk].to(device))
        mask = val['mask'][i:i + chunk].to(device)
        with autocast(device, amp):
            out = raw(x, x_next, mask, mask)                            # every hidden token, whatever the decoder mask
        hid, vis = mask[..., None].float(), (~mask)[..., None].float()  # (b, N, 1)
        for n, tgt in raw.forward_targets(x, x_next).items():           # (b, N, K) fp32
            mean_vis = (tgt * vis).sum(1, keepdim=True) / vis.sum(1, keepdim=True)  # (b, 1, K)
            for k, v in ((n, out[f'loss_{n}'].float() * hid.sum() * tgt.shape[-1]), (f'{n}_zero', tgt.pow(2) * hid),
                         (f'{n}_mean', (tgt - mean_vis).pow(2) * hid)):
                sums[k] = sums.get(k, 0.0) + v.sum().item()
    raw.train(was_training)
    return {f'val_{n}{k}_rel': sums[n + k] / max(sums[f'{n}_zero'], 1e-12) for n in raw.weights for k in ('', '_mean')}

# -----------------------------------------------------------------------------
# reconstruction picture: input, masked input, space reconstruction, then each other target: true and predicted

@torch.no_grad()
def save_reconstruction(raw, x, x_next, mask, path, n_frames=8, min_side=128):
    """One row per panel and sample, one column per shown frame, each frame upscaled without smoothing to at least
    min_side px, rows labelled. The space prediction is mapped back to pixels with the true tubelet's mean and std
    (as VideoMAE's pictures); each other pixel-shaped target is drawn true beside predicted (hidden tokens; 0 at the
    visible ones), both divided by the clip's largest true value, 0 as mid-grey."""
    cfg, u, p = raw.cfg, raw.cfg.tubelet_size, raw.cfg.patch_size
    was_training = raw.training
    raw.eval()
    out = raw(x.float(), x_next.float(), mask, mask)
    raw.train(was_training)
    B, K = x.shape[0], 3 * u * p * p
    pix = patchify(unnormalize(x), u, p)                               # (B, N, K) in [0, 1]
    panels = [('input', pix), ('masked', torch.where(mask[..., None], 0.3, pix))]
    if 'pred_space' in out:
        v = pix.view(B, pix.shape[1], -1, 3)                           # (B, N, u·p·p, 3)
        mean, std = v.mean(2, keepdim=True), v.var(2, unbiased=True, keepdim=True).sqrt() + 1e-6
        pred = out['pred_space'].float().view(B, -1, v.shape[2], 3) * std[mask].view(B, -1, 1, 3)
        recon = pix.clone()
        recon[mask] = (pred + mean[mask].view(B, -1, 1, 3)).reshape(-1, K)
        panels.append(('space recon', recon))
    for n, tgt in raw.forward_targets(x.float(), x_next.float()).items():  # (B, N, K_n)
        if n == 'space' or tgt.shape[-1] != K:                         # drawn above, or not pixel-shaped
            continue
        scale = tgt.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)
        pred = torch.zeros_like(tgt)
        pred[mask] = out[f'pred_{n}'].float().reshape(-1, K)
        panels += [(f'true {n}', 0.5 + 0.5 * tgt / scale), (f'pred {n}', 0.5 + 0.5 * pred / scale)]
    shown = range(0, cfg.num_frames, max(1, cfg.num_frames // n_frames))
    side, gap, label = -(-min_side // cfg.img_size) * cfg.img_size, 4, 150  # px: a frame, between, the row names
    rows = []
    for b in range(B):
        for name, v in panels:
            frames = (unpatchify(v, u, p, cfg.grid)[b].clamp(0, 1) * 255).byte().permute(1, 2, 3, 0).cpu().numpy()
            row = np.full((side + gap, label + len(shown) * (side + gap), 3), 255, np.uint8)
            title = f"{name}{f' ({b})' if b else ''}, frames {shown[0]}-{shown[-1]}"
            cv2.putText(row, title, (4, side // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
            for k, t in enumerate(shown):                              # (H, W, 3) RGB -> BGR, nearest-neighbour x zoom
                tile = cv2.resize(frames[t][..., ::-1], (side, side), interpolation=cv2.INTER_NEAREST)
                row[:side, label + k * (side + gap):label + k * (side + gap) + side] = tile
            rows.append(row)
    cv2.imwrite(path, np.concatenate(rows, axis=0))

# -----------------------------------------------------------------------------
# benchmark: random clips, no data loading; clips/s, achieved FLOP/s, MFU, peak memory

def matmul_peak(device, dtype, n, runs=10):
    """The device's FLOP/s on an n x n matmul: the best of `runs` timed runs (its tensors freed on return)."""
    a, best = torch.randn(n, n, device=device, dtype=dtype), float('inf')
    for i in range(runs + 1):                                           # run 0: warm-up
        sync(device)
        t = time.perf_counter()
        a @ a
        sync(device)
        best = min(best, time.perf_counter() - t) if i else best
    return 2 * n ** 3 / best

def bench(args, cfg, device):
    """Every variant beside the configured one: time a step, FLOPs a clip (torch's FlopCounterMode, attention as
    matmuls), FLOP/s and their share of the matmul peak (MFU); peak memory (CPU: the process's, so far)."""
    steps, warmup = args.bench_steps or (20 if device.type == 'cuda' else 3), 2
    dtype = AMP_DTYPES[args.amp] or torch.float32
    peak = matmul_peak(device, dtype, 8192 if device.type == 'cuda' else 2048)
    print0(f'device {device}, {dtype}, matmul peak {peak / 1e12:.2f} TFLOP/s (best of 10); batch {args.batch_size}, '
           f'{steps} timed steps')
    variants = {'configured': cfg, 'videomae (time-weight 0)': replace(cfg, time_weight=0.0, target_weights=None),
                'shared decoder': replace(cfg, decoder='shared'), 'separate decoders': replace(cfg, decoder='separate'),
                'decoder mask 0.5': replace(cfg, decoder_mask_ratio=0.5),
                'checkpoint activations': replace(cfg, checkpoint_activations=True)}
    base = None
    for name, c in variants.items():
        if name != 'configured' and c == cfg:
            continue
        raw = MotionMAE(c).to(device)
        x = torch.randn(args.batch_size, 3, c.num_frames, c.img_size, c.img_size, device=device)
        xn = x + 0.1 * torch.randn_like(x)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            raw(x[:1], xn[:1])['loss'].backward()                       # one clip, forward and backward
        per_clip = counter.get_total_flops()
        model = wrap(raw, device, 1, args.compile)
        opt = configure_optimizer(raw, 1e-4, 0.05, (0.9, 0.95), fused=device.type == 'cuda')
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        for i in range(warmup + steps):                                 # warm-up (and compilation) first
            if i == warmup:
                sync(device)
                t = time.time()
            with autocast(device, args.amp):
                loss = model(x, xn)['loss']
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        dt = (time.time() - t) / steps
        flops = per_clip * args.batch_size / dt
        mem = torch.cuda.max_memory_allocated() if device.type == 'cuda' else 2 ** 10 * resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss                             # CPU: the process's peak so far (KiB)
        base = base or (dt, per_clip)
        mfu = f'{flops / peak:5.1%}' if flops <= peak else '  n/a'      # above the peak: the peak is not known
        print0(f'{name:26s} {dt * 1000:8.0f} ms/step {args.batch_size / dt:8.2f} clips/s '
               f'{flops / 1e12:7.3f} TFLOP/s  MFU {mfu}  GFLOP/clip {per_clip / 1e9:6.1f}  '
               f'time ×{dt / base[0]:.2f} FLOPs ×{per_clip / base[1]:.2f}  peak mem {mem / 2 ** 30:.2f} GiB')
        del raw, model, opt

# -----------------------------------------------------------------------------
# the training engine, shared with finetune.py: processes, AMP, lr schedule, the optimizer step, logs, checkpoint
# files, preemption, resume (optimizer groups and checkpoint loading live with the model, in model.py)

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'none': None}
# a preemption signal (SIGTERM, SIGUSR1) in the loop: its name and time; 'saving' while a checkpoint is being written
STOP = dict(signal=None, t=0.0, saving=False)
# the process group's timeout [ours]: what one rank may wait while another saves, evaluates or compiles alone
# (a ViT-H pretraining checkpoint, 7.5 GiB, saves in 22 s on a local disk: 10 minutes is 27 times that, for slower
# shared file systems and rank 0's held-out losses and pictures; EXPERIMENTS.md: Process group timeout)
TIMEOUT = datetime.timedelta(minutes=10)

def run_args(a):
    """The flags both training scripts take, added with argparse's add_argument `a`: where and how to run."""
    a('--workers', type=int, help='data loader processes per GPU')
    a('--amp', choices=list(AMP_DTYPES), help='autocast dtype, on CPU too (VideoMAE: fp16; ours: bf16 on CUDA, none '
                                              'on CPU, whose cores here have no bf16 units)')
    a('--compile', action=argparse.BooleanOptionalAction, default=None, help='torch.compile (default: on CUDA)')
    a('--gpus', type=int, default=1, help='local processes to launch (none under torchrun, which sets RANK)')
    a('--device', default=None, help='cuda | cuda:K | cpu (default: cuda if available)')
    a('--deterministic', action='store_true', help='deterministic kernels and math attention on CUDA (ours: off)')
    a('--seed', type=int, default=0)
    a('--resume', action=argparse.BooleanOptionalAction, default=True, help='continue from <out>/ckpt.pt')
    a('--save-minutes', type=float, default=30.0, help='also checkpoint every this many minutes')

def launch(main, argv, args):
    """`--gpus N` without torchrun: main(argv) in N local processes of one job. Its store is held here, on a port
    the system picks (or MASTER_PORT), so no other process can take the port; SIGTERM / SIGUSR1 are passed on."""
    import torch.multiprocessing as mp
    first = torch.device(args.device or 'cuda').index or 0
    if args.device != 'cpu' and torch.cuda.is_available() and first + args.gpus > torch.cuda.device_count():
        raise SystemExit(f'--gpus {args.gpus}, but {torch.cuda.device_count()} GPUs are visible '
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    store = torch.distributed.TCPStore('127.0.0.1', int(os.environ.get('MASTER_PORT', 0)), args.gpus + 1, True,
                                       wait_for_workers=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    ctx = mp.start_processes(_spawned, args=(main, argv, args.gpus, store.port), nprocs=args.gpus, join=False)
    signalled = []

    def forward(signum, _):
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, signum)
        if not signalled:
            signalled.append(signum)
            raise Preempted                         # out of ctx.join: each rank now saves or leaves by itself
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, forward)
    try:
        while not ctx.join():
            pass
    except Preempted:
        for p in ctx.processes:
            p.join()
        sys.exit(1)                                 # stopped, not finished; rank 0's line names the checkpoint
    except mp.ProcessExitedException as e:         # a rank stopped; its own message is above
        sys.exit(f'launch: {e}')
    finally:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)

class Preempted(Exception):
    """Raised in launch() by the first SIGTERM / SIGUSR1, to leave ctx.join (which retries on InterruptedError)."""

def _spawned(rank, main, argv, world, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port), MOTIONMAE_STORE='client')
    try:                                         # another exception reaches mp.spawn, which reports it
        main(argv)
    except SystemExit:                           # a one-line stop: no gloo threads left for the teardown
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    finally:                                     # before multiprocessing's exit, which would wait for them
        close_loaders()
    sys.stdout.flush(), sys.stderr.flush()       # all is written: leave without the interpreter's teardown, in
    os._exit(0)                                  # which gloo's threads now and then abort a finished process

def init_distributed(args):
    """Join the job when RANK is set (torchrun or launch): NCCL on CUDA, gloo on CPU, TIMEOUT for a collective. Fills
    args.amp where not given (bf16 on CUDA, none elsewhere). -> (rank, world, torch.device)."""
    if args.gpus > 1 and 'RANK' in os.environ and 'MOTIONMAE_STORE' not in os.environ:    # not launch()'s processes
        raise SystemExit(f"--gpus {args.gpus} under a launcher that set RANK={os.environ['RANK']}: the launcher starts "
                         'the processes (torchrun --nproc-per-node); drop --gpus')
    dev = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    args.amp = args.amp or ('bf16' if dev.type == 'cuda' else 'none')
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (('RANK', 0), ('WORLD_SIZE', 1), ('LOCAL_RANK', 0)))
    if dev.type == 'cuda':
        dev = torch.device('cuda', (dev.index or 0) + local)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not args.deterministic
    else:                                        # processes of one job on one CPU share its cores
        torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get('LOCAL_WORLD_SIZE', world))))
    if args.deterministic:                       # [ours] a resumed run equal to an uninterrupted one on CUDA too
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
    if 'RANK' in os.environ and not torch.distributed.is_initialized():
        store = None
        if os.environ.get('MOTIONMAE_STORE') == 'client':        # launch() holds the store
            store = torch.distributed.TCPStore('127.0.0.1', int(os.environ['MASTER_PORT']), world, False)
        torch.distributed.init_process_group('nccl' if dev.type == 'cuda' else 'gloo', store=store, rank=rank,
                                             world_size=world, timeout=TIMEOUT,
                                             device_id=dev if dev.type == 'cuda' else None)
    return rank, world, dev

def _preempt(signum, _):
    """SIGTERM / SIGUSR1 in the loop (a scheduler's notice): stop at the next point all ranks agree on (a step, an
    epoch's end, a save). Copies within 5 s count once (the scheduler's and a launcher's come together); one more
    than 5 s later exits at once, except during a save: that save finishes, then the stop asked for leaves."""
    if STOP['signal'] is None:
        STOP.update(signal=signal.Signals(signum).name, t=time.time())
    elif time.time() - STOP['t'] > 5 and not STOP['saving']:
        os._exit(128 + signum)

def end_distributed(world):
    """Leave the job: a barrier first, so that no rank closes its connections while another still reads from them
    (gloo otherwise aborts a process at exit now and then)."""
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

def stop_all(world, message):
    """Every rank stops with the same one line (a failure all ranks agreed on), leaving the job first."""
    end_distributed(world)
    raise SystemExit(message)

@contextmanager
def agreed(world):
    """Setup that can fail on one rank only (its node lacks the data root or --init, --out is not writable there):
    a stop (SystemExit) or an error on any rank stops every rank at once with that rank's line, instead of leaving
    the others in the next collective until TIMEOUT. The block must hold no collective."""
    if world == 1:                                              # nobody waits: errors as they are
        yield
        return
    error = ''
    try:
        yield
    except SystemExit as e:
        error = str(e.code) if e.code not in (None, 0) else 'stopped'
    except Exception as e:                                      # a bug: its traceback here, one line elsewhere
        traceback.print_exc()
        error = f'{type(e).__name__}: {e}'.strip().splitlines()[0]
    errors = [''] * world
    torch.distributed.all_gather_object(errors, error)
    failed = [r for r, e in enumerate(errors) if e]
    if failed:
        stop_all(world, f'rank {failed[0]}: {errors[failed[0]]}')

def print0(*a, **kw):
    if int(os.environ.get('RANK', 0)) == 0:
        print(*a, **kw, flush=True)

def wrap(raw, device, world, compile=None):
    """What the step calls: the raw model compiled (default: on CUDA), then under DDP when world > 1; buffers synced
    only where they change (a linear probe's BatchNorm). Checkpoints save `raw` (no '_orig_mod.', 'module.')."""
    model = torch.compile(raw) if (device.type == 'cuda' if compile is None else compile) else raw
    if world > 1:
        changing = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in raw.modules())
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda'
                                                          else None, forward_sync_buffers=changing)
    return model

def autocast(device, amp):
    """Autocast to bf16 / fp16 on the device, CPU included; 'none' runs fp32. Targets and losses stay fp32. (With fp16
    the scripts' GradScaler scales the loss; bf16 has fp32's range and needs none.)"""
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=AMP_DTYPES[amp] is not None)

def schedule(args, loader, world):
    """-> steps an epoch, the global batch (a step: args.accum batches of --batch-size on each rank; clips in
    pretraining, videos in finetuning, as VideoMAE counts them), and lr_at's keywords: peak and floor lr, given per
    256 of that batch and scaled by global batch / 256 [VideoMAE], warmup and total steps."""
    steps = len(loader.dataset) // (loader.batch_size * world * args.accum)  # the same for any world x accum
    batch = args.batch_size * world * args.accum
    if steps == 0:
        raise SystemExit(f'{len(loader.dataset)} videos give no full step of {args.batch_size}x{world}x{args.accum}')
    return steps, batch, dict(peak=args.lr * batch / 256, floor=args.min_lr * batch / 256,
                              warmup=args.warmup_epochs * steps, total=args.epochs * steps)

def lr_at(step, peak, floor, warmup, total):
    """Linear warmup from 0 to `peak` over `warmup` steps [VideoMAE: its schedule starts at 0; its --warmup_lr never
    reaches the scheduler], then half-cosine to `floor` at `total` steps."""
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))

def set_lr(opt, lr):
    """Each parameter group's lr: lr times its 'lr_scale' (layer-wise decay: model.configure_optimizer)."""
    for g in opt.param_groups:
        g['lr'] = lr * g['lr_scale']

def step_seed(seed, micro_step, rank):
    """The seed of all randomness in one micro-step (masks, mixup, drop path): a function of (seed, micro-step,
    rank) only, so a resumed run continues the same trajectory."""
    return seed * 1_000_003 + micro_step * 1009 + rank

def optimizer_step(opt, scaler, loss, world, nan, step, clip_grad=None, due=False):
    """Step, unless the loss or the gradient norm is NaN/inf on some rank: then skip it (the weights stay as they
    are: saves stay allowed), count it in nan ({'total', 'run'}) and stop after 5 in a row. Under fp16 a non-finite
    gradient with a finite loss is the GradScaler's (it skips the step and lowers the scale). -> (stepped, stop: a
    preemption signal reached some rank, save: that, or a save `due` on some rank's clock), all agreed in one
    reduction, the step's one device sync."""
    params = [p for g in opt.param_groups for p in g['params'] if p.grad is not None]
    scaler.unscale_(opt)                                        # fp16: true gradients for the norm (else nothing)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # on the device: no sync
    fills = [torch.full((), float(v), device=loss.device) for v in (STOP['signal'] is None, not due)]  # no host copy
    flags = torch.stack([torch.isfinite(loss.detach()).float(), torch.isfinite(norm).float().to(loss.device), *fills])
    if world > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
    loss_ok, grad_ok, go_on, not_due = flags.tolist()
    stepped = bool(loss_ok and (grad_ok or scaler.is_enabled()))
    if stepped:
        if clip_grad and grad_ok:
            torch.nn.utils.clip_grads_with_norm_(params, clip_grad, norm)
        scaler.step(opt)
        scaler.update()
        nan['run'] = 0
    else:
        if scaler.is_enabled():                                 # fp16: the inf check unscale_ recorded lowers the scale
            scaler.update()
        nan['total'], nan['run'] = nan['total'] + 1, nan['run'] + 1
        print0(f"step {step}: {'gradient' if loss_ok else 'loss'} is NaN/inf, step skipped ({nan['total']} so far)")
        if nan['run'] >= 5:
            stop_all(world, f'loss or gradient NaN/inf for 5 steps in a row at step {step}: lower --lr, set '
                            '--clip-grad or try --amp bf16')
    opt.zero_grad(set_to_none=True)
    return stepped, not go_on, not (go_on and not_due)

def preempted(path, step, world, log):
    """After the checkpoint at a preemption: shut the loaders' workers down, leave the job; rank 0 stops with one
    line naming the checkpoint."""
    close_loaders()
    log.close()
    end_distributed(world)
    if int(os.environ.get('RANK', 0)):                           # the others leave quietly; rank 0's status counts
        raise SystemExit(0)
    why = STOP['signal'] or 'a signal to another rank'
    raise SystemExit(f'stopped by {why} at step {step}: checkpoint {path}; run the same command to continue')

class RunLog:
    """What both loops report: a tqdm bar and <out>/log.jsonl on rank 0; the loss terms summed on the device between
    log lines (.item() only at a log line; means over the steps taken and over ranks); the epoch's bad videos,
    checked at its end. A run that starts at (step, epoch) first drops the lines logged after that point (a crash
    after the last checkpoint: they are logged again), so the log holds one line a step. From here to close(),
    SIGTERM and SIGUSR1 ask the loop to stop (_preempt), and save_due() keeps the time."""

    def __init__(self, out, rank, world, step, epoch, total, every, loader=None, device='cpu'):
        path = os.path.join(out, 'log.jsonl')
        if rank == 0:
            keep = [line for line in (open(path) if os.path.exists(path) else []) if _logged_before(line, step, epoch)]
            with open(path + '.tmp', 'w') as fh:
                fh.writelines(keep)
            os.replace(path + '.tmp', path)
        self.file = open(path, 'a') if rank == 0 else None
        self.bar = tqdm(total=total, initial=step, disable=rank != 0, dynamic_ncols=True)
        self.world, self.every, self.shown, self.loader, self.device = world, every, {}, loader, device
        self.waited, self.epoch_wait, self.warned = getattr(loader, 'waited', 0.0), [0.0, 0.0], False
        self.sums, self.pending, self.steps, self.clips, self.t = {}, {}, 0, 0, time.time()
        self.bad, self.seen, self.examples = 0, 0, []
        self.last_save = time.time()
        STOP.update(signal=None, saving=False)
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, _preempt)

    def save_due(self, minutes):
        return minutes >= 0 and time.time() - self.last_save > 60 * minutes

    def close(self):
        self.bar.close()
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)

    def batch(self, batch, n_videos, out, accum):
        """One micro-batch: its bad videos among the n_videos drawn, and out's loss terms ('loss', 'loss_<name>')."""
        self.bad += len(batch['bad'])
        self.seen += n_videos
        self.examples += batch['bad'][:3]
        for k, v in out.items():
            if k.startswith('loss'):
                self.pending[k] = self.pending.get(k, 0.0) + v.detach() / accum

    def step(self, step, epoch, lr, clips, skipped, stepped):
        """After an optimizer step of `clips` clips (its losses counted if `stepped`: a skipped step's are NaN/inf):
        the bar moves; every `every` steps (and at the last) a log line."""
        self.bar.update(1)
        if stepped:
            self.sums = {k: self.sums.get(k, 0.0) + v for k, v in self.pending.items()}
            self.steps += 1
        self.pending = {}
        self.clips += clips
        if step % self.every and step != self.bar.total:
            return
        keys = sorted(self.sums)                                # the same on every rank: skips are agreed
        dt, waited = time.time() - self.t, getattr(self.loader, 'waited', 0.0)
        row = torch.tensor([(waited - self.waited) / max(dt, 1e-9)], device=self.device)  # the share spent waiting
        row = torch.cat([torch.stack([self.sums[k] for k in keys]).float() / self.steps, row]) if keys else row
        rows = [torch.empty_like(row) for _ in range(self.world)] if self.world > 1 else [row]
        if self.world > 1:                                      # one collective: means over ranks, the largest wait
            torch.distributed.all_gather(rows, row)
        rows = torch.stack(rows)
        rec = dict(zip(keys, rows[:, :-1].mean(0).tolist()), step=step, epoch=epoch, lr=lr, clips_per_s=self.clips / dt,
                   data_wait=rows[:, -1].max().item(), skipped=skipped)
        self.write(rec, {k: f'{v:.4g}' for k, v in rec.items() if k not in ('step', 'epoch', 'skipped')})
        self.epoch_wait = [self.epoch_wait[0] + rec['data_wait'] * dt, self.epoch_wait[1] + dt]
        self.sums, self.steps, self.clips, self.t, self.waited = {}, 0, 0, time.time(), waited

    def epoch(self, epoch, step, device, scores=dict):
        """At an epoch's end (every rank), one reduction: the bad videos drawn over all ranks, and whether a
        preemption signal reached some rank. More than 10% [ours] bad stops with one line naming examples. -> stop:
        True skips scores() (held-out numbers: slow), for the caller to save and leave; else they are written."""
        counts = torch.tensor([self.bad, self.seen, STOP['signal'] is not None], dtype=torch.float64, device=device)
        if self.world > 1:
            torch.distributed.all_reduce(counts)
        bad, seen, stop = int(counts[0]), int(counts[1]), bool(counts[2])
        if seen and bad / seen > 0.1:
            stop_all(self.world, f'{bad} of {seen} videos ({bad / seen:.1%}) failed to load, more than 10%; e.g. '
                             f'{", ".join(self.examples[:5])}. Run `python data.py check`.')
        share, self.epoch_wait = self.epoch_wait[0] / max(self.epoch_wait[1], 1e-9), [0.0, 0.0]
        if share > 0.2 and not self.warned:                     # [ours] a fifth of the time idle: worth a remedy
            self.warned = True
            print0(f'data loading: the loop waited for batches {share:.0%} of epoch {epoch} (the slowest rank): try '
                   f'more --workers (now {self.loader.num_workers}), --repeat in pretraining, a faster disk, or videos '
                   're-encoded at a short side of 320')
        scores = {} if stop else scores()
        self.write(dict(epoch=epoch, step=step, bad_videos=bad, videos=seen, **scores),
                   {k[4:]: f'{v:.3f}' for k, v in scores.items() if isinstance(v, float) and '_mean' not in k})
        self.bad, self.seen, self.examples = 0, 0, []
        return stop

    def write(self, rec, shown):
        """One line of log.jsonl (rank 0), and `shown` on the bar."""
        if self.file:
            self.file.write(json.dumps(rec) + '\n')
            self.file.flush()
        self.shown.update(shown)
        self.bar.set_postfix(self.shown)

def _logged_before(line, step, epoch):
    """Whether a log.jsonl line precedes a run's start at (step, epoch): a step line at step <= `step`, an epoch line
    of an epoch before `epoch` (a torn last line: no)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return rec['epoch'] < epoch if 'bad_videos' in rec else rec['step'] <= step

def check_writable(out, rank=0):
    """Make `out` and write a file there before the first step: a folder that refuses stops the run at once. The
    probe is named by host, rank and process (ranks may share the folder; PID namespaces repeat pids across nodes)."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f'.write-test-{socket.gethostname()}-{rank}-{os.getpid()}')
        with open(probe, 'wb') as fh:
            fh.write(b'0')
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f'--out {out} is not writable: {e.strerror or e}') from None

def save_checkpoint(path, state, rank=0, world=1, device='cpu'):
    """Rank 0 writes state() atomically and durably: path.tmp, fsync, os.replace, fsync of the folder (else a crash
    can leave an empty file under the final name). A save the file system refuses (full disk, quota, file-size limit,
    permissions), or a model with NaN/inf weights, keeps the previous checkpoint (the temp file removed) and stops
    every rank, rank 0 with one line. A second signal does not interrupt a save (_preempt). -> stop: a preemption
    signal reached some rank by the end of the save, agreed in the save's one reduction."""
    error, STOP['saving'] = '', True
    if rank == 0:
        try:
            s = state()
            bad = [k for k, v in s.get('model', {}).items() if v.is_floating_point() and not v.isfinite().all()]
            if bad:
                raise ValueError(f'{len(bad)} model tensors hold NaN/inf (e.g. {bad[0]}), the last checkpoint is kept')
            with open(path + '.tmp', 'wb') as fh:
                torch.save(s, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(path + '.tmp', path)
            folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
            try:
                os.fsync(folder)
            except OSError:                                     # a file system that cannot sync a folder
                pass
            os.close(folder)
        except Exception as e:                                  # torch.save: a RuntimeError after the OSError
            cause = e.__context__ if isinstance(e, RuntimeError) and e.__context__ else e
            error = getattr(cause, 'strerror', None) or str(e).strip().splitlines()[-1] or type(e).__name__
            if os.path.exists(path + '.tmp'):
                os.remove(path + '.tmp')
    flags = torch.tensor([float(bool(error)), float(STOP['signal'] is not None)], device=device)
    if world > 1:                                               # the others learn of it, not wait in vain
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    STOP['saving'] = False                                      # every rank: rank 0 has written by now
    if flags[0]:
        stop_all(world, f'cannot save checkpoint {path}: {error}' if rank == 0 else 1)
    return bool(flags[1])

def train_state(opt, scaler, step, epoch, videos, nan, clips):
    """What a checkpoint holds besides the model to continue the trajectory: the position (step, epoch, the videos of
    the epoch the job has done), optimizer, scaler, NaN count and the global batch (clips a step)."""
    return dict(optimizer=opt.state_dict(), scaler=scaler.state_dict(), step=step, epoch=epoch, videos=videos,
                n_nan=nan['total'], clips_per_step=clips)

def load_resume(out, rank, world, device, resume=True):
    """The checkpoint every rank resumes from, or None. Rank 0 decides (<out>/ckpt.pt, if there) and tells the
    others; each reads that file. A rank that cannot read it (--out on a node-local disk) or reads another step (a
    stale copy) stops the job with one line."""
    found = [os.path.join(out, 'ckpt.pt')]
    found = [found[0] if resume and rank == 0 and os.path.exists(found[0]) else None]
    if world > 1:
        torch.distributed.broadcast_object_list(found, src=0, device=device)
    if found[0] is None:
        return None
    try:
        state = read_checkpoint(found[0])
        steps = [state.get('step')]
    except CheckpointError as e:
        state, steps = None, [str(e)]
    if world > 1:
        mine, steps = steps[0], [None] * world
        torch.distributed.all_gather_object(steps, mine)
    if isinstance(steps[0], str):                               # rank 0 cannot read its own checkpoint
        stop_all(world, f'{steps[0]}; to start over use --no-resume or another --out')
    bad = [r for r, s in enumerate(steps) if s != steps[0] or isinstance(s, str)]
    if bad:
        why = steps[bad[0]] if isinstance(steps[bad[0]], str) else f'step {steps[bad[0]]}, rank 0 step {steps[0]}'
        stop_all(world, f'rank {bad[0]} cannot resume from {found[0]} with rank 0 ({why}): --out must be one folder '
                 'every rank reads (a shared file system); to start over use --no-resume or another --out')
    return state

def restore(state, opt, scaler, clips, videos_a_step, path, world=1):
    """Optimizer, scaler and position from a train_state (None: a fresh start) -> step, epoch, micro-batches this
    rank has done in the epoch, NaN counters. Another global batch than the checkpoint's stops with one line."""
    if state is None:
        return 0, 0, 0, {'total': 0, 'run': 0}
    if state.get('clips_per_step', clips) != clips:
        stop_all(world, f"{path} was trained with a global batch of {state['clips_per_step']}, this run has {clips} "
                 '(--batch-size x processes x --accum), which changes the lr and the schedule: use the same global '
                 'batch, or another --out')
    opt.load_state_dict(state['optimizer'])
    scaler.load_state_dict(state['scaler'])
    print0(f"resumed from {path} at epoch {state['epoch']}, step {state['step']}")
    it = state['videos'] // videos_a_step if 'videos' in state else state['it']    # 'it': older checkpoints
    return state['step'], state['epoch'], it, {'total': state['n_nan'], 'run': 0}

if __name__ == '__main__':
    main()
