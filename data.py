"""MotionMAE data: published dataset layouts, OpenCV decoding, clip sampling with the +g motion
partners, augmentation, bad-input handling, the generated demo dataset, and the DataLoader. (The training engine the
two training scripts share lives in pretrain.py.)

Loaders deliver uint8 clips, (3, T, H, W) a sample and (B, 3, T, H, W) a batch; the training scripts normalise them
on the device with `normalize` (a quarter of the bytes of float32 to copy).

  python data.py check --data demo                                  # generates the demo dataset (~30 s), checks it
  python data.py check --data ssv2 --data-root /data/ssv2 --workers 16   # read every video once before a long run
  python data.py bench --data ssv2 --data-root /data/ssv2 --workers 8 --step-time 0.5  # loader clips/s, workers a GPU
"""
import argparse
import atexit
import csv
import json
import math
import multiprocessing.util  # its exit hook SIGTERMs and joins the workers: ours goes first
import os
import shutil
import signal
import struct
import sys
import time
import weakref
import zlib

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats

# one OpenCV thread per process: the loader's workers are the parallelism (and forking workers while OpenCV's thread
# pool is active can deadlock them)
cv2.setNumThreads(1)

# --- presets and normalisation

_VIDEOMAE = dict(stride=4, flip=True, test_clips=5, test_crops=3, finetune_sampling='dense', img_size=224,
                 num_frames=16)
DATASETS = {  # clip geometry, finetuning flips, test views and sampling [paper, VideoMAE]; demo [ours]
    'ssv2': dict(_VIDEOMAE, stride=2, flip=False, test_clips=2, finetune_sampling='segment'),  # labels say left/right
    'k400': dict(_VIDEOMAE),
    'ucf101': dict(_VIDEOMAE),
    'list': dict(_VIDEOMAE),  # any list:<file>
    # demo: 8 frames of 32 px for the tiny model's 8-px patches (64 tokens), dense at the pretraining stride; no flip:
    # the classes are directions
    'demo': dict(_VIDEOMAE, stride=2, flip=False, test_clips=2, img_size=32, num_frames=8),
}

def clip_args(a):
    """The clip geometry flags of both training scripts (argparse's add_argument `a`); None = the preset's."""
    a('--img-size', type=int, help='crop side in pixels (VideoMAE: 224; demo 32)')
    a('--num-frames', type=int, help='frames a clip (VideoMAE: 16; demo 8)')
    a('--stride', type=int, help='frames between sampled frames (VideoMAE: 2 SSv2, 4 K400/UCF101; demo 2)')
    a('--flip', action=argparse.BooleanOptionalAction, help='random horizontal flips (VideoMAE: none in pretraining; '
                                                            'in finetuning on, off for SSv2 and the demo)')

def fill_clip_args(args, *sources):
    """Set each geometry flag left at None from the first source (a dict) that has it (flips are per stage)."""
    for k in ('img_size', 'num_frames', 'stride'):
        if getattr(args, k) is None:
            setattr(args, k, next(s[k] for s in sources if k in s))

def dataset_info(data):
    """The DATASETS preset of a --data value: its own, or 'list' for any list:<file>."""
    kind = 'list' if data.startswith('list:') else data
    if kind not in DATASETS:
        raise SystemExit(f'unknown --data {data}: use ssv2, k400, ucf101, demo or list:<file>')
    return DATASETS[kind]

def normalize(x):
    """uint8 (..., 3, T, H, W) -> float32 (x/255 - mean)/std, ImageNet statistics, on x's device; the channel dim is
    -4 (a clip is (3, T, H, W), a batch (B, 3, T, H, W)). The loaders deliver uint8: call this on the device."""
    mean, std = imagenet_stats(x.device)
    return (x.float() - 255 * mean) / (255 * std)

# --- decoding: OpenCV, grab() in order (seeking in long videos), retrieve() only needed frames; counts are estimates

class BadVideo(Exception):
    """A video that cannot be used: missing, empty, not a video, corrupt, truncated or too short."""

_LENGTH = {}  # path -> the real frame count, where the container's count was wrong (per process)

def _open(path):
    if not os.path.isfile(path) or not os.path.getsize(path):
        raise BadVideo('empty file' if os.path.isfile(path) else 'missing file')
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])  # by name: a '%' would mean images
    if not cap.isOpened():
        raise BadVideo('not a readable video')
    return cap

def _grab(cap, wanted=None, keep=True):
    """Grab frames in order, retrieve the `wanted` ones (sorted, unique; None: all), stop after the last: grab()
    decodes, retrieve() converts, so a skipped frame costs its decode only. -> (RGB frames, frames grabbed).
    A stream that ends first is judged by time, frame counts being estimates (webm, variable frame rate): one that
    stops before 3/4 of the container's duration is truncated or corrupt [ours]."""
    frames, i, end = [], 0, 0.0
    while wanted is None or len(frames) < len(wanted):
        if not cap.grab():
            n, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), max(cap.get(cv2.CAP_PROP_FPS), 1e-3)
            end = max(end + 1 / fps, i / fps)  # avi has no timestamps: then the count decides
            if i == 0:
                raise BadVideo('no frame decodes')
            if 0 < n < 1e7 and end < 0.75 * n / fps:
                raise BadVideo(f'truncated or corrupt: stops at {end:.1f}s of {n / fps:.1f}s')
            break
        end = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if wanted is None or i == wanted[len(frames)]:
            ok, f = cap.retrieve()
            if not ok:
                raise BadVideo(f'frame {i} does not decode')
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB) if keep else None)
        i += 1
    return frames, i

SEEK = 300  # [ours] frames from this one on are reached by seeking (10 s at 30 fps: Kinetics' clips never seek)
AHEAD = 17  # a seek lands on a keyframe and returns the frame this far past it (_seek)

def _times(path, last):
    """Presentation times (ms, sorted) of a video's frames 0..last and the indices of its keyframes, read from its
    packets without decoding (OpenCV's raw mode) -> (times, keys), or None where the stream ends first or times
    repeat. Reading 64 packets past `last` places frames decoded out of order (B-frames) [ours]."""
    cap, t, key = _open(path), [], []
    if cap.set(cv2.CAP_PROP_FORMAT, -1):
        while len(t) <= last + 64 and cap.grab():
            t.append(cap.get(cv2.CAP_PROP_POS_MSEC))
            key.append(cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME))
    times = np.sort(t)
    if len(t) <= last or np.any(np.diff(times) <= 0):
        return None
    return times[:last + 1], np.union1d(0, np.searchsorted(times, np.float64(t)[np.bool_(key)]))

