"""DAVIS-2017 video object segmentation with a frozen encoder: label propagation (DINO's protocol) and the
official J&F metrics (davis2017-evaluation, re-implemented in numpy/OpenCV).

For every frame the encoder gives one token map; frame 0's ground truth and the last 7 predictions are
propagated to the next frame through feature affinities (top-5 within a 12-token window); the masks are scored
as the official evaluator scores them.

CPU demo:       python pretrain.py && python segment.py
Full DAVIS:     python segment.py --davis-root DAVIS --ckpt out/ckpt.pt   (one GPU; there is nothing to shard)
Score any method's PNGs:  python segment.py --davis-root DAVIS --results-only path/to/results
Colour-only baseline (each patch's mean colour as its feature):  python segment.py --features colour
"""
import argparse
import glob
import json
import os
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import ensure_demo, normalize, read_palette_png, write_palette_png
from model import PRESETS, ModelConfig, VideoClassifier, checkpoint_config, load_checkpoint, read_checkpoint, sync

# ----------------------------------------------------------------------------------------------------------
# DAVIS layout: JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png, ImageSets/2017/<split>.txt

def list_sequences(root, split, sequences=None):
    if sequences:
        return [s.strip() for s in sequences.split(',') if s.strip()]
    path = os.path.join(root, 'ImageSets', '2017', f'{split}.txt')
    if not os.path.isfile(path):
        raise SystemExit(f'missing {path}: expected the DAVIS-2017 layout ROOT/{{JPEGImages,Annotations}}/480p/'
                         f'<sequence>/ and ROOT/ImageSets/2017/<split>.txt')
    return [s.strip() for s in open(path) if s.strip()]

def sequence_files(root, seq):
    """Sorted frame paths and ground-truth mask paths of one sequence; one mask per frame (val)."""
    frames = sorted(glob.glob(os.path.join(root, 'JPEGImages', '480p', seq, '*.jpg')))
    masks = sorted(glob.glob(os.path.join(root, 'Annotations', '480p', seq, '*.png')))
    if not frames:
        raise SystemExit(f'no frames in {os.path.join(root, "JPEGImages", "480p", seq)}')
    names = [os.path.basename(p)[:-4] for p in frames]
    if [os.path.basename(p)[:-4] for p in masks] != names:
        missing = sorted(set(names) - {os.path.basename(p)[:-4] for p in masks})
        raise SystemExit(f'{os.path.join(root, "Annotations", "480p", seq)}: masks do not match the frames'
                         + (f' (missing {missing[0]}.png)' if missing else ''))
    return frames, masks

def read_mask(path, shape=None, max_id=None):
    """A palette PNG as (H, W) uint8 object ids, checked against the expected size and object count."""
    if not os.path.isfile(path):
        raise SystemExit(f'missing mask {path}')
    try:
        m = read_palette_png(path)
    except Exception as e:  # a truncated or non-palette file: name it
        raise SystemExit(f'cannot read mask {path}: {e}')
    if shape is not None and m.shape != shape:
        raise SystemExit(f'{path}: size {m.shape[1]}x{m.shape[0]} differs from the ground truth '
                         f'{shape[1]}x{shape[0]}')
    if max_id is not None and m.max() > max_id:
        raise SystemExit(f'{path}: object id {m.max()} but the sequence has {max_id} objects')
    return m

# ----------------------------------------------------------------------------------------------------------
# Metrics, exactly as davis2017-evaluation (metrics.py, utils.py, evaluation.py)

def disk(r):
    """skimage.morphology.disk(r): the pixels with x^2 + y^2 <= r^2."""
    x = np.arange(-r, r + 1)
    return (x[:, None] ** 2 + x[None, :] ** 2 <= r * r).astype(np.uint8)

def seg2bmap(seg):
    """BSDS one-pixel boundaries of (..., H, W) bool masks: a pixel differs from its right, bottom or
    bottom-right neighbour; the last row compares only to the right, the last column only downwards."""
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[..., :, :-1], s[..., :-1, :], se[..., :-1, :-1] = seg[..., :, 1:], seg[..., 1:, :], seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b

