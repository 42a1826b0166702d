"""
Action-recognition finetuning of a pretrained MotionMAE (or VideoMAE) encoder, multi-view testing and linear
probing.

CPU demo (no arguments; finetunes the demo pretraining's out/ckpt.pt if present, else from scratch, on the demo's
motion classes; leaves out/finetune/{ckpt.pt, log.jsonl, test_results.json, confusion.png}):
    python finetune.py
The paper's recipe on 8 GPUs (per-dataset presets below; every flag overrides its preset):
    python finetune.py --data ssv2 --data-root /data/ssv2 --init out/ckpt.pt --gpus 8
Multi-view test of a finetuned checkpoint:   python finetune.py --data ssv2 --data-root /data/ssv2 --eval-only
Linear probe (frozen encoder; MAE protocol):  python finetune.py --data k400 --data-root ... --init ... --linear-probe
"""
import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, replace

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import VideoDataset, clip_args, dataset_info, ensure_demo, fill_clip_args, load_split, make_loader, normalize
from model import (PRESETS, ModelConfig, VideoClassifier, checkpoint_config, configure_optimizer, load_checkpoint,
                   read_checkpoint)
from pretrain import (RunLog, agreed, autocast, check_writable, end_distributed, init_distributed, launch, load_resume,
                      lr_at, optimizer_step, preempted, print0, restore, run_args, save_checkpoint, schedule, set_lr,
                      step_seed, train_state, wrap)

# -----------------------------------------------------------------------------
# recipes: [VideoMAE] finetune scripts (ViT-B; batch per GPU from them), epochs and lr [paper]; 'demo' is ours

RECIPES = {
    'ssv2': dict(model='base', epochs=50, lr=5e-4, batch_size=8, layer_decay=0.75, workers=10),
    'k400': dict(model='base', epochs=100, lr=1e-3, batch_size=8, layer_decay=0.75, workers=10),
    'ucf101': dict(model='base', epochs=100, lr=5e-4, batch_size=16, layer_decay=0.7, workers=10, num_sample=2,
                   min_lr=1e-5, dropout=0.5, drop_path=0.2),
    # demo [ours]: 640 videos / 16 = 40 steps an epoch, 800 steps; head init x 1 (EXPERIMENTS.md: First demo: head init)
    'demo': dict(model='tiny', epochs=20, warmup_epochs=1, lr=4.8e-3, batch_size=16, layer_decay=1.0,
                 drop_path=0.0, workers=1, mixup=0.0, cutmix=0.0, head_init_scale=1.0, augment=False, min_crop=0.5,
                 log_every=10, val_every=5),
}
DEFAULTS = dict(drop_path=0.1, head_init_scale=0.001, augment=True, min_crop=0.08, warmup_epochs=5,
                min_lr=1e-6, weight_decay=0.05, dropout=0.0, mixup=0.8, cutmix=1.0, smoothing=0.1, num_sample=1,
                log_every=50, val_every=1)
