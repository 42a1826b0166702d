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
"""
import argparse
import math
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import asdict, replace

import cv2
import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from data import (AMP_DTYPES, BadData, PretrainDataset, RunLog, autocast, check_writable, clip_args, collate,
                  dataset_info, end_distributed, fill_clip_args, init_distributed, launch, load_resume, load_split,
                  lr_at, make_loader, normalize, optimizer_step, preempted, print0, restore, run_args,
                  save_checkpoint, schedule, set_lr, step_seed, sync, train_state, wrap)
from model import (PRESETS, TARGETS, ModelConfig, MotionMAE, checkpoint_config, configure_optimizer, decoder_mask,
                   load_checkpoint, num_decoded, patchify, unnormalize, unpatchify)

# -----------------------------------------------------------------------------
# recipes: [VideoMAE] full-scale pretraining per dataset; 'demo' is ours, sized for 2 CPU cores

_VIDEOMAE = dict(model='base', epochs=800, warmup_epochs=40, lr=1.5e-4, batch_size=32, mask_ratio=0.9, workers=10)
RECIPES = {
    'ssv2': _VIDEOMAE,
    'k400': _VIDEOMAE,
    'ucf101': dict(_VIDEOMAE, lr=3e-4, mask_ratio=0.75),
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
    a('--batch-size', type=int, help='clips per GPU per step (VideoMAE: 32)')
    a('--accum', type=int, default=1, help='gradient accumulation steps (ours: 1)')
    a('--epochs', type=int, help='VideoMAE: 800 (ablations 400)')
    a('--warmup-epochs', type=int, help='VideoMAE: 40')
    a('--lr', type=float, help='lr per 256 clips, times global batch/256 (VideoMAE: 1.5e-4, UCF101 3e-4; demo 4.8e-3)')
    a('--min-lr', type=float, default=1e-5, help='cosine floor per 256 clips (VideoMAE: 1e-5)')
    a('--weight-decay', type=float, default=0.05, help='VideoMAE: 0.05')
    a('--clip-grad', type=float, default=None, help='max grad norm; off by default as in the paper')
    a('--mask-ratio', type=float, help='VideoMAE: 0.9 (UCF101 0.75)')
    a('--mask-type', default='tube', choices=['tube', 'random'], help='paper: tube')
    a('--decoder', default='separate', choices=['separate', 'shared'], help='paper: separate')
    a('--time-weight', type=float, default=1.0, help='λ on the motion loss (paper: 1); 0 = VideoMAE')
    a('--target-weights', default='', metavar='NAME=W[,NAME=W]',
      help=f"weights of model.TARGETS ({', '.join(TARGETS)}) over the default space=1,time=λ; 0 drops one (ours)")
    a('--motion-gap', type=int, default=1, help='frames between a frame and its motion partner (paper: 1)')
    a('--motion-norm', default='clip', choices=['clip', 'patch', 'none'], help="ours: one scale per clip (clip)")
    a('--decoder-mask-ratio', type=float, default=0.0, help='share of hidden tokens not decoded (paper: 0; v2: 0.5)')
    a('--checkpoint-activations', action='store_true', help='recompute blocks in backward: less memory (ours: off)')
    a('--repeat', type=int, help='clips cut from each decoded video (ours: 1)')
    a('--out', default='out', help='checkpoint, log.jsonl and pictures')
    clip_args(a)  # --img-size --num-frames --stride --flip: the --data preset's where not given (data.py)
    run_args(a)  # --workers --amp --compile --gpus --device --seed --resume --save-minutes, shared (data.py)
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
    check_writable(args.out)                                            # every rank: none waits for a failed one
    samples, _ = load_split(args.data, args.data_root, 'train')
    if args.batch_size % args.repeat:
        raise SystemExit(f'--batch-size {args.batch_size} must be a multiple of --repeat {args.repeat}')
    dataset = PretrainDataset(samples, num_frames=cfg.num_frames, stride=args.stride, motion_gap=args.motion_gap,
                              img_size=cfg.img_size, repeat=args.repeat, flip=args.flip)
    loader = make_loader(dataset, args.batch_size // args.repeat, args.workers, shuffle=True, seed=args.seed,
                         rank=rank, world=world)
    steps_per_epoch, clips_per_step, lr, min_lr, warmup, total = schedule(args, loader, world)

    torch.manual_seed(args.seed)                                        # same initial weights on every rank
    raw = MotionMAE(cfg).to(device)
    val = val_clips(args, raw)                                          # every rank: the demo's barrier
    if args.init:
        load_checkpoint(raw, args.init)
    opt = configure_optimizer(raw, lr, args.weight_decay, (0.9, 0.95), fused=device.type == 'cuda')
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
        videos = it * loader.batch_size * world
        save_checkpoint(path, lambda: dict(model=raw.state_dict(), config=asdict(cfg), args=vars(args),
                                           **train_state(opt, scaler, step, epoch, videos, nan, clips_per_step)),
                        rank, world, device)
        log.last_save = time.time()                                     # the next timed save counts from here

    print0(f'{len(samples)} videos, {steps_per_epoch} steps/epoch of {clips_per_step} clips, lr {lr:.2e}, '
           f'{sum(p.numel() for p in raw.parameters()) / 1e6:.1f}M params, {device}, world {world}, '
           f"targets {', '.join(f'{n}={w:g}' for n, w in raw.weights.items())}")
    log = RunLog(args.out, rank, world, step, total, args.log_every)
    B, N = args.batch_size, math.prod(cfg.grid)                         # clips a rank a step, tokens a clip
    step_loss = 0.0
    # the picture shows the first two held-out clips with their fixed mask (else the first training batch's)
    vis = None if val is None else (normalize(val['x'][:2]).to(device), normalize(val['x_next'][:2]).to(device),
                                    val['mask'][:2].to(device))
    while epoch < args.epochs:
        loader.sampler.set_epoch(epoch, skip=it0 * loader.batch_size)
        for it, batch in enumerate(loader, start=it0):
            if it >= steps_per_epoch * args.accum:                      # the tail that can't fill an accumulation
                break
            micro = it % args.accum
            lr_now = lr_at(step, lr, min_lr, warmup, total)
            set_lr(opt, lr_now)
            x = normalize(batch['x'].to(device, non_blocking=True))     # (B, 3, T, H, W) on the device
            x_next = normalize(batch['x_next'].to(device, non_blocking=True))
            # masks are drawn for the whole global batch with rank 0's seed, so they are the same for any world size
            # and after a resume; the sampler deals videos to ranks in turn, so this rank's are every world-th row
            torch.manual_seed(step_seed(args.seed, step * args.accum + micro, rank=0))
            mask = raw.draw_mask(B * world, device)                     # (B·world, N)
            dec = decoder_mask(mask, num_decoded(cfg)) if cfg.decoder_mask_ratio > 0 else mask
            mask, dec = (m.view(-1, world, args.repeat, N)[:, rank].flatten(0, 1) for m in (mask, dec))
            last = world == 1 or micro == args.accum - 1                # last micro-step: DDP syncs gradients
            with autocast(device, args.amp), (nullcontext() if last else model.no_sync()):
                out = model(x, x_next, mask, dec)
                scaler.scale(out['loss'] / args.accum).backward()
            log.batch(batch, len(x) // args.repeat, out, args.accum)
            step_loss = step_loss + out['loss'].detach() / args.accum
            vis = vis if vis is not None else (x[:2].clone(), x_next[:2].clone(), mask[:2].clone())
            if not last:
                continue
            due = log.save_due(args.save_minutes)                       # on this rank's clock
            stop, save = optimizer_step(opt, scaler, step_loss, world, nan, step, args.clip_grad, due)
            step += 1
            step_loss = 0.0
            log.step(step, epoch, lr_now, clips_per_step, nan['total'])
            if save:                                                    # every --save-minutes, and when stopped
                checkpoint(epoch, it + 1)
            if stop:                                                    # SIGTERM / SIGUSR1: saved, leave
                preempted(path, step, world, log)
        # end of epoch: bad videos, held-out losses relative to predicting 0, checkpoint, pictures
        log.epoch(epoch, step, device, **(validate(raw, val, device, args.amp, B) if val and rank == 0 else {}))
        epoch, it0 = epoch + 1, 0
        checkpoint(epoch, 0)
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

if __name__ == '__main__':
    main()