def dilate(b, r):
    """(N, H, W) bool dilated by disk(r) with one cv2 call: frames stacked vertically, r empty rows between."""
    N, H, W = b.shape
    tall = np.pad(b, ((0, 0), (0, r), (0, 0))).reshape(-1, W).astype(np.uint8)  # (N (H + r), W)
    return cv2.dilate(tall, disk(r)).reshape(N, H + r, W)[:, :H].astype(bool)  # (N, H, W)

def jaccard(gt, pred):
    """Region similarity J: IoU of (..., H, W) bool masks, 1 where both are empty."""
    inter, union = (gt & pred).sum((-2, -1)), (gt | pred).sum((-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))

def boundary_f(gt, pred, bound_th=0.008):
    """Boundary F-measure of (N, H, W) bool masks: boundary pixels matched within a disk of radius
    ceil(bound_th * image diagonal); an empty boundary on one side only gives 0, on both sides 1."""
    r = int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape[-2:])))
    gb, pb = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_fg = gb.sum((1, 2)), pb.sum((1, 2))
    precision = np.where(n_fg > 0, (pb & dilate(gb, r)).sum((1, 2)) / np.maximum(n_fg, 1), 1.0)
    recall = np.where(n_gt > 0, (gb & dilate(pb, r)).sum((1, 2)) / np.maximum(n_gt, 1), 1.0)
    total = precision + recall
    return np.where(total == 0, 0.0, 2 * precision * recall / np.where(total == 0, 1, total))

def db_statistics(v):
    """Mean, recall (share > 0.5) and decay (mean of the first quarter minus the last) of per-frame values,
    on the evaluator's overlapping bins (it casts the bin edges to uint8: equal up to 256 scored frames)."""
    v = np.asarray(v, np.float64)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(int)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return float(np.nanmean(v)), float(np.nanmean(v > 0.5)), float(np.nanmean(bins[0]) - np.nanmean(bins[3]))

def evaluate(davis_root, results_dir, sequences, bound_th=0.008):
    """Score results_dir/<seq>/<name>.png against the ground truth (semi-supervised task): objects are ids
    1..K of frame 0 (255 counts as background), the first and last frames are not scored, an object that
    is never predicted scores 0. Returns the global numbers and per-object J/F means (results.json)."""
    per_object = {}
    for seq in sequences:
        _, mask_paths = sequence_files(davis_root, seq)
        if len(mask_paths) < 3:
            raise SystemExit(f'{seq}: {len(mask_paths)} frames; the first and last are not scored, 3 are needed')
        gt0 = read_mask(mask_paths[0])
        gt = np.stack([gt0] + [read_mask(p, gt0.shape) for p in mask_paths[1:]])  # (T, H, W)
        gt[gt == 255] = 0
        K = int(gt[0].max())
        if K == 0:
            raise SystemExit(f'{mask_paths[0]}: no object in the first frame')
        gt = gt[1:-1]  # (T - 2, H, W)
        pred = np.stack([read_mask(os.path.join(results_dir, seq, os.path.basename(p)), gt.shape[1:], K)
                         for p in mask_paths[1:-1]])  # (T - 2, H, W)
        for k in range(1, K + 1):
            j, f = jaccard(gt == k, pred == k), boundary_f(gt == k, pred == k, bound_th)
            per_object[f'{seq}_{k}'] = db_statistics(j), db_statistics(f)
    J = np.array([s[0] for s in per_object.values()])  # (objects, 3): mean, recall, decay
    Fm = np.array([s[1] for s in per_object.values()])
    res = {f'{m}-{n}': float(a[:, i].mean()) for m, a in (('J', J), ('F', Fm))
           for i, n in enumerate(('Mean', 'Recall', 'Decay'))}
    res['J&F-Mean'] = (res['J-Mean'] + res['F-Mean']) / 2
    res['per_object'] = {name: {'J': s[0][0], 'F': s[1][0]} for name, s in per_object.items()}
    return res