def _seek(cap, wanted, times, keys):
    """The `wanted` frames (sorted, unique), seeking to a keyframe where one lies well ahead of the decoder, every frame
    grabbed checked against its time, frame 0 first (OpenCV decodes it before a first seek anyway) -> RGB frames, or
    None where a frame is not where the times put it (timestamps off, a bad seek): the caller decodes from the start.
    Unseen: a frame the decoder drops before a seek's landing (a corrupt packet; `data.py check` decodes all)."""
    fps, frames = cap.get(cv2.CAP_PROP_FPS), []
    i, sought, landed = 0, 0, True  # i: the frame the next grab() returns, once a seek has landed
    for w in wanted:
        # OpenCV's set(POS_FRAMES, N) seeks back to the keyframe before time (N - 16) / fps, numbers it by time x fps
        # and grabs frame by frame up to number N: N = k's number + AHEAD lands on keyframe k and returns frame
        # k + AHEAD next, at any frame rate elsewhere. Each keyframe is sought once (a landing before it decodes
        # forward), and only one more than 16 frames ahead of the decoder [ours].
        k = keys[np.searchsorted(keys, max(w - AHEAD, 0), 'right') - 1]
        while i <= w:
            if 0 < i < k - 16 and k > sought:
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(times[k] * fps / 1000 + 0.5) + AHEAD)
                sought, landed = k, False
            if not cap.grab():
                return None
            t = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not landed:  # where the seek landed, by its time
                i, landed = int(np.searchsorted(times, t - 1e-3)), True
            if i > w or abs(times[i] - t) > 1e-3:
                return None
            i += 1
        ok, f = cap.retrieve()
        if not ok:
            return None
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    return frames

def _decode(path, pick):
    """Frames at the indices pick(n) chooses for a video of n frames -> (RGB frames at the sorted unique indices,
    where pick's indices are among them). n is the container's count; where the stream ends before an index, pick
    is asked again with the real n (remembered, but the outcome never depends on what this process saw before).
    Frames from SEEK on are reached by seeking where the video's packet times allow, else by decoding in order."""
    for _ in range(2):
        cap = _open(path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        idx = np.asarray(pick(n if 0 < n < 10**7 else 10**7))
        if idx.max() >= _LENGTH.get(path, 10**7):  # known to end earlier: skip the decode that would find out
            idx = np.asarray(pick(_LENGTH[path]))
        uniq, inv = np.unique(idx, return_inverse=True)
        table = _times(path, uniq[-1]) if uniq[-1] >= SEEK else None
        frames = _seek(cap, uniq, *table) if table else None
        if frames is None:
            frames, grabbed = _grab(_open(path) if table else cap, uniq)
            if len(frames) < len(uniq):
                _LENGTH[path] = grabbed  # the stream ended early
                continue
        return frames, inv.reshape(idx.shape)
    raise BadVideo('frame count changes between reads')

def read_frames(path, indices=None):
    """uint8 RGB frames (n, H, W, 3) of a video: all, or `indices` (any order, repeats allowed, past the real end
    clamped to the last frame). Raises BadVideo for a file that cannot be used."""
    if indices is None:
        return np.stack(_grab(_open(path))[0])
    frames, inv = _decode(path, lambda n: np.clip(indices, 0, n - 1))
    return np.stack([frames[i] for i in inv])

# --- published layouts: SSv2, Kinetics-400, UCF101, "<path> <label>" list files

LAYOUTS = {
    'ssv2': '<root>/labels/something-something-v2-{labels,train,validation}.json and <root>/videos/<id>.webm',
    'k400': '<root>/annotations/{train,val}.csv (label,youtube_id,time_start,time_end,split) and '
            '<root>/{train,val}/[<label>/]<youtube_id>_<start:06d>_<end:06d>.mp4',
    'ucf101': '<root>/UCF-101/<Class>/v_*.avi and <root>/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt',
    'list': 'a file of "<path> <label>" lines, paths absolute or under --data-root ({split} in its name: train/val)'}

def _need(path, kind):
    if not os.path.exists(path):
        raise SystemExit(f'{kind}: {path} not found; expected {LAYOUTS[kind]}')
    return path

def load_split(data, root, split):
    """(samples, classes) of split 'train' or 'val' read from the dataset's published layout; samples are (video
    path, class index). data: ssv2, k400, ucf101, demo (generated on first use) or list:<file>."""
    dataset_info(data)                                               # a known --data
    if data == 'demo':
        data, root = 'ssv2', ensure_demo(root)
    kind = 'list' if data.startswith('list:') else data
    if kind != 'list' and not (root and os.path.isdir(root)):
        raise SystemExit(f'{kind}: data root {root} not found; expected {LAYOUTS[kind]}')
    if kind == 'ssv2':  # class = the template without brackets, looked up in the labels file
        lab = os.path.join(root, 'labels', 'something-something-v2-{}.json')
        ids = json.load(open(_need(lab.format('labels'), kind)))
        videos = 'videos' if os.path.isdir(os.path.join(root, 'videos')) else '20bn-something-something-v2'
        items = json.load(open(_need(lab.format('train' if split == 'train' else 'validation'), kind)))
        return ([(os.path.join(root, videos, v['id'] + '.webm'), int(ids[v['template'].replace('[', '').replace(
            ']', '')])) for v in items], sorted(ids, key=lambda name: int(ids[name])))
    if kind == 'k400':  # classes: the sorted labels of both splits; videos in <split>/ or its class subfolders
        ann = os.path.join(root, 'annotations', '{}.csv')
        rows = list(csv.DictReader(open(_need(ann.format(split), kind))))
        classes = sorted({r['label'] for s in {split, 'train'} if os.path.exists(ann.format(s))
                          for r in csv.DictReader(open(ann.format(s)))})
        samples, index = [], {c: i for i, c in enumerate(classes)}
        for r in rows:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}.mp4"
            paths = [os.path.join(root, split, d, name) for d in ('', r['label'], r['label'].replace(' ', '_'))]
            samples.append((next((p for p in paths if os.path.exists(p)), paths[0]), index[r['label']]))
        return samples, classes
    if kind == 'ucf101':  # split 1 [VideoMAE]; the class folder gives the label, classInd.txt the order
        lists = os.path.join(root, 'ucfTrainTestlist', '{}.txt')
        classes = [line.split()[1] for line in open(_need(lists.format('classInd'), kind)) if line.strip()]
        index = {c.lower(): i for i, c in enumerate(classes)}
        rel = [line.split()[0] for line in open(_need(lists.format(
            'trainlist01' if split == 'train' else 'testlist01'), kind)) if line.strip()]
        return [(os.path.join(root, 'UCF-101', r), index[r.split('/')[0].lower()]) for r in rel], classes
    samples = []  # VideoMAE's list format; a path may contain spaces
    listing = _need(data[5:].replace('{split}', split), kind)
    for n, line in enumerate(open(listing), 1):
        parts = line.strip().rsplit(None, 1)
        if len(parts) == 2 and parts[1].isdigit():
            samples.append((os.path.join(root or '', parts[0]), int(parts[1])))
        elif parts:
            raise SystemExit(f'{listing}, line {n}: expected "<path> <label>" (label a class index), '
                             f'got {line.strip()!r}')
    if not samples:
        raise SystemExit(f'{listing}: no videos listed')
    return samples, [str(i) for i in range(max(label for _, label in samples) + 1)]