# [MAE linear probe] no weight decay, no mixup/cutmix, no label smoothing, no RandAugment/erasing, no layer decay, one
# clip a video; [ours] AdamW at 1e-3 per 256 videos instead of MAE's LARS at 0.1 (a 1-layer head needs no large-batch
# optimizer)
PROBE = dict(lr=1e-3, weight_decay=0.0, mixup=0.0, cutmix=0.0, smoothing=0.0, layer_decay=1.0, num_sample=1)
PROBE_LR_DEMO = 3.2e-2  # [ours] the demo's few hundred steps: 2e-3 at batch 16

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a('--data', default='demo', help='ssv2 | k400 | ucf101 | list:<file> | demo (ours: embedded default)')
    a('--data-root', default=None, help='dataset folder in its published layout (see README)')
    a('--init', default=None, help="MotionMAE pretrain/finetune or VideoMAE checkpoint, needed but on the demo "
                                   "(out/ckpt.pt if present); '' = from scratch; with --eval-only <out>/ckpt.pt")
    a('--model', choices=list(PRESETS), help='size for VideoMAE checkpoints / scratch (recipe: base; demo: tiny); '
                                             'our checkpoints carry their config')
    a('--batch-size', type=int, help='videos per GPU per step, --num-sample clips each (VideoMAE: 8 SSv2/K400, 16 '
                                     'UCF101)')
    a('--num-sample', type=int, help='repeated augmentation: clips cut from each video (VideoMAE: 1, UCF101 2)')
    a('--accum', type=int, default=1, help='gradient accumulation steps (ours: 1)')
    a('--epochs', type=int, help='paper: 50 SSv2, 100 K400/UCF101')
    a('--warmup-epochs', type=int, help='VideoMAE: 5')
    a('--lr', type=float, help='base lr per 256 videos, scaled by global batch/256 (paper: 5e-4 SSv2/UCF101, 1e-3 '
                               'K400; linear probe 1e-3, ours)')
    a('--min-lr', type=float, help='cosine floor per 256 videos (VideoMAE: 1e-6, UCF101 1e-5)')
    a('--weight-decay', type=float, help='VideoMAE: 0.05 (linear probe 0, MAE)')
    a('--layer-decay', type=float, help='layer-wise lr decay (VideoMAE: 0.75, UCF101 0.7)')
    a('--drop-path', type=float, help='stochastic depth, max rate (VideoMAE: 0.1, UCF101 0.2; demo 0)')
    a('--head-init-scale', type=float, help='head weights times this at init (VideoMAE: 0.001; demo 1)')
    a('--augment', action=argparse.BooleanOptionalAction, help='RandAugment + random erasing (VideoMAE: on; demo off)')
    a('--min-crop', type=float, help='smallest random crop, share of the frame area (VideoMAE: 0.08; demo 0.5)')
    a('--checkpoint-activations', action=argparse.BooleanOptionalAction,
      help="recompute the encoder's blocks in backward: less memory, more time (default: the checkpoint's)")
    a('--dropout', type=float, help='dropout before the head (VideoMAE: 0, UCF101 0.5)')
    a('--mixup', type=float, help='mixup alpha (VideoMAE: 0.8; demo 0; 0 = off)')
    a('--cutmix', type=float, help='cutmix alpha (VideoMAE: 1.0; demo 0; 0 = off)')
    a('--smoothing', type=float, help='label smoothing (VideoMAE: 0.1)')
    a('--linear-probe', action='store_true', help='frozen encoder, BatchNorm + linear head (MAE protocol)')
    a('--eval-only', action='store_true', help='single-view val + multi-view test of --init (default <out>/ckpt.pt)')
    a('--out', default='out/finetune', help='checkpoint, log.jsonl, test_results.json, confusion.png')
    clip_args(a)  # --img-size --num-frames --stride: the checkpoint's, else the preset's; --flip: preset (data.py)
    run_args(a)  # --workers --amp --compile --gpus --device --seed --resume --save-minutes, shared (pretrain.py)
    a('--log-every', type=int, help='optimizer steps between log lines (ours: 50; demo 10)')
    a('--val-every', type=int, help='epochs between single-view validations, and the last (ours: 1; demo 5)')
    args = p.parse_args(argv)
    preset = args.data if args.data in RECIPES else 'k400'
    probe = dict(PROBE, lr=PROBE_LR_DEMO if preset == 'demo' else PROBE['lr']) if args.linear_probe else {}
    for k, v in {**DEFAULTS, **RECIPES[preset], **probe}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.init is None and not args.eval_only:
        if args.data != 'demo':
            raise SystemExit(f"finetune.py --data {args.data}: no --init; give the pretrained checkpoint, or --init '' "
                             'to train from scratch on purpose')
        args.init = 'out/ckpt.pt' if os.path.exists('out/ckpt.pt') else ''
    args.flip = dataset_info(args.data)['flip'] if args.flip is None else args.flip   # never the pretraining's
    return args

# -----------------------------------------------------------------------------
# model: VideoClassifier from a checkpoint; linear-probe head; optimizer with layer-wise lr decay

