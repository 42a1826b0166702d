"""
Decoding speed of data.py side by side in one run: a clip's cost by its position in a long H.264 video (seeking),
against decord and against a baseline data.py (another version of the file, e.g. `git show HEAD~1:data.py`), and
the speed on short videos (the demo and the real test clips), best of several rounds.

    pip install av decord            # for this measurement only: neither is a dependency of the project
    git show <commit>:data.py > /tmp/data_before.py
    python experiments/loading.py --baseline /tmp/data_before.py --short path/to/short/*.mp4 ...
    python experiments/loading.py --formats      # seeking against decoding in order on 8 containers / codecs

The long video is generated here (PyAV's libx264, its default keyframes: at most 250 frames apart, more at scene
cuts) in --cache: a textured scene panning, --seconds at 30 fps, --size W H. A clip is pretraining's: 16 frames at
stride 4 with each frame's +1 partner (32 frames over 62), as data.read_frames reads them and as decord's
get_batch does (its VideoReader opened per clip, as a loader opens each video per item). One thread everywhere.
Methods are timed alternately, start by start, so that a busy machine slows them alike.
"""
import argparse
import glob
import importlib.util
import os
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402


def generate(path, seconds, W, H, fps=30):
    """A textured scene panning and turning, the frame number written on it: H.264 (libx264 defaults), yuv420p."""
    import av
    out = av.open(path + '.tmp.mp4', 'w')
    stream = out.add_stream('libx264', rate=fps)
    stream.width, stream.height, stream.pix_fmt = W, H, 'yuv420p'
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (3 * H, 3 * W, 3), dtype=np.uint8), (0, 0), 3)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)
    for i in range(seconds * fps):
        x, y = int(W + W * np.sin(i / 50)), int(H + H * np.cos(i / 70))
        frame = np.ascontiguousarray(tex[y:y + H, x:x + W])
        cv2.putText(frame, str(i), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    os.replace(path + '.tmp.mp4', path)


def formats(folder):
    """Seeking against decoding in order on containers and codecs OpenCV's writer cannot make: 1,200 frames 160x120,
    clips at 6 places and 5 clips at once, every read asked to seek (data.SEEK = 0); -> prints, per video, whether
    every read returned the same frames and how many reads seeked."""
    import fractions
    import av
    frames = [np.ascontiguousarray(np.roll(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8), 2 * i,
                                           1)) for i in range(1200)]
    for f, i in zip(frames, range(1200)):
        cv2.putText(f, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
    videos = {'h264.mp4': ('libx264', None), 'h264.mkv': ('libx264', None), 'vp8.webm': ('libvpx', None),
              'vp9.webm': ('libvpx-vp9', None), 'ffv1.mkv': ('ffv1', None), 'mpeg4.mp4': ('mpeg4', None),
              'mjpeg.avi': ('mjpeg', None), 'vfr.mp4': ('libx264', [33 if (i // 100) % 2 == 0 else 67 for i in
                                                                     range(1200)])}  # ms between frames
    for name, (codec, gaps) in videos.items():
        path = os.path.join(folder, name)
        out = av.open(path, 'w')
        stream = out.add_stream(codec, rate=30, options={'g': '60'})
        stream.width, stream.height = 160, 120
        stream.pix_fmt = 'yuvj420p' if codec == 'mjpeg' else 'yuv420p'
        if gaps:
            stream.codec_context.time_base = stream.time_base = fractions.Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format='rgb24')
            if gaps:
                frame.pts, frame.time_base = sum(gaps[:i]), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        out.close()
        every = data.read_frames(path)
        seeked, same, seek = 0, True, data._seek
        data.SEEK, data._seek = 0, lambda cap, *a: seek(cap, *a)
        for start in [0, 1, 300, 600, 1100, 1138, np.linspace(0, 1138, 5)[:, None, None]]:
            idx = np.minimum(np.int64(start + 4 * np.arange(16)[:, None] + np.array([0, 1])), len(every) - 1).ravel()
            calls = []
            data._seek = lambda cap, *a: calls.append(seek(cap, *a)) or calls[-1]
            same &= np.array_equal(data.read_frames(path, idx), every[idx])
            seeked += any(c is not None for c in calls)
        data.SEEK, data._seek = 300, seek
        print(f'{name}: {len(every)} frames, the same frames as in order: {same}; reads the seeking path returned '
              f'(no fallback): {seeked} of 7')


def clip(start, n):
    return np.minimum(start + 4 * np.arange(16)[:, None] + np.array([0, 1]), n - 1).ravel()


def timed(fn, *a):
    t = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t, out


def decord_read(path, idx):
    import decord
    return decord.VideoReader(path, num_threads=1).get_batch(list(idx)).asnumpy()


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    p.add_argument('--cache', default=os.path.join(ROOT, 'data_cache', 'loading'))
    p.add_argument('--seconds', type=int, default=180)
    p.add_argument('--size', type=int, nargs=2, default=[320, 240], metavar=('W', 'H'))
    p.add_argument('--starts', type=int, default=12, help='clip starts in each of the first and last 10%%')
    p.add_argument('--spread', type=int, default=20, help='clip starts spread through the whole video')
    p.add_argument('--baseline', default=None, help='another data.py to time beside this one')
    p.add_argument('--short', nargs='*', default=[], help='short videos to time whole (with the demo\'s)')
    p.add_argument('--rounds', type=int, default=7, help='rounds over the short videos (best of)')
    p.add_argument('--formats', action='store_true', help='only: seeking against decoding in order, 8 formats')
    args = p.parse_args()
    cv2.setNumThreads(1)
    os.makedirs(args.cache, exist_ok=True)
    if args.formats:
        return formats(args.cache)
    path = os.path.join(args.cache, f'long_{args.seconds}s_{args.size[0]}x{args.size[1]}.mp4')
    if not os.path.exists(path):
        generate(path, args.seconds, *args.size)
    n = int(cv2.VideoCapture(path).get(cv2.CAP_PROP_FRAME_COUNT))  # exact in mp4
    methods = {'data.py': data.read_frames}
    if args.baseline:
        methods['baseline'] = load_module(args.baseline, 'data_baseline').read_frames
    try:
        import decord  # noqa: F401
        methods['decord'] = decord_read
    except ImportError:
        print('decord is not installed: pip install decord (for this measurement only)')
    rng = np.random.default_rng(0)
    last = n - 62
    groups = {'first 10%': rng.integers(0, last // 10, args.starts),
              'last 10%': rng.integers(last - last // 10, last, args.starts),
              'spread': np.linspace(0, last, args.spread).astype(int)}
    print(f'{path}: {n} frames, {args.size[0]}x{args.size[1]}; clip: 16 frames at stride 4 and their +1 partners')
    times = {(g, m): [] for g in groups for m in methods}
    for g, starts in groups.items():
        for s in starts:
            ref = None
            for m, fn in methods.items():
                dt, frames = timed(fn, path, clip(s, n))
                times[g, m].append(dt)
                ref = frames if ref is None else ref
                assert np.array_equal(frames, ref), f'{m} returns other frames than data.py at start {s}'
    print('| clips starting in | ' + ' | '.join(f'{m} (ms, mean)' for m in methods) + ' |')
    print('|---|' + '---|' * len(methods))
    for g in groups:
        print(f'| {g} ({len(groups[g])}) | ' + ' | '.join(f'{1000 * np.mean(times[g, m]):.1f}' for m in methods) + ' |')
    mean = {k: np.mean(v) for k, v in times.items()}
    print(f'data.py: last 10% / first 10% = {mean["last 10%", "data.py"] / mean["first 10%", "data.py"]:.2f}x' + (
        f'; spread, data.py / decord = {mean["spread", "data.py"] / mean["spread", "decord"]:.2f}x'
        if 'decord' in methods else ''))
    short = sorted(glob.glob(os.path.join(data.ensure_demo(), 'videos', '*.webm')))[:40] + args.short
    if args.baseline and short:
        best = {m: np.inf for m in ('data.py', 'baseline')}
        for _ in range(args.rounds):
            for m in best:
                t = time.perf_counter()
                for v in short:
                    methods[m](v)
                    methods[m](v, clip(0, 10**9)[:16])
                best[m] = min(best[m], time.perf_counter() - t)
        print(f'short videos ({len(short)}, each whole and one clip; best of {args.rounds}): data.py '
              f'{1000 * best["data.py"]:.0f} ms, baseline {1000 * best["baseline"]:.0f} ms, speed ratio '
              f'{best["baseline"] / best["data.py"]:.3f}')


if __name__ == '__main__':
    main()