# --- augmentation: numpy + cv2 on uint8 clips, one set of parameters for all frames

_OFFSETS = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (1, 3), (3, 1), (3, 3)]

def _multiscale_box(rng, H, W, scales):
    """VideoMAE's GroupMultiScaleCrop: sides min(H, W) * scales (aspect off by one scale step at most), one of 13
    fixed positions in quarter steps. -> (y, x, h, w)."""
    sizes = [int(min(H, W) * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= 1]
    (h, w), (oy, ox) = pairs[rng.integers(len(pairs))], _OFFSETS[rng.integers(len(_OFFSETS))]
    return (H - h) // 4 * oy, (W - w) // 4 * ox, h, w

def _random_box(rng, H, W, scale, ratio, tries=10):
    """A box of area share in `scale` and aspect w/h log-uniform in `ratio` (None after `tries` misses)."""
    for _ in range(tries):
        area, r = H * W * rng.uniform(*scale), np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        h, w = int(round(np.sqrt(area / r))), int(round(np.sqrt(area * r)))
        if 0 < h <= H and 0 < w <= W:
            return rng.integers(H - h + 1), rng.integers(W - w + 1), h, w

def _crop_resize(frames, idx, box, dst, flip=False):
    """dst (3, T, S, S) <- frames[idx[t]] cropped to box (y, x, h, w), resized (crop first, one cv2.resize a frame),
    flipped if asked; the HWC -> CHW copy is done frame by frame, while in cache."""
    (y, x, h, w), S = box, dst.shape[-1]
    tmp = np.empty((S, S, 3), np.uint8)
    for t, i in enumerate(idx):
        cv2.resize(frames[i][y:y + h, x:x + w], (S, S), dst=tmp, interpolation=cv2.INTER_LINEAR)
        dst[:, t] = (tmp[:, ::-1] if flip else tmp).transpose(2, 0, 1)

def _blend(x, base, f):  # PIL's ImageEnhance: base + f (x - base)
    return np.clip(base + f * (x.astype(np.float32) - base), 0, 255).astype(np.uint8)

def _gray(x):
    return x.astype(np.float32) @ np.float32([[0.299], [0.587], [0.114]])  # (T, H, W, 1)

def _warp(x, M):  # one affine map for all frames, filled grey 128 [VideoMAE: its RandAugment's fill]
    return np.stack([cv2.warpAffine(f, np.float32(M), f.shape[1::-1], borderValue=(128, 128, 128)) for f in x])

def _autocontrast(x):
    lo, hi = x.min((1, 2), keepdims=True).astype(np.float32), x.max((1, 2), keepdims=True).astype(np.float32)
    return np.where(hi > lo, (x - lo) * 255 / np.maximum(hi - lo, 1), x).astype(np.uint8)

# timm's rand-m7-n4-mstd0.5-inc1 ops [VideoMAE]: x (T, H, W, 3) uint8, v = magnitude / 10, s = a random sign,
# t = the largest translation in pixels (0.45 of the crop side)
_SHARPEN = np.float32([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
_RAND_AUGMENT = [
    lambda x, v, s, t: _autocontrast(x),
    lambda x, v, s, t: np.stack([np.stack([cv2.equalizeHist(f[..., c]) for c in range(3)], -1) for f in x]),
    lambda x, v, s, t: 255 - x,  # invert
    lambda x, v, s, t: _warp(x, cv2.getRotationMatrix2D((x.shape[2] / 2, x.shape[1] / 2), 30 * v * s, 1)),
    lambda x, v, s, t: x & np.uint8(0xFF << (4 + int(4 * v)) & 0xFF),  # posterize to 4 - int(4 v) bits
    lambda x, v, s, t: np.where(x >= 256 - int(256 * v), 255 - x, x).astype(np.uint8),  # solarize
    lambda x, v, s, t: np.where(x < 128, np.minimum(x.astype(np.int32) + int(110 * v), 255), x).astype(np.uint8),
    lambda x, v, s, t: _blend(x, _gray(x), 1 + 0.9 * v * s),  # colour
    lambda x, v, s, t: _blend(x, _gray(x).mean((1, 2, 3), keepdims=True), 1 + 0.9 * v * s),  # contrast
    lambda x, v, s, t: _blend(x, 0, 1 + 0.9 * v * s),  # brightness
    lambda x, v, s, t: _blend(x, np.stack([cv2.filter2D(f, -1, _SHARPEN) for f in x]), 1 + 0.9 * v * s),  # sharpness
    lambda x, v, s, t: _warp(x, [[1, 0.3 * v * s, 0], [0, 1, 0]]),  # shear x
    lambda x, v, s, t: _warp(x, [[1, 0, 0], [0.3 * v * s, 1, 0]]),  # shear y
    lambda x, v, s, t: _warp(x, [[1, 0, t * v * s], [0, 1, 0]]),  # translate x
    lambda x, v, s, t: _warp(x, [[1, 0, 0], [0, 1, t * v * s]])]  # translate y

def _rand_augment(x, rng, size, m=7, n=4):
    """RandAugment [VideoMAE]: n ops drawn with replacement, each applied with probability 0.5 at a magnitude
    ~ N(m, 0.5) clipped to [0, 10]; the same op and magnitude on every frame, on the whole frames before the crop
    of side `size` [VideoMAE]."""
    for op in rng.integers(len(_RAND_AUGMENT), size=n):
        v, s = np.clip(rng.normal(m, 0.5), 0, 10) / 10, rng.choice([-1, 1])
        x = _RAND_AUGMENT[op](x, v, s, 0.45 * size) if rng.random() < 0.5 else x
    return x

def _erase(x, rng, p):
    """Random erasing [VideoMAE: timm's, mode 'pixel', on the clip as a batch of frames]: each frame with probability
    p gets its own box (2-33% of the area, aspect .3-3.3) of noise ~ N(ImageNet mean, std), clipped to uint8 [ours:
    the loaders deliver uint8]. x (3, T, S, S) uint8, changed in place."""
    for t in range(x.shape[1]):
        box = _random_box(rng, *x.shape[2:], (0.02, 1 / 3), (0.3, 1 / 0.3)) if rng.random() < p else None
        if box:
            y, x0, h, w = box
            noise = rng.normal(np.float32(IMAGENET_MEAN) * 255, np.float32(IMAGENET_STD) * 255, (h, w, 3))
            x[:, t, y:y + h, x0:x0 + w] = np.clip(noise, 0, 255).transpose(2, 0, 1)

# --- sampling: pretraining clips with their +g partners, finetuning and test views; bad input replaced

_WARNED = set()

class BadData(RuntimeError):
    """Too many bad videos in a row: the loader (make_loader) turns it into a one-line exit, from workers too."""

class _Videos(torch.utils.data.Dataset):
    """Key = index, or (index, item_seed) from ResumableSampler (an int key uses seed = index): all randomness comes
    from the seed, none from the worker. A bad video is replaced by the next in a seeded order of the others, warned
    about once per path and process, and listed in item['bad']; after 50 in a row (or all) it stops."""

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))
        bad, order = [], None
        while index is not None and len(bad) < 50:
            path = self.samples[index][0]
            try:  # a bad video is read again when drawn again: whether it fails may depend on the frames picked
                return dict(self.load(index, seed), bad=bad)
            except (BadVideo, cv2.error) as e:
                if path not in _WARNED:
                    _WARNED.add(path)
                    print(f'warning: bad video {path} ({e}), replaced by another sample', file=sys.stderr)
                bad.append(path)
                if order is None:  # the other samples, in an order fixed by the seed
                    order = iter([int(j) for j in np.random.default_rng([seed, 2]).permutation(len(self))
                                  if j != index])
                index = next(order, None)
        raise BadData(f'{len(bad)} videos in a row failed, e.g. {bad[:3]}: run `python data.py check`')

class PretrainDataset(_Videos):
    """Pretraining [VideoMAE]: `repeat` clips cut from one decoded video, each num_frames frames at `stride` from a
    random start, with each frame's partner motion_gap raw frames later (the time target [paper]); a clip and its
    partners share one multi-scale crop (and flip). Item: {'x', 'x_next': uint8 (R, 3, T, S, S), 'bad': [paths]}."""

    def __init__(self, samples, num_frames=16, stride=2, motion_gap=1, img_size=224, repeat=1, flip=False,
                 scales=(1, .875, .75, .66)):
        self.samples, self.num_frames, self.stride, self.motion_gap = samples, num_frames, stride, motion_gap
        self.img_size, self.repeat, self.flip, self.scales = img_size, repeat, flip, scales

    def load(self, index, seed):
        T, g, R, S = self.num_frames, self.motion_gap, self.repeat, self.img_size

        def pick(n):  # (R, 2, T) frame indices, a function of (seed, n) only
            if n < T + g:
                raise BadVideo(f'too short: {n} frames')
            s = min(self.stride, (n - 1 - g) // max(T - 1, 1))  # a short video gets a smaller stride [ours]
            start = np.random.default_rng([seed, 0]).integers(n - (T - 1) * s - g, size=(R, 1, 1))
            return start + s * np.arange(T) + np.array([[0], [g]])

        frames, idx = _decode(self.samples[index][0], pick)
        rng, (H, W) = np.random.default_rng([seed, 1]), frames[0].shape[:2]
        out = np.empty((2, R, 3, T, S, S), np.uint8)  # x, x_next
        for r in range(R):  # decode once, cut R clips [mae_st, VideoMAEv2 repeated sampling]
            box, flip = _multiscale_box(rng, H, W, self.scales), self.flip and rng.random() < 0.5
            for k in range(2):
                _crop_resize(frames, idx[r, k], box, out[k, r], flip)
        return {'x': torch.from_numpy(out[0]), 'x_next': torch.from_numpy(out[1])}

class VideoDataset(_Videos):
    """Finetuning and evaluation [VideoMAE]: sampling 'dense' (num_frames at stride) or 'segment' (one frame of each
    of num_frames segments). mode 'train': num_sample differently augmented copies of one clip (repeated
    augmentation), each: RandAugment on the whole frames, random resized crop (min_crop..1 of the area), flip, random
    erasing; 'val': the centre clip, short side -> img_size, centre crop; 'test': test_clips x test_crops views, the
    crops along the long side (SSv2: segment offsets 0, 1/test_clips, ...).
    Item: {'x': uint8 (3, T, S, S), in test (V, 3, T, S, S), in train with num_sample R > 1 (R, 3, T, S, S), 'label',
    'index', 'bad': [paths]}."""

    def __init__(self, samples, mode, num_frames=16, stride=4, sampling='dense', img_size=224, flip=True,
                 test_clips=5, test_crops=3, rand_aug=True, erase_p=0.25, min_crop=0.08, num_sample=1):
        self.samples, self.mode, self.num_frames, self.stride = samples, mode, num_frames, stride
        self.sampling, self.img_size, self.flip, self.test_clips = sampling, img_size, flip, test_clips
        self.test_crops, self.rand_aug, self.erase_p, self.min_crop = test_crops, rand_aug, erase_p, min_crop
        self.num_sample = num_sample

    def load(self, index, seed):
        T, S, train = self.num_frames, self.img_size, self.mode == 'train'
        clips = self.test_clips if self.mode == 'test' else 1

        def pick(n):  # (clips, T) frame indices
            if n < T:
                raise BadVideo(f'too short: {n} frames')
            rng = np.random.default_rng([seed, 0])
            if self.sampling == 'segment':  # a random frame of each segment; in evaluation, fixed offsets
                off = rng.random((1, T)) if train else (np.arange(clips)[:, None] + 0.5 * (clips == 1)) / clips
                return np.minimum((n / T * (np.arange(T) + off)).astype(int), n - 1)
            s = min(self.stride, (n - 1) // max(T - 1, 1))
            last = n - (T - 1) * s - 1  # the latest start
            start = rng.integers(last + 1, size=1) if train else np.linspace(0, last, clips) if clips > 1 else [
                last / 2]  # train: random; test: spread over the video; val: the centre
            return np.int64(start)[:, None] + s * np.arange(T)

        frames, idx = _decode(self.samples[index][0], pick)
        rng, (H, W) = np.random.default_rng([seed, 1]), frames[0].shape[:2]
        if train:
            R, side = self.num_sample, min(H, W)
            x = np.empty((R, 3, T, S, S), np.uint8)
            frames = np.stack([frames[i] for i in idx[0]])  # (T, H, W, 3): the clip, augmented R times below
            for r in range(R):  # one decode, R augmentations [VideoMAE: --num_sample]
                clip = _rand_augment(frames, rng, S) if self.rand_aug else frames
                box = _random_box(rng, H, W, (self.min_crop, 1), (3 / 4, 4 / 3))
                box = box or ((H - side) // 2, (W - side) // 2, side, side)
                _crop_resize(clip, range(T), box, x[r], self.flip and rng.random() < 0.5)
                _erase(x[r], rng, self.erase_p)
            x = torch.from_numpy(x if R > 1 else x[0])  # (R, 3, T, S, S) or (3, T, S, S)
        else:  # a square of the short side, resized to S = short side -> S, then an S x S crop
            side, crops = min(H, W), self.test_crops if self.mode == 'test' else 1
            offs = np.linspace(0, max(H, W) - side, crops) if crops > 1 else [(max(H, W) - side) / 2]
            x = np.empty((clips, len(offs), 3, T, S, S), np.uint8)
            for c in range(clips):
                for k, o in enumerate(np.int64(offs)):
                    _crop_resize(frames, idx[c], (o, 0, side, side) if H > W else (0, o, side, side), x[c, k])
            x = torch.from_numpy(x).flatten(0, 1)  # (V, 3, T, S, S)
            x = x if self.mode == 'test' else x[0]
        return {'x': x, 'label': self.samples[index][1], 'index': index}

# --- the demo dataset: classes told by motion only, in the SSv2 layout (webm + json) and the DAVIS layout

DEMO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data_cache', 'demo')
DEMO_CLASSES = {  # template -> (dx, dy, turn, zoom): what moves, which way (turn > 0: counter-clockwise on screen)
    'Moving [something] left': (-1, 0, 0, 0), 'Moving [something] right': (1, 0, 0, 0),
    'Moving [something] up': (0, -1, 0, 0), 'Moving [something] down': (0, 1, 0, 0),
    'Turning [something] clockwise': (0, 0, -1, 0), 'Turning [something] counterclockwise': (0, 0, 1, 0),
    'Moving [something] closer': (0, 0, 0, 1), 'Moving [something] away': (0, 0, 0, -1)}
# W x H, frames, fps [ours]: sized for a tiny model on 2 CPU cores (32 px crops, 8 frames at stride 2 with their
# +1 partners fit 24 frames with a random start); 12 fps as SSv2; 80 + 100 videos per class, 30 s to generate
DEMO_SIZE, DEMO_FRAMES, DEMO_FPS = (40, 32), 24, 12
DEMO_VERSION = 3  # the generator's; a demo written by another version is generated anew

def _colours(rng, n=2, apart=120):
    """n random RGB colours, the first two at least `apart` apart (so every pattern has contrast): float32 (n, 3)."""
    while True:
        c = rng.integers(0, 256, (n, 3)).astype(np.float32)
        if np.linalg.norm(c[0] - c[1]) >= apart:
            return c

def _texture(rng, H, W, span=None):
    """A smooth two-colour background: a linear ramp in a random direction plus 0-2 broad soft blobs; no grain,
    nothing finer than about a third of `span` (default the larger side), which the ramp crosses at full contrast
    (the central span x span window is scaled to 0..1; beyond it the ramp saturates). [ours] The ramp, one pattern
    most patches share, is where masked reconstruction starts to learn (EXPERIMENTS.md: First demo: foothold)."""
    span = span or max(H, W)
    yy, xx = (np.mgrid[:H, :W].astype(np.float32) - np.float32([[[H / 2]], [[W / 2]]])) / span
    angle = rng.uniform(0, 2 * np.pi)
    w = xx * np.cos(angle) + yy * np.sin(angle)
    for _ in range(rng.integers(3)):
        (bx, by), s = rng.uniform(-.5, .5, 2), rng.uniform(.15, .3)
        w = w + rng.uniform(-.6, .6) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s))
    centre = w[(np.abs(yy) <= .5) & (np.abs(xx) <= .5)]
    w = ((w - centre.min()) / (centre.max() - centre.min() + 1e-6)).clip(0, 1)[..., None]
    c = _colours(rng)
    return c[0] * w + c[1] * (1 - w)

def _sprite(rng, S, c=None, periods=(.5, 1)):
    """A random polygon or ellipse (radius < .46 S) filled with soft stripes (period `periods` x S) of two contrasting
    colours and an off-centre disc of a third (c: the three, else drawn), so that turning is visible:
    ((S, S, 3) float32, (S, S) alpha)."""
    alpha, kind = np.zeros((S, S), np.uint8), rng.integers(2)
    if kind:
        cv2.ellipse(alpha, (S // 2, S // 2), (int(.46 * S), int(rng.uniform(.28, .40) * S)), 0, 0, 360, 255, -1)
    else:  # k corners at jittered angles
        k = rng.integers(3, 7)
        a, r = 2 * np.pi * (np.arange(k) + rng.uniform(-.25, .25, k)) / k, .46 * S * rng.uniform(.75, 1, k)
        cv2.fillPoly(alpha, [np.int32(np.stack([S / 2 + r * np.cos(a), S / 2 + r * np.sin(a)], 1))], 255)
    yy, xx = np.mgrid[:S, :S].astype(np.float32) / S - .5
    angle, period, c = rng.uniform(0, np.pi), rng.uniform(*periods), _colours(rng, 3) if c is None else c
    w = .5 + .5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
    rgb = np.ascontiguousarray(c[0] * w[..., None] + c[1] * (1 - w[..., None]))
    cv2.circle(rgb, (S // 2, int(.72 * S)), int(.1 * S), c[2].tolist(), -1)
    return rgb, alpha

def _paste(img, labels, sprite, alpha, cx, cy, angle, scale, k=1):
    """Composite the sprite onto img (H, W, 3) centred at (cx, cy), wrapping around the borders, turned by `angle`
    degrees and scaled; labels (H, W), if given, gets k where the sprite covers."""
    (H, W), S = img.shape[:2], sprite.shape[0]
    M = cv2.getRotationMatrix2D((S / 2, S / 2), angle, scale)
    M[:, 2] += (W // 2 + cx % 1 - S / 2, H // 2 + cy % 1 - S / 2)  # to the centre, plus the fractional part
    rgba = np.roll(cv2.warpAffine(np.dstack([sprite, np.float32(alpha)]), M, (W, H)),
                   (int(cy // 1) - H // 2, int(cx // 1) - W // 2), (0, 1))  # whole pixels, wrapping
    img[:] = img + (rgba[..., :3] - img) * rgba[..., 3:] / 255
    if labels is not None:
        labels[rgba[..., 3] > 127] = k

def _view(canvas, x, y, angle, scale, W, H):
    """The camera: the W x H window at the canvas centre, the scene shifted by (x, y) px on screen, turned by `angle`
    degrees (counter-clockwise) and scaled by `scale` about the window centre; reflected beyond the canvas."""
    C = canvas.shape[0]
    M = cv2.getRotationMatrix2D((C / 2, C / 2), angle, scale)
    M[:, 2] += (W / 2 - C / 2 + x, H / 2 - C / 2 + y)
    return cv2.warpAffine(canvas, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

def _demo_video(rng, motion):
    """The frames of one demo video: a scene (a smooth background and one large striped object, about half the frame
    high) that moves as a whole, as under a moving camera: 1-2 px a frame, 6-12 degrees or 3-5% of its size a frame,
    drawn at twice the size and area-averaged [ours] (EXPERIMENTS.md: First demo: moving scene). Every parameter has
    the same distribution in every class at a random frame, so one frame cannot tell the class; the motion can."""
    (W, H), F, (dx, dy, turn, zoom) = DEMO_SIZE, DEMO_FRAMES, motion
    W2, H2 = 2 * W, 2 * H
    C = 2 * int(np.hypot(W2, H2) / .55)  # the window turned and zoomed out to 0.55; farther views see it reflected
    canvas, (sprite, alpha) = _texture(rng, C, C, span=max(W2, H2)), _sprite(rng, H2)
    (ox, oy), a0 = rng.uniform(-.25, .25, 2) * (W2, H2), rng.uniform(0, 360)
    _paste(canvas, None, sprite, alpha, C / 2 + ox, C / 2 + oy, a0, 1.0)
    t = np.arange(F) - (F - 1) / 2  # around the middle frame: the class pairs are time-reverses of each other
    v, w, k = 2 * rng.uniform(1, 2, 3), rng.uniform(6, 12), rng.uniform(.03, .05)  # px (at 2x), degrees, log-size
    x = dx * v[0] * t if dx else np.full(F, v[0] * rng.choice(t))
    y = dy * v[1] * t if dy else np.full(F, v[1] * rng.choice(t))
    a = rng.uniform(0, 360) + turn * w * t
    size = np.exp(rng.uniform(np.log(.8), np.log(1.0)) + k * (zoom * t if zoom else np.full(F, rng.choice(t))))
    return [cv2.resize(_view(canvas, x[i], y[i], a[i], size[i], W2, H2), (W, H),
                       interpolation=cv2.INTER_AREA).round().clip(0, 255).astype(np.uint8) for i in range(F)]

def _demo_davis(root, seed, seqs=6, F=20, W=160, H=128):
    """DAVIS-2017 layout (JPEGImages/480p/<seq>/00000.jpg, Annotations/480p/<seq>/00000.png palette masks,
    ImageSets/2017/val.txt; the folder is named 480p as in DAVIS, the frames are W x H). A sequence: a striped
    background and 2-3 striped objects (50-70 px, apart in frame 0, later ones in front), all in one pair of colours,
    each with its own stripe angle and period (16-32 px, as the demo videos' objects), so that a patch's mean colour
    tells no object from another [ours] (EXPERIMENTS.md: Demo DAVIS); the background pans, the objects move, turn
    and scale along straight paths, and the light changes by up to 10%."""
    names, f = [f'stripes-{s}' for s in range(seqs)], np.arange(F) / (F - 1)
    yy, xx = np.mgrid[:2 * H, :2 * W].astype(np.float32)
    for s, name in enumerate(names):
        rng = np.random.default_rng([seed, 1, s])
        c = _colours(rng)
        a, period = rng.uniform(0, np.pi), rng.uniform(16, 32)
        w = .5 + .5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
        bg = c[0] * w[..., None] + c[1] * (1 - w[..., None])          # (2H, 2W, 3): the panned scene
        d = rng.uniform(0, 2 * np.pi)
        pan = rng.uniform(1, 2) * F * (f - .5)[:, None] * [np.cos(d), np.sin(d)]  # (F, 2): 1-2 px a frame
        light = 1 + .1 * np.sin(2 * np.pi * (f + rng.uniform()))
        K, objs = rng.integers(2, 4), []
        for k in range(K):
            x0, y0 = W * (k + rng.uniform(.3, .7)) / K, H * rng.uniform(.3, .7)  # apart in frame 0
            x1, y1 = rng.uniform(.2, .8, 2) * (W, H)
            angle = rng.uniform(0, 360) + rng.uniform(-90, 90) * f
            scale = rng.uniform(.8, 1) * np.exp(rng.uniform(-.2, .2) * f)
            sprite = _sprite(rng, 80, (c[0], c[1], c[rng.integers(2)]), periods=(16 / 80, 32 / 80))
            objs.append((*sprite, x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, angle, scale))
        for d in ('JPEGImages', 'Annotations'):
            os.makedirs(os.path.join(root, d, '480p', name))
        for i in range(F):
            img, labels = _view(bg, *pan[i], 0, 1, W, H), np.zeros((H, W), np.uint8)
            for k, (sprite, alpha, xs, ys, angles, scales) in enumerate(objs):
                _paste(img, labels, sprite, alpha, xs[i], ys[i], angles[i], scales[i], k + 1)
            cv2.imwrite(os.path.join(root, 'JPEGImages', '480p', name, f'{i:05d}.jpg'),
                        (img * light[i]).clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
            write_palette_png(os.path.join(root, 'Annotations', '480p', name, f'{i:05d}.png'), labels)
    os.makedirs(os.path.join(root, 'ImageSets', '2017'))
    with open(os.path.join(root, 'ImageSets', '2017', 'val.txt'), 'w') as fh:
        fh.write('\n'.join(names) + '\n')

def _write_video(path, frames):
    """Lossless FFV1 in Matroska, under the SSv2 file name (<id>.webm: WebM is a Matroska profile and FFmpeg reads
    the container by its content) [ours]: VP8 adds codec noise to still pixels (EXPERIMENTS.md: Codec noise)."""
    tmp = path + '.mkv'  # OpenCV chooses the container by the file's extension
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'FFV1'), DEMO_FPS, frames[0].shape[1::-1])
    if not writer.isOpened():
        raise SystemExit(f'this OpenCV cannot write FFV1 video ({tmp}): the demo needs its FFMPEG backend')
    for frame in frames:
        writer.write(frame)
    writer.release()
    os.replace(tmp, path)

def ensure_demo(root=None, per_class=None, seed=0):
    """Generate the demo dataset in root (default DEMO_ROOT) unless it is there; -> root. Deterministic in seed:
    per_class (train, val) videos of each class (default (80, 100)) in the SSv2 layout, and the DAVIS layout in
    root/davis. With per_class None an existing demo of any size is used as it is, if this generator wrote it."""
    root = root or DEMO_ROOT
    marker = os.path.join(root, 'demo.json')
    if per_class is None and os.path.exists(marker) and json.load(open(marker)).get('version') == DEMO_VERSION:
        return root                                  # there already: no rank waits for another
    dist = torch.distributed.is_initialized()
    if dist and torch.distributed.get_rank() != 0:   # under DDP rank 0 generates, the others wait, then read
        torch.distributed.barrier()
        return root
    try:
        return _ensure_demo(root, per_class, seed)
    finally:
        if dist:
            torch.distributed.barrier()

def _ensure_demo(root, per_class, seed):
    marker = os.path.join(root, 'demo.json')
    per_class = per_class or (80, 100)
    stamp = json.dumps({'per_class': list(per_class), 'seed': seed, 'version': DEMO_VERSION})
    if os.path.exists(marker) and open(marker).read() == stamp:
        return root
    if os.path.isdir(root) and os.listdir(root) and not os.path.exists(marker):
        raise SystemExit(f'{root} is not empty and holds no demo dataset: remove it or choose another --data-root')
    print(f'generating the demo dataset in {root}', file=sys.stderr)
    tmp, names = f'{os.path.abspath(root)}.tmp{os.getpid()}', list(DEMO_CLASSES)
    for d in ('labels', 'videos'):
        os.makedirs(os.path.join(tmp, d))
    labels = {'labels': {n.replace('[', '').replace(']', ''): str(i) for i, n in enumerate(names)}}
    C = len(names)  # videos go round the classes: ids 0..C-1 are one of each
    for split, count, first in ('train', per_class[0], 0), ('validation', per_class[1], per_class[0] * C):
        labels[split] = [{'id': str(first + j), 'label': names[j % C].replace('[something]', 'a shape').lower(),
                          'template': names[j % C], 'placeholders': ['a shape']} for j in range(count * C)]
        for v in labels[split]:
            frames = _demo_video(np.random.default_rng([seed, 0, int(v['id'])]), DEMO_CLASSES[v['template']])
            _write_video(os.path.join(tmp, 'videos', v['id'] + '.webm'), frames)
    for name, obj in labels.items():
        with open(os.path.join(tmp, 'labels', f'something-something-v2-{name}.json'), 'w') as fh:
            json.dump(obj, fh, indent=1)
    _demo_davis(os.path.join(tmp, 'davis'), seed)
    with open(os.path.join(tmp, 'demo.json'), 'w') as fh:
        fh.write(stamp)
    if not (os.path.exists(marker) and open(marker).read() == stamp):  # else another process was first
        shutil.rmtree(root, ignore_errors=True)  # empty, or a demo of other settings
        try:
            os.rename(tmp, root)
        except OSError:  # another process was first after all
            pass
    shutil.rmtree(tmp, ignore_errors=True)
    return root

DAVIS_PALETTE = np.zeros((256, 3), np.uint8)  # the PASCAL VOC / DAVIS colour map: index bits spread over R, G, B
for _bit in range(24):
    DAVIS_PALETTE[:, _bit % 3] |= (((np.arange(256) >> _bit) & 1) << (7 - _bit // 3)).astype(np.uint8)

def _png_chunk(kind, body):  # length, type, body, CRC of type + body
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

def write_palette_png(path, array, palette=None):
    """Write an (H, W) uint8 index map as an 8-bit palette PNG (the DAVIS mask format; cv2 cannot write one)."""
    a, pal = np.ascontiguousarray(array, np.uint8), DAVIS_PALETTE if palette is None else np.uint8(palette)
    rows = np.concatenate([np.zeros((len(a), 1), np.uint8), a], 1)  # filter type 0 on every row
    with open(path, 'wb') as fh:
        header = struct.pack('>IIBBBBB', a.shape[1], a.shape[0], 8, 3, 0, 0, 0)  # 8-bit palette, not interlaced
        fh.write(b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
                 + _png_chunk(b'PLTE', pal.tobytes()) + _png_chunk(b'IDAT', zlib.compress(rows.tobytes()))
                 + _png_chunk(b'IEND', b''))

def read_palette_png(path, with_palette=False):
    """An 8-bit palette (or grey) PNG -> its (H, W) uint8 indices (cv2.imread would give colours), and with
    with_palette its palette (n, 3). Rows filtered 'none', 'sub' or 'up' (what mask writers use)."""
    data, pos, idat, pal = open(path, 'rb').read(), 8, [], None
    while pos < len(data):
        n, kind = struct.unpack('>I', data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b'IHDR':
            W, H, depth, color, _, _, interlace = struct.unpack('>IIBBBBB', body[:13])
        pal = np.frombuffer(body, np.uint8).reshape(-1, 3) if kind == b'PLTE' else pal
        idat += [body] if kind == b'IDAT' else []
        pos += 12 + n
    if data[:8] != b'\x89PNG\r\n\x1a\n' or depth != 8 or color not in (0, 3) or interlace:
        raise ValueError(f'{path}: not an 8-bit, non-interlaced palette or grey PNG')
    rows = np.frombuffer(zlib.decompress(b''.join(idat)), np.uint8).reshape(H, W + 1)
    out = np.zeros((H + 1, W), np.uint8)  # row 0: the zeros that filter 'up' sees above the first row
    for y, (f, r) in enumerate(zip(rows[:, 0], rows[:, 1:])):
        if f > 2:
            raise ValueError(f'{path}: PNG row filter {f} (average/paeth) is not supported')
        out[y + 1] = r if f == 0 else np.cumsum(r, dtype=np.uint8) if f == 1 else r + out[y]  # none, sub, up
    return (out[1:], pal) if with_palette else out[1:]

# --- loaders: a resumable distributed sampler, collate, the DataLoader

class ResumableSampler(torch.utils.data.Sampler):
    """(index, item_seed) pairs for one rank, functions of (seed, epoch) only. As DistributedSampler: the epoch's
    order is padded (repeating its head) to a multiple of world, rank r takes positions r, r + world, ...
    set_epoch(epoch, skip) skips this rank's first `skip` items: a resumed run continues the order mid-epoch."""

    def __init__(self, n, shuffle=True, seed=0, rank=0, world=1):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def __len__(self):
        return -(-self.n // self.world) - self.skip

    def __iter__(self):
        rng, total = np.random.default_rng([self.seed, self.epoch]), -(-self.n // self.world) * self.world
        order = np.resize(rng.permutation(self.n) if self.shuffle else np.arange(self.n), total)
        seeds, mine = rng.integers(2**62, size=total), slice(self.rank + self.skip * self.world, total, self.world)
        return iter([(int(i), int(s)) for i, s in zip(order[mine], seeds[mine])])

def collate(items):
    """A batch: tensors stacked (PretrainDataset's (B, R, ...) flattened to (B*R, ...)), ints as int64, the 'bad'
    lists joined. default_collate stacks into shared memory in a worker, so the batch is not copied to send it."""
    out = {k: torch.utils.data.default_collate([item[k] for item in items]) for k in items[0] if k != 'bad'}
    if 'x_next' in out:
        out['x'], out['x_next'] = out['x'].flatten(0, 1), out['x_next'].flatten(0, 1)
    return dict(out, bad=[path for item in items for path in item['bad']])

def _one_thread(*_):
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

def _worker_init(*_):
    """A loader worker: one thread, deaf to SIGTERM and SIGUSR1. A cluster (SLURM, torchrun) signals the whole process
    group, workers included; the training process decides when to stop, and then shuts its workers down (close; at
    the latest at exit, close_loaders: multiprocessing's own exit would SIGTERM them and wait)."""
    _one_thread()
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)

class _Loader(torch.utils.data.DataLoader):
    waited = 0.0  # seconds the consumer has waited for batches, in all (the training log reports its share)

    def __iter__(self):  # BadData ends the run with its one line (a worker's comes wrapped in its traceback)
        batches = super().__iter__()
        while True:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            except BadData as e:
                raise SystemExit(str(e).strip().splitlines()[-1].split('BadData: ', 1)[-1]) from None
            self.waited += time.perf_counter() - t
            yield batch

_LOADERS = weakref.WeakSet()

@atexit.register  # after multiprocessing.util's exit hook is registered (imported above), so it runs before it
def close_loaders():
    """Stop the workers of every loader still open (they exit when told to: a sentinel in their queue), then kill this
    process's daemon children left: a stuck worker (a hung read), or one whose loader is gone while an exception's
    traceback holds its iterator (multiprocessing's exit would SIGTERM them, which they ignore, and wait). A launched
    rank calls this itself: it leaves without atexit."""
    for loader in list(_LOADERS):
        if loader._iterator is not None:
            loader._iterator._shutdown_workers()
            loader._iterator = None
    for p in multiprocessing.active_children():
        if p.daemon:
            p.kill()
            p.join()

def make_loader(dataset, batch_size, workers, shuffle, seed, rank=0, world=1, drop_last=True, prefetch=2):
    """A DataLoader with a ResumableSampler: call loader.sampler.set_epoch(epoch, skip) each epoch. Each worker holds
    `prefetch` batches in shared memory (/dev/shm: containers need --shm-size or --ipc=host, README)."""
    loader = _Loader(
        dataset, batch_size, sampler=ResumableSampler(len(dataset), shuffle, seed, rank, world), num_workers=workers,
        collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last, worker_init_fn=_worker_init,
        persistent_workers=workers > 0, prefetch_factor=prefetch if workers else None,
        generator=torch.Generator().manual_seed(seed))  # leaves the global RNG alone
    _LOADERS.add(loader)
    return loader

# --- command line: read every video of a dataset once (check); time the training loader (bench)

def _scan(path):
    """Read every frame of a video once -> (frames, None) or (0, why)."""
    try:
        return _grab(_open(path), keep=False)[1], None
    except (BadVideo, cv2.error) as e:
        return 0, str(e)

def bench(args, samples):
    """Clips a second of the training scripts' loader at the clip geometry of the preset (or the flags): pretraining's
    clips with their +1 partners (`repeat` a video), or finetuning's with the full-scale augmentation (`repeat`: its
    --num-sample), in batches of 8 videos, timed for --seconds once every worker has delivered its first batch."""
    samples = [(args.video, 0)] * 10**4 if args.video else samples
    info = dataset_info(args.data)
    flip = args.flip if args.flip is not None else args.stage == 'finetune' and info['flip']  # as the scripts
    if args.stage == 'pretrain':
        ds = PretrainDataset(samples, args.num_frames, args.stride, 1, args.img_size, args.repeat, flip)
    else:
        ds = VideoDataset(samples, 'train', args.num_frames, args.stride, info['finetune_sampling'], args.img_size,
                          flip, num_sample=args.repeat)
    print(f'{args.video or args.data}: {len(set(samples))} videos; {args.stage} clips of {args.num_frames} frames at '
          f'stride {args.stride}, {args.img_size} px, repeat {args.repeat}; {args.workers} workers, {args.seconds} s')
    loader = make_loader(ds, 8, args.workers, True, 0, drop_last=False)
    warm, clips = max(args.workers, 1), 0
    for i, batch in enumerate(tqdm(loader, disable=None, leave=False)):
        if i < warm:  # start-up: until every worker has delivered a batch
            t, clips, bad = time.perf_counter(), 0, 0
            continue
        clips, bad = clips + batch['x'].numel() // math.prod(batch['x'].shape[-4:]), bad + len(batch['bad'])
        if time.perf_counter() - t > args.seconds:
            break
    if not clips:
        raise SystemExit(f'too few videos to time: {len(samples)} in batches of 8 for {warm} workers')
    dt = time.perf_counter() - t
    rate = clips / dt
    print(f'{rate:.1f} clips/s in total, {rate / warm:.1f} a worker ({clips} clips in {dt:.1f} s after the first '
          f'{warm} batches{f", {bad} bad videos replaced" if bad else ""})')
    if args.step_time:
        need = args.batch_size / args.step_time
        print(f'a GPU training {args.batch_size} clips in {args.step_time} s a step takes {need:.1f} clips/s: '
              f'{math.ceil(need / (rate / warm))} workers a GPU at this rate')
    return rate

def main(argv=None):
    p = argparse.ArgumentParser(description='check: read every video of a dataset split once: the bad ones, label '
                                            'counts; bench: clips a second of the loader, workers a GPU needs')
    a = p.add_argument
    a('command', choices=['check', 'bench'])
    a('--data', default='demo', help='ssv2 | k400 | ucf101 | demo | list:<file> [ours: demo]')
    a('--data-root', default=None, help='the dataset folder [demo: data_cache/demo]')
    a('--split', default='train', choices=['train', 'val'])
    a('--workers', type=int, default=1, help='processes; 0: this one')
    clip_args(a)  # check: a video of fewer frames than --num-frames is bad
    a('--video', help='bench: one video (every clip from it) instead of the dataset')
    a('--stage', default='pretrain', choices=['pretrain', 'finetune'], help='bench: whose clips and augmentation')
    a('--repeat', type=int, default=1, help='bench: clips cut from each decoded video (finetuning: --num-sample)')
    a('--seconds', type=float, default=30, help='bench: how long to time')
    a('--step-time', type=float, help='bench: seconds a GPU takes a step (pretrain.py --bench prints ms/step)')
    a('--batch-size', type=int, default=32, help='bench: clips a GPU a step [VideoMAE pretraining: 32; UCF101 24]')
    args = p.parse_args(argv)
    if args.video and args.command == 'check':
        p.error('--video is for bench; check reads a dataset split')
    fill_clip_args(args, dataset_info(args.data))
    samples, classes = load_split(args.data, args.data_root, args.split) if not args.video else ([], [])
    if args.command == 'bench':
        bench(args, samples)
        return 0
    paths = [path for path, _ in samples]
    pool = multiprocessing.Pool(args.workers, _one_thread) if args.workers else None
    res = list(tqdm(pool.imap(_scan, paths, 4) if pool else map(_scan, paths), total=len(paths), disable=None))
    if pool:
        pool.close()
    bad = [(path, why or f'too short: {n} frames') for path, (n, why) in zip(paths, res) if n < args.num_frames]
    print(f'videos {len(paths)}, ok {len(paths) - len(bad)}, bad {len(bad)}')
    for path, why in bad[:10]:
        print(f'  bad: {path}: {why}')
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    print(f'label counts ({len(classes)} classes, min {counts.min()}, max {counts.max()}):')
    for c in range(len(classes)) if len(classes) <= 20 else np.argsort(counts)[:5]:  # else the rarest five
        print(f'  {counts[c]:6d} {classes[c]}')
    return len(bad)

if __name__ == '__main__':
    sys.exit(1 if main() else 0)  # 1 when a video is bad