def build_model(args, num_classes, ck, resume=False):
    """VideoClassifier from checkpoint dict ck ({} = scratch). Ours ({'model', 'config'}) carry the model config
    (input size included: we finetune at the pretraining's geometry [ours]); VideoMAE's take --model at the
    dataset's size, 16 frames. Linear probe [MAE]: head = BatchNorm1d(D, affine=False) + Linear, the rest frozen.
    resume: ck is our own training state (loaded strictly); else any layout, reporting loaded and new tensors."""
    cfg = checkpoint_config(ck, args.init)
    if cfg is None:
        cfg = ModelConfig(**PRESETS[args.model])
    # clip geometry: the flags, else the checkpoint's (its input size; the sampling of a run on the same --data)
    run = ck.get('args') if isinstance(ck.get('args'), dict) and ck['args'].get('data') == args.data else {}
    fill_clip_args(args, run, asdict(cfg) if 'config' in ck else {}, dataset_info(args.data))
    cfg = replace(cfg, img_size=args.img_size, num_frames=args.num_frames)
    probe = ck.get('linear_probe', False) if args.eval_only else args.linear_probe
    cfg = replace(cfg, drop_path=0.0 if probe else args.drop_path, checkpoint_activations=cfg.checkpoint_activations
                  if args.checkpoint_activations is None else args.checkpoint_activations)
    model = VideoClassifier(cfg, num_classes, dropout=0.0 if probe else args.dropout, init_scale=args.head_init_scale)
    if probe:
        D = cfg.embed_dim
        model.head = nn.Sequential(nn.BatchNorm1d(D, affine=False, eps=1e-6), nn.Linear(D, num_classes))
        nn.init.trunc_normal_(model.head[1].weight, std=0.01)           # [MAE linear probe]
        nn.init.zeros_(model.head[1].bias)
        for name, prm in model.named_parameters():
            prm.requires_grad = name.startswith('head.')
    if resume:
        if replace(checkpoint_config(ck, args.out), checkpoint_activations=cfg.checkpoint_activations) != cfg \
                or ck['linear_probe'] != probe:
            raise SystemExit(f'{args.out}/ckpt.pt was trained with another model config or mode; '
                             'use another --out or --no-resume')
        model.load_state_dict(ck['model'])
    elif ck:
        print0(f"init: {'MotionMAE' if 'config' in ck else 'VideoMAE-layout'} checkpoint {args.init} "
               f"({'linear probe' if probe else 'classifier'}, {num_classes} classes)")
        load_checkpoint(model, ck, verbose=int(os.environ.get('RANK', 0)) == 0, path=args.init)
    else:
        print0('init: none, training from scratch (no pretrained checkpoint given' +
               ('; run `python pretrain.py` first for the demo)' if args.data == 'demo' else ')'))
    return model, cfg, probe

def set_train(model, probe):
    """Training mode; a linear probe keeps its frozen encoder (and fc_norm) in eval mode."""
    model.train()
    if probe:
        model.encoder.eval()

# -----------------------------------------------------------------------------
# mixup / cutmix with label smoothing, soft-target cross-entropy [VideoMAE: timm Mixup, mode 'batch'], on the device

