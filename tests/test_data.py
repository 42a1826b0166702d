"""data.py on CPU in seconds: decoding, bad input, dataset layouts, pair augmentation, the demo, the sampler."""
import json
import math
import os
import re

import cv2
import numpy as np
import pytest
import torch

import data
import pretrain


def write_video(path, frames, fourcc='MJPG', fps=12):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), path
    for f in frames:
        writer.write(np.ascontiguousarray(f))
    writer.release()
    return str(path)


def test_sequential_and_sampled_reading_agree(shared_data):
    for name, n in [('flipping_a_pancake.mkv', 310), ('test.avi', 164), ('realshort.mp4', 36)]:
        path = os.path.join(shared_data, 'videos', name)
        every = data.read_frames(path)
        assert every.shape[0] == n and every.dtype == np.uint8 and every.shape[-1] == 3
        ok, first = cv2.VideoCapture(path).read()
        assert ok and np.array_equal(every[0], first[..., ::-1])  # RGB
        idx = [n - 1, 0, 7, 7, n // 2, n + 50]  # any order, repeats, and past the end (clamped)
        assert np.array_equal(data.read_frames(path, idx), every[np.minimum(idx, n - 1)])
    # the mkv says 311 frames for its 310: samples must not depend on whether this process found out before
    path = os.path.join(shared_data, 'videos', 'flipping_a_pancake.mkv')
    ds = data.PretrainDataset([(path, 0)], 16, 4, img_size=32)
    known = [ds[(0, seed)]['x'] for seed in range(6)]
    assert data._LENGTH[path] == 310
    data._LENGTH.clear()
    assert all(torch.equal(ds[(0, seed)]['x'], x) for seed, x in enumerate(known))


def moving(n, h=48, w=64):
    """n frames of a texture sliding one pixel a frame, the frame number in a corner: no two alike."""
    tex = np.random.default_rng(0).integers(0, 256, (h, w + n, 3), np.uint8)
    frames = [np.ascontiguousarray(tex[:, i:i + w]) for i in range(n)]
    for i, f in enumerate(frames):
        f[:8, :8] = 8 * (i % 32)
    return frames


def count_seeks(monkeypatch, early=0):
    """Replace data._seek by a counting one -> list of (it returned frames, seeks it made) a call. early: every seek
    aims that many frames before where it was asked to (a seek that lands short)."""
    calls, seek = [], data._seek

    class Counted:
        def __init__(self, cap):
            self.cap, self.sets = cap, 0

        def __getattr__(self, name):
            return getattr(self.cap, name)

        def set(self, prop, value):
            self.sets += 1
            assert self.sets < 50, 'seeking in a loop'
            return self.cap.set(prop, max(value - early, 0))

    def counted(cap, *a):
        c = Counted(cap)
        out = seek(c, *a)
        calls.append((out is not None, c.sets))
        return out
    monkeypatch.setattr(data, '_seek', counted)
    return calls


def seeks_agree(path, calls):
    """Clips (16 frames at stride 4 and their +1 partners) at the start, near it, in the middle, at the end, and five
    clips at once, read by data.read_frames equal the frames decoded in order -> _seek's (returned frames, seeks)
    for each read."""
    every = data.read_frames(path)  # all frames: grab() in order, no seeking
    n, out = len(every), []
    clip = 4 * np.arange(16)[:, None] + np.array([0, 1])
    for idx in [0 + clip, 1 + clip, n // 2 + clip, n - 62 + clip, np.linspace(0, n - 62, 5)[:, None, None] + clip]:
        idx = np.clip(np.int64(idx), 0, n - 1).ravel()
        calls.clear()
        assert np.array_equal(data.read_frames(path, idx), every[idx]), (path, idx[:4])
        out.append(calls[0] if len(calls) == 1 else calls[:])
    return out


def test_seeking_reads_the_frames_decoding_in_order_reads(tmp_path, monkeypatch):
    seek, calls = data._seek, count_seeks(monkeypatch)
    frames = moving(900)
    for path in [write_video(tmp_path / 'long.mp4', frames, 'mp4v', 30),  # MPEG-4: a keyframe every 12 frames
                 write_video(tmp_path / 'long.avi', frames, 'MJPG', 30)]:  # every frame a keyframe
        # the start and near it: in order; the middle and the end: one seek; five clips: four (the first at 0)
        assert seeks_agree(path, calls) == [[], [], (True, 1), (True, 1), (True, 4)]
    data._write_video(str(tmp_path / 'demo.webm'), frames[:150])  # the demo's: FFV1 in Matroska, under .webm
    monkeypatch.setattr(data, 'SEEK', 0)  # seek in a short video too
    assert seeks_agree(str(tmp_path / 'demo.webm'), calls)[2:4] == [(True, 1), (True, 1)]
    # timestamps that do not place the frames (a variable frame rate, a decoder's delay) are caught, frame 0 first
    times, path = data._times, str(tmp_path / 'long.mp4')
    for change, seeks in [(lambda t: t + 40, 0), (lambda t: np.where(np.arange(len(t)) == 460, t + 1, t), 1)]:
        monkeypatch.setattr(data, '_times', lambda p, last: (change(times(p, last)[0]), times(p, last)[1]))
        assert seeks_agree(path, calls)[2] == (False, seeks)  # then decoded in order: the same frames
    monkeypatch.setattr(data, '_times', times)
    monkeypatch.setattr(data, '_seek', seek)
    calls = count_seeks(monkeypatch, early=40)  # landing 40 frames short: decoded forward, each keyframe sought once
    assert seeks_agree(path, calls)[2:] == [(True, 1), (True, 1), (True, 4)]


def test_seeking_in_the_real_clips(shared_data, monkeypatch):
    calls = count_seeks(monkeypatch)
    monkeypatch.setattr(data, 'SEEK', 0)  # all three are shorter than where seeking starts
    videos = os.path.join(shared_data, 'videos')
    assert seeks_agree(os.path.join(videos, 'flipping_a_pancake.mkv'), calls)[3] == (True, 1)  # keys 0, 150, 300
    assert seeks_agree(os.path.join(videos, 'realshort.mp4'), calls)[3] == (True, 0)  # keys 0, 30: never worth it
    assert seeks_agree(os.path.join(videos, 'test.avi'), calls)[3] == (False, 0)  # its times a frame late: in order


def test_loader_bench_prints_clips_a_second_and_the_workers_a_gpu_needs(tmp_path, capsys):
    video = write_video(tmp_path / 'v.avi', moving(40))
    for stage, repeat in ('pretrain', 2), ('finetune', 2):
        assert data.main(['bench', '--video', video, '--data', 'demo', '--workers', '2', '--seconds', '1',
                          '--step-time', '0.01', '--stage', stage, '--repeat', str(repeat)]) == 0
        out = capsys.readouterr().out
        assert f'{stage} clips of 8 frames at stride 2, 32 px, repeat {repeat}; 2 workers' in out
        total, each, clips, dt = map(float, re.search(
            r'([\d.]+) clips/s in total, ([\d.]+) a worker \((\d+) clips in ([\d.]+) s', out).groups())
        assert clips % (8 * repeat) == 0  # batches of 8 videos, `repeat` clips each
        assert clips / (dt + .05) - .05 <= total <= clips / (dt - .05) + .05  # printed to 0.1
        need = int(re.search(r'3200.0 clips/s: (\d+) workers a GPU', out).group(1))  # 32 clips in 0.01 s
        assert abs(total / 2 - each) < 0.1  # printed to 0.1
        assert math.ceil(3200 / (each + .05)) <= need <= math.ceil(3200 / (each - .05))
    # a dataset the loader runs through: 24 videos, 3 batches, the first one start-up: 2 x 8 videos x 2 clips
    listing = tmp_path / 'list_train.txt'
    listing.write_text(f'{video} 0\n' * 24)
    for stage in ('pretrain', 'finetune'):
        data.main(['bench', '--data', f'list:{listing}', '--workers', '0', '--seconds', '600', '--stage', stage,
                   '--repeat', '2', '--img-size', '32', '--num-frames', '8', '--stride', '2'])
        assert ' a worker (32 clips in ' in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --video is bench's
        data.main(['check', '--video', video])


def test_bad_inputs_are_counted_not_raised(shared_data, tmp_path, capsys):
    videos = os.path.join(shared_data, 'videos')
    raw = open(os.path.join(videos, 'flipping_a_pancake.mkv'), 'rb').read()
    (tmp_path / 'truncated.mkv').write_bytes(raw[:len(raw) // 2])
    (tmp_path / 'zero.mp4').write_bytes(b'')
    (tmp_path / 'random.mp4').write_bytes(np.random.default_rng(0).bytes(50000))
    three = write_video(tmp_path / 'three.avi', [np.full((32, 32, 3), 60 * i, np.uint8) for i in range(3)])
    bad = [os.path.join(videos, 'corrupted.mp4'), str(tmp_path / 'truncated.mkv'), str(tmp_path / 'zero.mp4'),
           str(tmp_path / 'random.mp4'), three, str(tmp_path / 'missing.mp4')]
    samples = [(path, 0) for path in bad] + [(os.path.join(videos, 'realshort.mp4'), 1)]
    # segment sampling reaches the end of each video, so truncation is always seen
    ds = data.VideoDataset(samples, 'val', num_frames=8, sampling='segment', img_size=32)
    for i, path in enumerate(bad):
        item = ds[i]
        assert item['bad'][0] == path and item['label'] == 1 and item['x'].shape == (3, 8, 32, 32)
    batch = data.collate([ds[(i, 7)] for i in range(len(samples))])
    assert set(batch['bad']) == set(bad) and batch['label'].tolist() == [1] * 7
    err = capsys.readouterr().err
    assert all(err.count(f'bad video {path} ') == 1 for path in bad)  # warned once each
    log = pretrain.RunLog(str(tmp_path), 1, 1, 0, 0, 1, 1)                 # rank 1: no files
    log.batch(batch, len(samples), {}, 1)
    with pytest.raises(SystemExit, match=r'of 7 videos .* failed to load, more than 10%; e.g. .*corrupted.mp4'):
        log.epoch(0, 0, 'cpu')
    log = pretrain.RunLog(str(tmp_path), 1, 1, 0, 0, 1, 1)
    log.batch({'bad': ['x']}, 100, {}, 1)                              # under the share
    log.epoch(1, 0, 'cpu')
    pre = data.PretrainDataset(samples, num_frames=8, stride=2, img_size=32, repeat=2)
    item = pre[(2, 0)]
    assert item['bad'][0] == bad[2] and item['x'].shape == (2, 3, 8, 32, 32)
    with pytest.raises(RuntimeError, match='in a row'):  # nothing decodes: an error, not an endless loop
        data.PretrainDataset([(path, 0) for path in bad])[0]
    listing = tmp_path / 'all.txt'
    listing.write_text(''.join(f'{path} {label}\n' for path, label in samples))
    assert data.main(['check', '--data', f'list:{listing}', '--workers', '0', '--num-frames', '8']) == 6
    assert 'videos 7, ok 1, bad 6' in capsys.readouterr().out


def test_layout_readers(tmp_path):
    frames = [np.full((24, 32, 3), 40 * i, np.uint8) for i in range(5)]
    # SSv2: json labels, <id>.webm
    root = tmp_path / 'ssv2'
    (root / 'labels').mkdir(parents=True), (root / 'videos').mkdir()
    names = {'Moving something left': '0', 'Pushing something so that it slightly moves': '1'}
    for split, vid, template in [('train', '7', 'Pushing [something] so that it slightly moves'),
                                 ('validation', '9', 'Moving [something] left')]:
        json.dump([{'id': vid, 'label': 'x', 'template': template, 'placeholders': ['a cup']}],
                  open(root / 'labels' / f'something-something-v2-{split}.json', 'w'))
        write_video(root / 'videos' / f'{vid}.webm', frames, 'VP80')
    json.dump(names, open(root / 'labels' / 'something-something-v2-labels.json', 'w'))
    assert data.load_split('ssv2', str(root), 'train') == ([(str(root / 'videos' / '7.webm'), 1)], list(names))
    samples, _ = data.load_split('ssv2', str(root), 'val')
    assert samples == [(str(root / 'videos' / '9.webm'), 0)] and data.read_frames(samples[0][0]).shape == (5, 24, 32, 3)
    # Kinetics-400: csv annotations, flat <split>/ and class subfolders
    k400 = tmp_path / 'k400'
    for d in ('annotations', 'train', 'val/air drumming'):
        (k400 / d).mkdir(parents=True)
    head = 'label,youtube_id,time_start,time_end,split\n'
    (k400 / 'annotations' / 'train.csv').write_text(head + 'air drumming,bbb,0,10,train\nabseiling,aaa,14,24,train\n')
    (k400 / 'annotations' / 'val.csv').write_text(head + 'air drumming,ccc,5,15,val\n')
    for f in ['train/bbb_000000_000010.mp4', 'train/aaa_000014_000024.mp4', 'val/air drumming/ccc_000005_000015.mp4']:
        write_video(k400 / f, frames, 'mp4v')
    samples, classes = data.load_split('k400', str(k400), 'train')
    assert classes == ['abseiling', 'air drumming']
    assert samples == [(str(k400 / 'train' / 'bbb_000000_000010.mp4'), 1),
                       (str(k400 / 'train' / 'aaa_000014_000024.mp4'), 0)]
    val = data.load_split('k400', str(k400), 'val')[0]
    assert val == [(str(k400 / 'val' / 'air drumming' / 'ccc_000005_000015.mp4'), 1)]
    # UCF101: class folders of .avi, split 1 lists (Windows line ends, as published)
    ucf = tmp_path / 'ucf'
    for c in ['ApplyEyeMakeup', 'Archery']:
        (ucf / 'UCF-101' / c).mkdir(parents=True)
        write_video(ucf / 'UCF-101' / c / f'v_{c}_g01_c01.avi', frames)
    (ucf / 'ucfTrainTestlist').mkdir()
    (ucf / 'ucfTrainTestlist' / 'classInd.txt').write_text('1 ApplyEyeMakeup\r\n2 Archery\r\n')
    (ucf / 'ucfTrainTestlist' / 'trainlist01.txt').write_text('Archery/v_Archery_g01_c01.avi 2\r\n')
    (ucf / 'ucfTrainTestlist' / 'testlist01.txt').write_text('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n')
    assert data.load_split('ucf101', str(ucf), 'train') == (
        [(str(ucf / 'UCF-101' / 'Archery' / 'v_Archery_g01_c01.avi'), 1)], ['ApplyEyeMakeup', 'Archery'])
    assert data.load_split('ucf101', str(ucf), 'val')[0][0][1] == 0
    # a list file of "<path> <label>", {split} in its name, paths relative to the root
    (tmp_path / 'val.txt').write_text('videos/9.webm 3\n')
    assert data.load_split(f'list:{tmp_path}/{{split}}.txt', str(root), 'val') == (
        [(str(root / 'videos' / '9.webm'), 3)], ['0', '1', '2', '3'])
    # a missing root or annotation file stops with one line that shows the expected layout
    with pytest.raises(SystemExit, match=r'labels/something-something-v2-\{labels,train,validation\}.json'):
        data.load_split('ssv2', str(tmp_path / 'nowhere'), 'train')
    os.remove(k400 / 'annotations' / 'val.csv')
    with pytest.raises(SystemExit, match=r'val.csv not found; expected <root>/annotations'):
        data.load_split('k400', str(k400), 'val')


def test_pairs_share_crop_and_flip(tmp_path):
    rng = np.random.default_rng(0)
    ramp = 2 * np.arange(64)[None, :, None]                        # brighter to the right
    texture = (ramp + rng.integers(0, 12, (48, 64, 3))).astype(np.uint8)
    path = write_video(tmp_path / 'ramp.avi', [texture + 4 * k for k in range(30)], 'FFV1')  # lossless; +4 a frame
    ds = data.PretrainDataset([(path, 0)], num_frames=8, stride=2, motion_gap=2, img_size=32, repeat=4, flip=True)
    flipped = []
    for seed in range(3):
        item = ds[(0, seed)]
        x, nxt = item['x'].int(), item['x_next'].int()  # (R, 3, T, S, S)
        assert (nxt - x - 8).abs().max() <= 1  # gap 2: +8 everywhere, so the same crop and flip on both
        assert (x[:, :, 1:] - x[:, :, :-1] - 8).abs().max() <= 1  # stride 2
        assert torch.equal(item['x_next'][:, :, :-1], item['x'][:, :, 1:])  # gap == stride: partner = next frame
        flipped += (x[..., -4:].float().mean((1, 2, 3, 4)) < x[..., :4].float().mean((1, 2, 3, 4))).tolist()
    assert 0 < sum(flipped) < len(flipped)  # some clips flipped, some not
    assert (item['x_next'].flip(-1).int() - x - 8).abs().max() > 20  # a pair flipped apart would be caught
    # finetuning views: train (all RandAugment ops run), val, test = clips x crops along the long side
    for op in data._RAND_AUGMENT:
        clip = op(np.ascontiguousarray(np.stack([texture] * 4)), 0.7, -1, 14.4)
        assert clip.shape == (4, 48, 64, 3) and clip.dtype == np.uint8
    shapes = {mode: data.VideoDataset([(path, 5)], mode, num_frames=8, stride=2, img_size=32, test_clips=2,
                                      test_crops=3)[0]['x'].shape for mode in ('train', 'val', 'test')}
    assert shapes == {'train': (3, 8, 32, 32), 'val': (3, 8, 32, 32), 'test': (6, 3, 8, 32, 32)}
    views = data.VideoDataset([(path, 5)], 'test', num_frames=8, stride=2, img_size=32, test_clips=2)[0]['x']
    assert views[0, 0].float().mean() < views[1, 0].float().mean() < views[2, 0].float().mean()  # left, centre, right


def motion_features(clip, thr=1.5):
    """Least-squares affine flow of a clip (brightness constancy on moving pixels) -> (u, v, divergence, curl)."""
    g = np.stack([cv2.GaussianBlur(f.astype(np.float32).mean(-1), (5, 5), 1.5) for f in clip])
    yy, xx = np.mgrid[:g.shape[1], :g.shape[2]].astype(np.float32)
    fits = []
    for t in range(len(g) - 1):
        It, (Iy, Ix) = g[t + 1] - g[t], np.gradient((g[t] + g[t + 1]) / 2)
        w = np.abs(It) > thr
        if w.sum() < 10:  # nothing moved between these two frames
            continue
        X, Y = (xx - xx[w].mean()) / 10, (yy - yy[w].mean()) / 10
        p = np.linalg.lstsq(np.stack([Ix, Ix * X, Ix * Y, Iy, Iy * X, Iy * Y], -1)[w], -It[w], rcond=None)[0]
        fits.append([p[0], p[3], p[1] + p[5], p[4] - p[2]])
    return np.median(fits, 0)


def test_demo_is_deterministic_and_only_motion_tells_the_class(tmp_path):
    a = data.ensure_demo(str(tmp_path / 'a'), per_class=(6, 1), seed=3)
    b = data.ensure_demo(str(tmp_path / 'b'), per_class=(6, 1), seed=3)
    samples, classes = data.load_split('ssv2', a, 'train')  # the real SSv2 reader reads it
    assert len(samples) == 48 and classes == [t.replace('[', '').replace(']', '') for t in data.DEMO_CLASSES]
    for f in ['labels/something-something-v2-train.json', 'labels/something-something-v2-validation.json']:
        assert open(os.path.join(a, f)).read() == open(os.path.join(b, f)).read()
    clips = [data.read_frames(path) for path, _ in samples]
    labels = np.array([label for _, label in samples])
    for (path, _), clip in zip(samples[:8], clips):  # webm headers hold random ids: compare the frames
        assert np.array_equal(clip, data.read_frames(path.replace(a, b)))
    # DAVIS layout: JPEG frames, palette PNG masks with 2-3 objects in frame 0, val.txt
    davis = os.path.join(a, 'davis')
    for seq in open(os.path.join(davis, 'ImageSets', '2017', 'val.txt')).read().split():
        jpgs = sorted(os.listdir(os.path.join(davis, 'JPEGImages', '480p', seq)))
        assert jpgs[0] == '00000.jpg' and [j[:5] for j in jpgs] == [p[:5] for p in sorted(
            os.listdir(os.path.join(davis, 'Annotations', '480p', seq)))]
        mask, palette = data.read_palette_png(os.path.join(davis, 'Annotations', '480p', seq, '00000.png'), True)
        assert set(np.unique(mask)) in ({0, 1, 2}, {0, 1, 2, 3}) and np.array_equal(palette, data.DAVIS_PALETTE)
        image = cv2.imread(os.path.join(davis, 'JPEGImages', '480p', seq, '00000.jpg'))
        assert image.shape[:2] == mask.shape
    # leave-one-out nearest class mean: chance on one random frame, (near) perfect on motion
    rng = np.random.default_rng(0)
    frame = np.stack([cv2.resize(c[rng.integers(len(c))].mean(-1), (10, 8), interpolation=cv2.INTER_AREA).ravel()
                      for c in clips])
    motion = np.stack([motion_features(c) for c in clips])

    def accuracy(f):
        f, hits = (f - f.mean(0)) / (f.std(0) + 1e-6), 0
        for i in range(len(f)):
            means = np.stack([f[(labels == c) & (np.arange(len(f)) != i)].mean(0) for c in range(8)])
            hits += np.argmin(((means - f[i]) ** 2).sum(1)) == labels[i]
        return hits / len(f)
    assert accuracy(frame) < 0.35 and accuracy(motion) > 0.9


def test_demo_frames_agree_across_classes_but_motion_does_not(monkeypatch):
    # record what the camera does in every frame: shift x, y, angle, log size
    view, drawn = data._view, []
    monkeypatch.setattr(data, '_view', lambda canvas, x, y, angle, scale, W, H: (
        drawn.append((x, y, angle, np.log(scale))), view(canvas, x, y, angle, scale, W, H))[1])
    F, n, rng = data.DEMO_FRAMES, 24, np.random.default_rng(0)
    shifts, sizes, colours = [], [], []
    for c, motion in enumerate(data.DEMO_CLASSES.values()):
        drawn.clear()
        t = rng.integers(F, size=n)  # a random frame of each video
        colours.append([np.r_[f.mean((0, 1)), f.std((0, 1))] for f in (
            data._demo_video(np.random.default_rng([7, c, j]), motion)[t[j]] for j in range(n))])
        p = np.array(drawn).reshape(n, F, 4)
        one = p[np.arange(n), t]
        assert abs(np.exp(2j * np.pi * one[:, 2] / 360).mean()) < 0.5  # angle uniform on the circle in every class
        shifts.append(one[:, :2])
        sizes.append(one[:, 3])
        assert np.array_equal(np.sign(np.median(np.diff(p, axis=1), (0, 1))), motion)  # what moves, which way
    for v in (np.array(shifts)[..., 0], np.array(shifts)[..., 1], np.array(sizes)):  # (8, n): one distribution
        assert np.abs(v.mean(1) - v.mean()).max() < 4 * v.std() / np.sqrt(n)
        assert np.abs(v.std(1) / v.std() - 1).max() < 0.35
    colours = np.array(colours)  # (8, n, 6): colour mean and spread of the frame
    z = (colours.mean(1) - colours.mean((0, 1))) / colours.std((0, 1)) * np.sqrt(n)
    assert np.abs(z).max() < 4


def test_palette_png_reader_matches_davis(shared_data, tmp_path):
    for seq in ['blackswan', 'car-shadow']:
        path = os.path.join(shared_data, 'davis-mini', 'Annotations', '480p', seq, '00000.png')
        mask, palette = data.read_palette_png(path, True)
        assert mask.shape == (480, 854) and set(np.unique(mask)) == {0, 1}
        assert np.array_equal(palette[mask], cv2.imread(path)[..., ::-1])  # the colours cv2 sees
        assert np.array_equal(palette, data.DAVIS_PALETTE[:len(palette)])
        data.write_palette_png(tmp_path / 'm.png', mask)
        assert np.array_equal(data.read_palette_png(tmp_path / 'm.png'), mask)
        assert np.array_equal(cv2.imread(str(tmp_path / 'm.png')), cv2.imread(path))


def test_sampler_resumes_and_splits_ranks(tmp_path):
    full = list(data.ResumableSampler(10, True, seed=1))
    assert sorted(i for i, _ in full) == list(range(10))
    s = data.ResumableSampler(10, True, seed=1)
    s.set_epoch(0, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(1)
    assert sorted(i for i, _ in s) == list(range(10)) and list(s) != full
    ranks = [list(data.ResumableSampler(10, True, 1, rank, 3)) for rank in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4] and {i for r in ranks for i, _ in r} == set(range(10))  # padded
    s = data.ResumableSampler(10, True, 1, 1, 3)
    s.set_epoch(0, skip=1)
    assert list(s) == ranks[1][1:]  # skip counts this rank's items
    two = [{i for i, _ in data.ResumableSampler(10, True, 1, rank, 2)} for rank in range(2)]
    assert not two[0] & two[1] and two[0] | two[1] == set(range(10))
    # a loader resumed mid-epoch delivers the same batches, and workers do not change the data
    path = write_video(tmp_path / 'v.avi', [np.random.default_rng(k).integers(0, 255, (40, 48, 3), np.uint8)
                                            for k in range(20)])
    ds = data.PretrainDataset([(path, 0)] * 6, num_frames=4, stride=2, img_size=32, repeat=2, flip=True)
    loader = data.make_loader(ds, 2, 0, True, seed=5)
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 3 and batches[0]['x'].shape == (4, 3, 4, 32, 32) and batches[0]['bad'] == []
    assert not torch.equal(batches[0]['x'], batches[1]['x'])
    resumed = data.make_loader(ds, 2, 1, True, seed=5)
    resumed.sampler.set_epoch(1, skip=2)
    again = list(resumed)
    assert len(again) == 2 and all(torch.equal(p['x'], q['x']) and torch.equal(p['x_next'], q['x_next'])
                                   for p, q in zip(again, batches[1:]))
    x = torch.zeros(2, 3, 1, 1, 1, dtype=torch.uint8)
    zero = -torch.tensor([.485, .456, .406]) / torch.tensor([.229, .224, .225])   # black, normalised by hand
    assert torch.allclose(data.normalize(x)[0, :, 0, 0, 0], zero)


@pytest.mark.parametrize('workers', [0, 1])
def test_a_bad_list_line_and_only_bad_videos_stop_with_one_line(tmp_path, workers):
    (tmp_path / 'l_train.txt').write_text('a.mp4 0\njustapath\n')
    with pytest.raises(SystemExit, match=r'l_train.txt, line 2: expected "<path> <label>"'):
        data.load_split(f"list:{tmp_path / 'l_{split}.txt'}", None, 'train')
    bad = [(f'/nonexistent/{i}.mp4', 0) for i in range(6)]
    loader = data.make_loader(data.PretrainDataset(bad, 8, 2, 1, 32), 2, workers, True, 0)
    with pytest.raises(SystemExit) as e:                          # from a worker too: its line, not its traceback
        next(iter(loader))
    assert str(e.value).startswith('6 videos in a row failed, e.g.') and '\n' not in str(e.value), str(e.value)


def test_finetuning_augmentation_in_videomaes_order_and_repeated(tmp_path, monkeypatch):
    """RandAugment runs on the whole frames, before the random resized crop (a hand check: an op that blacks out the
    first 24 columns of what it gets shows 8 columns in the 32 x 32 centre crop of a 32 x 64 frame, not 24); repeated
    augmentation gives num_sample clips of the same frames, each augmented on its own."""
    frames = [np.full((32, 64, 3), 20 * k + 40, np.uint8) for k in range(8)]
    path = write_video(tmp_path / 'v.avi', frames, 'FFV1')
    monkeypatch.setattr(data, '_RAND_AUGMENT', [lambda x, v, s, t: np.concatenate([0 * x[:, :, :24], x[:, :, 24:]], 2)])
    ds = data.VideoDataset([(path, 3)], 'train', num_frames=4, stride=2, img_size=32, flip=False, erase_p=0.0,
                           min_crop=1.0)                                         # no crop fits: the centre square
    black = [ds[(0, s)]['x'][0, 0] for s in range(4)]
    assert all(torch.equal(b[:, :8], torch.zeros(32, 8, dtype=torch.uint8)) and b[:, 8:].min() > 0 for b in black)
    monkeypatch.undo()
    texture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / 't.avi', [texture // 2 + 8 * k for k in range(12)], 'FFV1')
    item = data.VideoDataset([(path, 3)], 'train', num_frames=4, stride=2, img_size=32, rand_aug=False,
                             erase_p=0.0, num_sample=3)[(0, 5)]
    x = item['x'].float()                                                   # (3, 3, T, S, S): one label for all
    assert item['label'] == 3 and x.shape == (3, 3, 4, 32, 32)
    assert all((x[r, :, 1:] - x[r, :, :-1] - 16).abs().mean() < 2 for r in range(3))   # the same frames (+8 a frame)
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])         # crops of their own