def write_results(res, out_dir, split='val'):
    """The official evaluator's two CSVs (3 decimals), results.json (full precision), J&F, J and F printed."""
    os.makedirs(out_dir, exist_ok=True)
    cols = ['J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay']
    with open(os.path.join(out_dir, f'global_results-{split}.csv'), 'w') as f:
        f.write(','.join(cols) + '\n' + ','.join(f'{res[c]:.3f}' for c in cols) + '\n')
    with open(os.path.join(out_dir, f'per-sequence_results-{split}.csv'), 'w') as f:
        f.write('Sequence,J-Mean,F-Mean\n')
        f.writelines(f'{k},{v["J"]:.3f},{v["F"]:.3f}\n' for k, v in res['per_object'].items())
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(res, f, indent=1)
    print(f'J&F {res["J&F-Mean"]:.4f}  J {res["J-Mean"]:.4f}  F {res["F-Mean"]:.4f}  '
          f'({len(res["per_object"])} objects); outputs in {out_dir}')

# ----------------------------------------------------------------------------------------------------------
# Frozen-encoder features (DINO's read_frame / extract_feature)

def resize_hw(h, w, short=480, multiple=64, patch=16):
    """[DINO] short side -> `short`, long side scaled and floored to a multiple of 64. short=0: the native
    size floored to the patch size [ours: the small demo frames are not upscaled]."""
    if not short:
        return h // patch * patch, w // patch * patch
    long = int(short * max(h, w) / min(h, w) // multiple * multiple)
    return (short, long) if h <= w else (long, short)

def read_frame(path, hw, size):
    """A JPEG frame of the expected size (H, W), resized to hw = (H', W') -> (H', W', 3) uint8 RGB."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f'cannot read frame {path}')
    if img.shape[:2] != size:
        raise SystemExit(f'{path}: size {img.shape[1]}x{img.shape[0]} differs from its mask {size[1]}x{size[0]}')
    return cv2.resize(img, hw[::-1], interpolation=cv2.INTER_LINEAR)[..., ::-1]  # (H', W', 3) RGB

@torch.no_grad()
def frame_features(clf, img, norm='trained', colour=False):
    """(H', W', 3) uint8 RGB -> (h, w, D) unit-length features of the last block, after the encoder's trained final
    LayerNorm where load_encoder kept one [DINO], else a parameter-free LayerNorm (norm 'none': neither). The frame
    fills every tubelet of a still clip and only the first temporal slot is encoded, at its own position: one the
    encoder was trained on, not an interpolation of the table [ours]. colour: each patch's mean colour instead
    (D = 3, no LayerNorm, which would leave only the hue), a baseline [ours]."""
    dev, p = next(clf.parameters()).device, clf.cfg.patch_size
    x = normalize(torch.from_numpy(np.ascontiguousarray(img)).to(dev).permute(2, 0, 1)[:, None])  # (3, 1, H', W')
    if colour:
        return F.normalize(F.avg_pool2d(x[:, 0], p).permute(1, 2, 0), dim=-1)              # (h, w, 3)
    h, w = img.shape[0] // p, img.shape[1] // p
    clip = x[None].expand(-1, -1, clf.cfg.num_frames, -1, -1)                            # (1, 3, T, H', W')
    f = clf.encoder(clip, torch.arange(h * w, device=dev)[None])[0].view(h, w, -1)         # slot 0's tokens: (h, w, D)
    if norm != 'none' and isinstance(clf.encoder.norm, nn.Identity):
        f = F.layer_norm(f, f.shape[-1:])
    return F.normalize(f, dim=-1)

# ----------------------------------------------------------------------------------------------------------
# Label propagation (DINO eval_video_segmentation.py, vectorised)

def window_mask(h, w, radius):
    """(h w, h w) bool: key token within a (2 radius + 1)^2 square around the query token."""
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    i, j = i.flatten(), j.flatten()
    return ((i[:, None] - i[None]).abs() <= radius) & ((j[:, None] - j[None]).abs() <= radius)

def propagate(feats, first_labels, n_context=7, radius=12, topk=5, tau=0.1):
    """Propagate frame 0's labels through a sequence. feats: an iterable of (h, w, D) unit-length features,
    frame 0 first; first_labels: (C, h, w) one-hot labels of frame 0. The context of frame t is frame 0
    (ground truth) and the last n_context frames (soft predictions); affinity exp(cos / tau) restricted to
    the window (radius <= 0: no window), the top-k over all context tokens kept, normalised to sum 1.
    Returns (T - 1, C, h, w) soft labels of frames 1..T-1."""
    feats = iter(feats)
    f0 = next(feats)
    h, w, D = f0.shape
    C = first_labels.shape[0]
    near = window_mask(h, w, radius).to(f0.device) if radius > 0 else None      # (h w, h w)
    first = (f0.reshape(h * w, D), first_labels.reshape(C, h * w).T.to(f0))    # (h w, D), (h w, C)
    queue, out = [], []
    for f in feats:
        q = f.reshape(h * w, D)                                                  # (h w, D)
        keys = torch.cat([first[0]] + [k for k, _ in queue])                     # (n h w, D)
        labels = torch.cat([first[1]] + [v for _, v in queue])                   # (n h w, C)
        cos = q @ keys.T                                                         # (h w, n h w)
        if near is not None:
            cos = cos.view(h * w, -1, h * w).masked_fill(~near[:, None], -torch.inf).view(h * w, -1)
        # exp is monotonic: the top-k of the cosines are those of the affinities, and exp(cos / tau)
        # normalised over them is their softmax (DINO keeps ties with the k-th as well: equal otherwise)
        top, idx = cos.topk(min(topk, cos.shape[1]), dim=1)                      # (h w, k)
        lab = (torch.softmax(top / tau, dim=1)[..., None] * labels[idx]).sum(1)  # (h w, C)
        out.append(lab.T.reshape(C, h, w))
        queue.append((q, lab))
        if len(queue) > n_context:
            queue.pop(0)
    return torch.stack(out)                                                      # (T - 1, C, h, w)

def labels_to_mask(lab, patch, size):
    """(C, h, w) soft labels -> (H, W) uint8 ids: upsample x patch (bilinear), per-channel min-max
    normalisation, argmax, nearest resize to the original size (H, W) [DINO]."""
    up = F.interpolate(lab[None].float(), scale_factor=patch, mode='bilinear', align_corners=False)[0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    up = torch.where(hi > 0, (up - lo) / (hi - lo).clamp_min(1e-12), up)  # DINO divides a constant channel by 0
    ids = up.argmax(0).to(torch.uint8).cpu().numpy()
    return cv2.resize(ids, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)  # = PIL NEAREST, as DINO

def segment_sequence(clf, davis_root, seq, out_dir, args):
    """Propagate frame 0's ground truth through one sequence; write palette PNGs named like the ground
    truth. Returns (seconds of features, seconds of propagation, frames)."""
    frames, masks = sequence_files(davis_root, seq)
    gt0 = read_mask(masks[0])
    gt0, palette = np.where(gt0 == 255, 0, gt0), read_palette_png(masks[0], with_palette=True)[1]
    H, W = gt0.shape
    hw = resize_hw(H, W, args.short_side, args.long_multiple, clf.cfg.patch_size)
    p = clf.cfg.patch_size
    small = cv2.resize(gt0, (hw[1] // p, hw[0] // p), interpolation=cv2.INTER_NEAREST_EXACT)  # (h, w)
    first = F.one_hot(torch.from_numpy(small).long(), int(gt0.max()) + 1).permute(2, 0, 1).float()  # (C, h, w)
    t0 = time.time()
    feats = [frame_features(clf, read_frame(path, hw, (H, W)), args.feature_norm, args.features == 'colour')
             for path in tqdm(frames, desc=seq, leave=False)]                            # T x (h, w, D)
    sync(args.device)
    t1 = time.time()
    soft = propagate(feats, first.to(feats[0].device), args.n_context, args.radius, args.topk, args.tau)
    sync(args.device)
    t2 = time.time()
    os.makedirs(os.path.join(out_dir, seq), exist_ok=True)
    for path, m in zip(masks, [gt0] + [labels_to_mask(s, p, (H, W)) for s in soft]):
        write_palette_png(os.path.join(out_dir, seq, os.path.basename(path)), m, palette)
    return t1 - t0, t2 - t1, len(frames)

# ----------------------------------------------------------------------------------------------------------
# Main: predict (or take --results-only predictions), then score like the official evaluator

def load_encoder(path, preset, device, trained_norm=True):
    """Our checkpoint ({'model', 'config'}) or a VideoMAE one (no config: architecture from --model). The encoder
    keeps the checkpoint's final LayerNorm (pretraining checkpoints, ours and VideoMAE's) if trained_norm; a
    finetuned, mean-pooled encoder has none."""
    if not os.path.isfile(path):
        raise SystemExit(f'no checkpoint at {path}: run `python pretrain.py` first (or pass --ckpt)')
    ck = read_checkpoint(path)
    cfg = checkpoint_config(ck, path) or ModelConfig(**PRESETS[preset])
    clf = VideoClassifier(cfg, num_classes=0)
    sd = next((ck[k] for k in ('model', 'module', 'state_dict') if isinstance(ck.get(k), dict)), ck)
    if trained_norm and any(k.split('module.')[-1] in ('norm.weight', 'encoder.norm.weight') for k in sd):
        clf.encoder.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)                          # loaded below
    load_checkpoint(clf, ck, path=path)
    return clf.to(device).eval()

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add('--davis-root', default=None, help='DAVIS-2017 folder [default: the generated demo, data.ensure_demo()]')
    add('--split', default='val', help='sequences of ImageSets/2017/<split>.txt [DAVIS official: val]')
    add('--sequences', default=None, help='comma-separated sequences instead of the whole split')
    add('--results-only', default=None, metavar='RES', help='score RES/<seq>/*.png without a model')
    add('--output', default=None, help='one folder for the PNGs, CSVs and results.json [ours: out/davis; '
                                       'with --results-only RES: RES]')
    add('--ckpt', default='out/ckpt.pt', help='our checkpoint or a VideoMAE one [ours: the demo pretrain]')
    add('--model', default='base', choices=list(PRESETS), help='for a checkpoint without config [VideoMAE: base]')
    add('--short-side', type=int, default=None, help='[DINO: 480]; 0 = native size [ours: the demo default]')
    add('--long-multiple', type=int, default=64, help='long side floored to a multiple of this [DINO: 64]')
    add('--feature-norm', default='trained', choices=['trained', 'ln', 'none'],
        help="before L2: the encoder's trained final norm, else a parameter-free one [DINO]; ln: parameter-free only")
    add('--features', default='encoder', choices=['encoder', 'colour'],
        help="the encoder's, or each patch's mean colour (a baseline; --ckpt gives the patch size) [ours]")
    add('--n-context', type=int, default=7, help='previous frames in the context besides frame 0 [DINO: 7]')
    add('--radius', type=int, default=12, help='square window radius in tokens, 0 = no window [DINO: 12]')
    add('--topk', type=int, default=5, help='affinities kept over all context tokens [DINO: 5]')
    add('--tau', type=float, default=0.1, help='affinity temperature: exp(cos / tau) [DINO: 0.1]')
    add('--bound-th', type=float, default=0.008, help='F tolerance, share of the diagonal [DAVIS official]')
    add('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='[ours: GPU if present]')
    args = ap.parse_args(argv)
    args.output = args.output or args.results_only or 'out/davis'
    trained = args.feature_norm == 'trained'
    clf = None if args.results_only else load_encoder(args.ckpt, args.model, args.device, trained)
    demo = args.davis_root is None
    if demo:
        args.davis_root = os.path.join(ensure_demo(), 'davis')
    if args.short_side is None:
        args.short_side = 0 if demo else 480
    if not os.path.isdir(args.davis_root):
        raise SystemExit(f'no DAVIS folder at {args.davis_root}')
    sequences = list_sequences(args.davis_root, args.split, args.sequences)
    for name in (f'global_results-{args.split}.csv', f'per-sequence_results-{args.split}.csv', 'results.json'):
        if os.path.exists(os.path.join(args.output, name)):               # an earlier run's: never beside new PNGs
            os.remove(os.path.join(args.output, name))
    if clf is not None:
        torch.backends.cuda.matmul.allow_tf32 = True
        t_feat = t_prop = n = 0
        for seq in tqdm(sequences, desc='sequences'):
            a, b, k = segment_sequence(clf, args.davis_root, seq, args.output, args)
            t_feat, t_prop, n = t_feat + a, t_prop + b, n + k
        n_prop = n - len(sequences)  # frame 0 is given
        print(f'{n} frames: features {n / t_feat:.2f} frames/s, propagation {n_prop / t_prop:.2f} frames/s')
    res = evaluate(args.davis_root, args.results_only or args.output, sequences, args.bound_th)
    write_results(res, args.output, args.split)
    return res

if __name__ == '__main__':
    main()