def draw_mix(rng, H, W, mixup=0.8, cutmix=1.0, switch_prob=0.5):
    """One λ per batch: cutmix with probability switch_prob when both are on, else mixup; λ ~ Beta(α, α).
    Cutmix box of area ≈ (1-λ)·H·W around a uniform centre, clipped to the frame; λ corrected to the kept
    area. Returns (lam, box) with box = (y0, y1, x0, x1), or None for mixup. λ = 1 when both are off."""
    if mixup <= 0 and cutmix <= 0:
        return 1.0, None
    if cutmix <= 0 or (mixup > 0 and rng.random() >= switch_prob):
        return float(rng.beta(mixup, mixup)), None
    r = math.sqrt(1 - rng.beta(cutmix, cutmix))
    cy, cx, ch, cw = int(rng.integers(H)), int(rng.integers(W)), int(H * r), int(W * r)
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, H), max(cx - cw // 2, 0), min(cx + cw // 2, W)
    return 1 - (y1 - y0) * (x1 - x0) / (H * W), (y0, y1, x0, x1)

def mix(x, y, num_classes, lam, box=None, smoothing=0.1):
    """Mix every clip with the batch reversed: x (B, 3, T, H, W), y (B,) labels. Mixup x·λ + x_rev·(1-λ); cutmix
    pastes x_rev's box into x, the same box on every frame. Targets (B, K) = λ·y_s + (1-λ)·y_s,rev with smoothed
    one-hot y_s = (1 - s)·onehot + s/K; each row sums to 1."""
    soft = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes
    target = lam * soft + (1 - lam) * soft.flip(0)
    if lam == 1.0:
        return x, target
    if box is None:
        return x * lam + x.flip(0) * (1 - lam), target
    y0, y1, x0, x1 = box
    x = x.clone()
    x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    return x, target

def soft_cross_entropy(logits, target):
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()

# -----------------------------------------------------------------------------
# evaluation: single-view val each epoch; multi-view test (softmax averaged over clips × crops) at the end

def average_views(logits, n_views):
    """(B·V, K) logits of V views per video, video-major -> (B, K) softmax scores averaged over each video's views."""
    return logits.float().softmax(dim=-1).view(-1, n_views, logits.shape[-1]).mean(dim=1)

@torch.no_grad()
def predict(model, loader, device, amp, world, chunk=64):
    """Scores of every video of the loader's dataset: (indices, scores (n, K), labels), each video once, sorted by
    index. Under DDP each rank scores its share; the shares are gathered and the sampler's padding removed by index."""
    model.eval()
    idx, scores, labels, n_bad = [], [], [], 0
    for batch in loader:
        x = batch['x']                                                    # (B, 3, T, H, W) or (B, V, 3, T, H, W)
        V = x.shape[1] if x.ndim == 6 else 1
        x = x.flatten(0, 1) if x.ndim == 6 else x                        # (B·V, 3, T, H, W), video-major
        with autocast(device, amp):
            logits = torch.cat([model(normalize(c.to(device, non_blocking=True))) for c in x.split(chunk)])
        scores.append(average_views(logits, V).cpu())
        idx.append(batch['index'])
        labels.append(batch['label'])
        n_bad += len(batch['bad'])
    part = (torch.cat(idx), torch.cat(scores), torch.cat(labels), n_bad)
    parts = [part]
    if world > 1:
        parts = [None] * world
        torch.distributed.all_gather_object(parts, part)
    seen = {}
    for i, s, lab, _ in parts:
        for j in range(len(i)):
            seen.setdefault(int(i[j]), (s[j], int(lab[j])))
    keys = sorted(seen)
    n_bad = sum(p[3] for p in parts)
    if n_bad:
        print0(f'warning: {n_bad} bad videos in evaluation (replaced, so {len(keys)} distinct videos scored)')
    return torch.tensor(keys), torch.stack([seen[k][0] for k in keys]), torch.tensor([seen[k][1] for k in keys])

def metrics(scores, labels, num_classes):
    """top-1 / top-5 accuracy (%) with top-1's 95% Wilson interval (binomial noise over the videos), mean negative
    log-likelihood of the averaged scores, confusion matrix (true, predicted)."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    nll = -scores.gather(1, labels[:, None]).clamp(min=1e-12).log().mean()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    conf.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    n, p, z = len(labels), hit[:, 0].double().mean().item(), 1.96
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return dict(top1=100 * p, top1_ci95=[100 * (mid - half), 100 * (mid + half)],
                top5=100 * hit.any(1).double().mean().item(), nll=nll.item(), n_videos=n), conf

def save_confusion(conf, path, classes, px=512):
    """Row-normalised confusion matrix as a PNG (viridis, cv2 only): true classes down, their names on the left;
    predicted across, the names on top, written upwards; at least 12 px a class."""
    K, cell, font = len(classes), max(12, px // len(classes)), cv2.FONT_HERSHEY_PLAIN
    rows = conf.double() / conf.sum(1, keepdim=True).clamp(min=1)
    img = cv2.resize((rows.numpy() * 255).astype(np.uint8), (K * cell,) * 2, interpolation=cv2.INTER_NEAREST)
    names = ['true \\ predicted'] + [str(c)[:48] for c in classes]
    m = max(cv2.getTextSize(n, font, 0.8, 1)[0][0] for n in names) + 8  # the margin that holds the names
    out = np.full((m + K * cell, m + K * cell, 3), 255, np.uint8)
    out[m:, m:] = cv2.applyColorMap(img, cv2.COLORMAP_VIRIDIS)
    strip = np.full((K * cell, m, 3), 255, np.uint8)                   # the top names, drawn across, then turned
    for k, name in enumerate(names[1:]):
        y = k * cell + cell // 2 + 5
        cv2.putText(out, name, (4, m + y), font, 0.8, (0, 0, 0), 1)
        cv2.putText(strip, name, (4, y), font, 0.8, (0, 0, 0), 1)
    out[:m, m:] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(out, names[0], (4, m - 6), font, 0.8, (0, 0, 0), 1)
    cv2.imwrite(path, out)

def run_test(args, model, samples, classes, cfg, device, rank, world):
    """Full multi-view test [paper]: test_clips × test_crops views per video, softmax averaged. Prints top-1/top-5;
    rank 0 writes <out>/test_results.json (with per-class accuracy) and <out>/confusion.png."""
    ds = dataset_info(args.data)
    views = ds['test_clips'] * ds['test_crops']                       # a batch: about 4 training batches of clips
    loader = make_loader(dataset(args, cfg, samples, 'test'), max(1, 4 * args.batch_size // views), args.workers,
                         shuffle=False, seed=args.seed, rank=rank, world=world, drop_last=False, prefetch=1)
    _, scores, labels = predict(model, loader, device, args.amp, world)
    res, conf = metrics(scores, labels, len(classes))
    res['views'] = f"{ds['test_clips']}x{ds['test_crops']}"
    res['per_class'] = {c: 100 * conf[k, k].item() / conf[k].sum().item() for k, c in enumerate(classes)
                        if conf[k].sum()}
    lo, hi = res['top1_ci95']
    print0(f"test ({res['views']} views, {res['n_videos']} videos): top-1 {res['top1']:.2f} (95% interval "
           f"{lo:.1f}-{hi:.1f})  top-5 {res['top5']:.2f}")
    print0('top-1 per class: ' + ', '.join(f'{c} {a:.0f}' for c, a in res['per_class'].items()))
    if rank == 0:
        res_all = dict(res, confusion=conf.tolist(), data=args.data,
                       checkpoint=args.init if args.eval_only else os.path.join(args.out, 'ckpt.pt'))
        with open(os.path.join(args.out, 'test_results.json'), 'w') as fh:
            json.dump(res_all, fh, indent=1)
        save_confusion(conf, os.path.join(args.out, 'confusion.png'), classes)
    return res

def dataset(args, cfg, samples, mode):
    """[VideoMAE] finetuning sampling (SSv2 segments, else dense at --stride), random crops of at least --min-crop of
    the area, RandAugment + random erasing with --augment (never for a linear probe, as MAE's), flips if --flip,
    --num-sample augmented clips of each training video
    (build_model fills it: never on SSv2)."""
    ds, augment = dataset_info(args.data), args.augment and not args.linear_probe
    return VideoDataset(samples, mode, num_frames=cfg.num_frames, stride=args.stride, sampling=ds['finetune_sampling'],
                        img_size=cfg.img_size, flip=args.flip, test_clips=ds['test_clips'], test_crops=ds['test_crops'],
                        rand_aug=augment, erase_p=0.25 if augment else 0.0, min_crop=args.min_crop,
                        num_sample=args.num_sample)

# -----------------------------------------------------------------------------
# training

def main(argv=None):
    args = get_args(argv)
    if args.gpus > 1 and 'RANK' not in os.environ:
        return launch(main, argv, args)
    rank, world, device = init_distributed(args)
    path = os.path.join(args.out, 'ckpt.pt')
    state = load_resume(args.out, rank, world, device, args.resume and not args.eval_only)
    if args.data == 'demo':                                             # rank 0 generates it, the others wait
        args.data_root = ensure_demo(args.data_root)
    with agreed(world):                                                 # one rank's failure stops all at once
        samples, classes = load_split(args.data, args.data_root, 'train')
        val_samples, _ = load_split(args.data, args.data_root, 'val')
        check_writable(args.out, rank)
        K = len(classes)
        torch.manual_seed(args.seed)                                    # head init; DDP broadcasts rank 0's anyway
        if args.eval_only:
            args.init = args.init or os.path.join(args.out, 'ckpt.pt')
        ck = state or (read_checkpoint(args.init) if args.init else {})
        raw, cfg, probe = build_model(args, K, ck, resume=state is not None)
        val_loader = make_loader(dataset(args, cfg, val_samples, 'val'), args.batch_size, args.workers, shuffle=False,
                                 seed=args.seed, rank=rank, world=world, drop_last=False)
        if not args.eval_only:
            loader = make_loader(dataset(args, cfg, samples, 'train'), args.batch_size, args.workers, shuffle=True,
                                 seed=args.seed, rank=rank, world=world)
            steps_per_epoch, videos_per_step, lrs = schedule(args, loader, world)
    raw = raw.to(device)
    model = wrap(raw, device, world, args.compile)

    def validate():
        _, scores, labels = predict(model, val_loader, device, args.amp, world)
        return metrics(scores, labels, K)[0]

    if args.eval_only:
        val = validate()
        print0(f"val (1 view, {val['n_videos']} videos): top-1 {val['top1']:.2f}  top-5 {val['top5']:.2f}")
        test = run_test(args, model, val_samples, classes, cfg, device, rank, world)
        end_distributed(world)
        return dict(val=val, test=test)

    opt = configure_optimizer(raw, lrs['peak'], args.weight_decay, (0.9, 0.999), layer_decay=args.layer_decay,
                              fused=device.type == 'cuda')                 # [VideoMAE]; a linear probe: the head's only
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    step, epoch, it0, nan = restore(state, opt, scaler, videos_per_step, loader.batch_size * world, path, world)
    del state, ck                                                       # the checkpoint read: freed

    def checkpoint(epoch, it):                                          # it: micro-batches of the epoch done
        state = train_state(opt, scaler, step, epoch, it * loader.batch_size * world, nan, videos_per_step)
        stop = save_checkpoint(path, lambda: dict(model=raw.state_dict(), config=asdict(cfg), linear_probe=probe,
                                                  num_classes=K, classes=list(classes), args=vars(args), **state),
                               rank, world, device)
        log.last_save = time.time()                                     # the next timed save counts from here
        return stop                                                     # a signal reached some rank

    n_train = sum(p.numel() for p in raw.parameters() if p.requires_grad)
    print0(f'{len(samples)} train / {len(val_samples)} val videos, {K} classes, {steps_per_epoch} steps/epoch of '
           f'{videos_per_step} videos x {args.num_sample} clips, lr {lrs["peak"]:.2e}, '
           f'{"linear probe" if probe else "finetune"} of '
           f'{n_train:,} params, {device}, world {world}')
    log = RunLog(args.out, rank, world, step, epoch, lrs['total'], args.log_every, loader, device)
    val = None
    while epoch < args.epochs:
        set_train(raw, probe)
        loader.sampler.set_epoch(epoch, skip=it0 * loader.batch_size)
        for it, batch in enumerate(loader, start=it0):
            if it >= steps_per_epoch * args.accum:                      # the tail that can't fill an accumulation
                break
            micro = it % args.accum
            lr_now = lr_at(step, **lrs)
            set_lr(opt, lr_now)                                         # layer-wise decay: each group's lr_scale
            x = normalize(batch['x'].to(device, non_blocking=True))     # (B, 3, T, H, W) or (B, R, ...) on the device
            y = batch['label'].to(device, non_blocking=True)
            if x.ndim == 6:                                             # --num-sample R: R clips a video, one label
                x, y = x.flatten(0, 1), y.repeat_interleave(x.shape[1])
            # λ, the cutmix box, drop path and dropout differ between ranks (each mixes its own clips)
            seed = step_seed(args.seed, step * args.accum + micro, rank)
            torch.manual_seed(seed)
            lam, box = draw_mix(np.random.default_rng(seed), x.shape[-2], x.shape[-1], args.mixup, args.cutmix)
            x, target = mix(x, y, K, lam, box, args.smoothing)
            last = micro == args.accum - 1                              # the optimizer step; DDP syncs gradients
            with autocast(device, args.amp), (model.no_sync() if world > 1 and not last else nullcontext()):
                out = {'loss': soft_cross_entropy(model(x), target)}
                scaler.scale(out['loss'] / args.accum).backward()
            log.batch(batch, len(batch['label']), out, args.accum)
            if not last:
                continue
            due = log.save_due(args.save_minutes)                       # on this rank's clock
            stepped, stop, save = optimizer_step(opt, scaler, log.pending['loss'], world, nan, step, None, due)
            step += 1
            log.step(step, epoch, lr_now, videos_per_step * args.num_sample, nan['total'], stepped)
            if save:                                                    # every --save-minutes, and when stopped
                stop = checkpoint(epoch, it + 1) or stop
            if stop:                                                    # SIGTERM / SIGUSR1: saved, leave
                preempted(path, step, world, log)

        def scores():                                                   # single-view val, every --val-every epochs
            nonlocal val
            if (epoch + 1) % args.val_every and epoch + 1 != args.epochs:
                return {}
            val = validate()
            return {f'val_{k}': v for k, v in val.items() if k != 'top1_ci95'}
        # end of epoch: bad videos and a stop agreed; validation (not when stopping), checkpoint
        stop = log.epoch(epoch, step, device, scores)
        epoch, it0 = epoch + 1, 0
        if checkpoint(epoch, 0) or stop:
            preempted(path, step, world, log)
    log.close()
    test = run_test(args, model, val_samples, classes, cfg, device, rank, world)
    end_distributed(world)
    print0(f'done: {step} steps, checkpoint {args.out}/ckpt.pt, results {args.out}/test_results.json')
    return dict(val=val, test=test)

if __name__ == '__main__':
    main()
