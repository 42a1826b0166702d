import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segment
from data import read_palette_png, write_palette_png
import model as M
from model import PRESETS, ModelConfig, VideoClassifier


def squares(T, H, W, boxes):
    """(T, H, W) uint8 masks; boxes: per object id, a function t -> (y0, x0, y1, x1) or None (absent)."""
    m = np.zeros((T, H, W), np.uint8)
    for k, box in enumerate(boxes, 1):
        for t in range(T):
            if box(t) is not None:
                y0, x0, y1, x1 = box(t)
                m[t, y0:y1, x0:x1] = k
    return m


def write_pngs(folder, masks, palette=None):
    os.makedirs(folder, exist_ok=True)
    for t, m in enumerate(masks):
        write_palette_png(os.path.join(folder, f'{t:05d}.png'), m, palette)


def make_davis(root, masks, seq='seq', frames=None, palette=None):
    """A one-sequence DAVIS-2017 tree: JPEG frames, palette PNG annotations, ImageSets/2017/val.txt."""
    os.makedirs(os.path.join(root, 'JPEGImages', '480p', seq))
    for t, m in enumerate(masks):
        img = frames[t] if frames is not None else np.full((*m.shape, 3), 128, np.uint8)
        cv2.imwrite(os.path.join(root, 'JPEGImages', '480p', seq, f'{t:05d}.jpg'), img)
    write_pngs(os.path.join(root, 'Annotations', '480p', seq), masks, palette)
    os.makedirs(os.path.join(root, 'ImageSets', '2017'))
    with open(os.path.join(root, 'ImageSets', '2017', 'val.txt'), 'w') as f:
        f.write(seq + '\n')
    return str(root)


def score(tmp_path, gt, pred):
    root = make_davis(tmp_path / 'davis', gt)
    write_pngs(tmp_path / 'res' / 'seq', pred)
    return segment.main(['--davis-root', root, '--results-only', str(tmp_path / 'res'),
                         '--output', str(tmp_path / 'out')])


MOVING = [lambda t: (10, 5 + 3 * t, 30, 25 + 3 * t), lambda t: (35, 60 - 2 * t, 55, 80 - 2 * t)]


# ---------------------------------------------------------------------------------------------------------
# metrics


def test_golden_osvos_scores(shared_data, tmp_path):
    """davis-mini scored against the OSVOS predictions = the official davis2017-evaluation's output."""
    res = segment.main(['--davis-root', os.path.join(shared_data, 'davis-mini'), '--results-only',
                        os.path.join(shared_data, 'davis-mini-osvos'), '--output', str(tmp_path)])
    golden = json.load(open(os.path.join(shared_data, 'davis-mini-osvos.golden.json')))
    for k, v in golden.items():
        if k != 'per_object':
            assert res[k] == pytest.approx(v, abs=1e-6), k
    assert res['per_object'].keys() == golden['per_object'].keys()
    for name, v in golden['per_object'].items():
        assert res['per_object'][name]['J'] == pytest.approx(v['J'], abs=1e-6), name
        assert res['per_object'][name]['F'] == pytest.approx(v['F'], abs=1e-6), name
    assert json.load(open(tmp_path / 'results.json')) == res
    lines = open(tmp_path / 'global_results-val.csv').read().splitlines()
    assert lines == ['J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay',
                     ','.join(f'{golden[c]:.3f}' for c in lines[0].split(','))]
    assert open(tmp_path / 'per-sequence_results-val.csv').read().splitlines()[0] == 'Sequence,J-Mean,F-Mean'


def test_identical_masks_score_one(tmp_path):
    gt = squares(8, 64, 96, MOVING)
    res = score(tmp_path, gt, gt)
    for k in ('J&F-Mean', 'J-Mean', 'J-Recall', 'F-Mean', 'F-Recall'):
        assert res[k] == 1.0, k
    assert res['J-Decay'] == 0.0 and res['F-Decay'] == 0.0
    assert list(res['per_object']) == ['seq_1', 'seq_2']
    lines = open(tmp_path / 'out' / 'per-sequence_results-val.csv').read().splitlines()
    assert lines == ['Sequence,J-Mean,F-Mean', 'seq_1,1.000,1.000', 'seq_2,1.000,1.000']


def test_empty_prediction_scores_zero(tmp_path):
    gt = squares(8, 64, 96, MOVING)
    res = score(tmp_path, gt, np.zeros_like(gt))
    assert res['J&F-Mean'] == res['J-Mean'] == res['F-Mean'] == res['J-Recall'] == 0.0


def test_one_pixel_shift_keeps_f(tmp_path):
    gt = squares(6, 64, 96, MOVING[:1])    # diagonal 115 px: tolerance ceil(0.008 * 115) = 1 px
    pred = np.roll(gt, 1, axis=2)
    res = score(tmp_path, gt, pred)
    assert res['F-Mean'] == 1.0
    assert res['J-Mean'] == pytest.approx(19 * 20 / (21 * 20))  # 20x20 square shifted by 1 px
    far = np.roll(gt, 3, axis=2) == 1                                    # 3 px: outside the tolerance
    assert (segment.boundary_f(gt == 1, far) < 1).all() and (segment.jaccard(gt == 1, far) < 1).all()


def test_absent_objects(tmp_path):
    """Object 2 leaves the scene in frames 5-6 (of 8): empty in both = 1; predicted while absent = 0."""
    gt = squares(8, 64, 96, [MOVING[0], lambda t: None if t >= 5 else (35, 60, 55, 80)])
    stuck = squares(8, 64, 96, [MOVING[0], lambda t: (35, 60, 55, 80)])
    assert score(tmp_path / 'a', gt, gt)['per_object']['seq_2'] == {'J': 1.0, 'F': 1.0}
    res = score(tmp_path / 'b', gt, stuck)
    # scored frames 1..6: J = F = [1, 1, 1, 1, 0, 0]; the evaluator's bins for 6 values are
    # [0:2], [1:4], [3:5], [4:6] -> decay = mean(1, 1) - mean(0, 0) = 1
    assert res['per_object']['seq_2'] == {'J': pytest.approx(4 / 6), 'F': pytest.approx(4 / 6)}
    assert segment.db_statistics([1, 1, 1, 1, 0, 0]) == pytest.approx((4 / 6, 4 / 6, 1.0))
    assert segment.db_statistics([1, .5, 1, 1, .2, 0]) == pytest.approx((3.7 / 6, 3 / 6, .75 - .1))
    assert segment.db_statistics(np.arange(10) ** 2)[2] == pytest.approx(5 / 3 - 194 / 3)  # bins [0:3], [7:10]
    assert res['J-Mean'] == pytest.approx((1 + 4 / 6) / 2)


def test_seg2bmap_and_disk_by_hand():
    seg = np.zeros((8, 8), bool)
    seg[2:6, 2:6] = True
    ring = np.zeros((8, 8), bool)    # boundary is offset half a pixel towards the origin: rows/cols 1..5
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False
    assert (segment.seg2bmap(seg) == ring).all()
    bottom = np.zeros((3, 3), bool)  # at the image edges the last row / column compare one way only
    bottom[2] = True
    assert segment.seg2bmap(bottom).astype(int).tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert not segment.seg2bmap(np.ones((3, 3), bool)).any()
    assert segment.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert segment.disk(2).sum() == 13


def test_bad_inputs(tmp_path):
    gt = squares(5, 64, 96, MOVING)
    root = make_davis(tmp_path / 'davis', gt)
    res = tmp_path / 'res' / 'seq'
    cases = [('00002.png', np.full((64, 96), 3, np.uint8), 'object id 3'),
             ('00002.png', np.zeros((32, 96), np.uint8), 'size'),
             ('00003.png', None, 'missing')]
    for name, bad, message in cases:
        write_pngs(res, gt)
        if bad is None:
            os.remove(res / name)
        else:
            write_palette_png(str(res / name), bad)
        with pytest.raises(SystemExit, match=message) as e:
            segment.main(['--davis-root', root, '--results-only', str(tmp_path / 'res'),
                          '--output', str(tmp_path / 'o')])
        assert name in str(e.value)
    with pytest.raises(SystemExit, match='nope'):
        segment.main(['--davis-root', root, '--sequences', 'nope', '--results-only', str(tmp_path / 'res')])
    with pytest.raises(SystemExit, match='pretrain.py'):
        segment.main(['--davis-root', root, '--ckpt', str(tmp_path / 'none.pt')])


# ---------------------------------------------------------------------------------------------------------
# label propagation


def test_window_mask_matches_loops():
    h, w, r = 4, 6, 1
    ref = torch.zeros(h, w, h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            ref[i, j, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1] = True
    assert torch.equal(segment.window_mask(h, w, r), ref.reshape(h * w, h * w))


def moving_scene(T, h, w, speed):
    """The scene moves `speed` tokens right per frame; each token's feature is a one-hot code of the scene
    point it shows (exact correspondence), and a 2x2 object moves with the scene."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    feats = [F.one_hot(ii * w + (jj - speed * t) % w, h * w).float() for t in range(T)]  # (h, w, D=h w)
    masks = torch.zeros(T, h, w, dtype=torch.long)
    for t in range(T):
        masks[t, 2:4, 1 + speed * t:3 + speed * t] = 1
    return feats, masks, F.one_hot(masks[0], 2).permute(2, 0, 1).float()


def test_propagation_follows_position_codes():
    T, h, w, p = 8, 6, 10, 4
    feats, masks, first = moving_scene(T, h, w, 1)
    soft = segment.propagate(feats, first)                                        # (T - 1, 2, h, w)
    assert soft.shape == (T - 1, 2, h, w)
    assert torch.equal(soft.argmax(1), masks[1:])
    assert torch.allclose(soft.sum(1), torch.ones(T - 1, h, w))
    for t in range(1, T):  # pixels: the x p blocks, less the corners that bilinear upsampling rounds off
        up = masks[t].repeat_interleave(p, 0).repeat_interleave(p, 1).numpy()
        m = segment.labels_to_mask(soft[t - 1], p, (h * p, w * p))
        exact = segment.labels_to_mask(F.one_hot(masks[t], 2).permute(2, 0, 1).float(), p, (h * p, w * p))
        assert (m == exact).all() and (m != up).sum() <= 4 and m[9:15, 4 * t + 5:4 * t + 11].all()
    assert segment.resize_hw(480, 854) == (480, 832) and segment.resize_hw(854, 480) == (832, 480)


def test_propagation_window_and_context():
    """Two tokens per frame: a radius-1 window cannot see the match, no window (radius 0) can. One token per
    frame with radius 1: frame 0 drops out of reach, the previous predictions carry the mask."""
    feats, masks, first = moving_scene(4, 6, 10, 2)
    assert torch.equal(segment.propagate(feats, first, radius=0).argmax(1), masks[1:])
    assert not torch.equal(segment.propagate(feats, first, radius=1).argmax(1), masks[1:])
    feats, masks, first = moving_scene(6, 6, 10, 1)
    assert torch.equal(segment.propagate(feats, first, radius=1).argmax(1), masks[1:])
    assert not torch.equal(segment.propagate(feats, first, radius=1, n_context=0).argmax(1), masks[1:])


def test_propagation_equals_dense_affinities():
    """The top-k path equals the definition written densely: A = exp(cos / tau) in the window, all but
    the k largest per query zeroed, rows normalised, labels mixed (random features: no ties)."""
    torch.manual_seed(0)
    T, h, w, D, C, n_ctx, r, k, tau = 6, 5, 7, 8, 3, 2, 2, 3, 0.1
    feats = [F.normalize(torch.randn(h, w, D), dim=-1) for _ in range(T)]
    first = F.one_hot(torch.randint(0, C, (h, w)), C).permute(2, 0, 1).float()
    flat = [f.reshape(h * w, D) for f in feats]
    near = segment.window_mask(h, w, r).float()
    labels = [first.reshape(C, -1).T]                                  # per frame (h w, C)
    for t in range(1, T):
        ctx = [0] + list(range(max(1, t - n_ctx), t))
        A = torch.cat([torch.exp(flat[t] @ flat[c].T / tau) * near for c in ctx], 1)  # (h w, n h w)
        A = torch.where(A >= A.topk(k, dim=1).values[:, -1:], A, 0)
        labels.append(A / A.sum(1, keepdim=True) @ torch.cat([labels[c] for c in ctx]))
    ref = torch.stack([lab.T.reshape(C, h, w) for lab in labels[1:]])
    assert torch.allclose(segment.propagate(feats, first, n_ctx, r, k, tau), ref, atol=1e-5)


def test_labels_to_mask_min_max():
    """[DINO] each channel is min-max normalised before the argmax: a faint but distinct object survives."""
    lab = torch.stack([torch.full((3, 4), .9), torch.full((3, 4), .1)])  # (C=2, h, w)
    lab[:, 1, 2] = torch.tensor([.6, .4])
    m = segment.labels_to_mask(lab, 8, (24, 32))
    assert m[10:14, 18:22].all() and 16 < m.sum() < 8 * 8 * 2  # one token, corners rounded by bilinear


def test_end_to_end_tiny_model(tmp_path):
    """A random tiny model on a synthetic sequence: palette PNGs of the ground-truth size, names, palette."""
    T, H, W = 5, 48, 72
    gt = squares(T, H, W, [lambda t: (8, 4 + 4 * t, 24, 20 + 4 * t), lambda t: (28, 40, 44, 60)])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    palette = rng.integers(0, 255, (256, 3), dtype=np.uint8)
    root = make_davis(tmp_path / 'davis', gt, frames=frames, palette=palette)
    cfg = ModelConfig(**PRESETS['tiny'], img_size=32, num_frames=4)
    torch.manual_seed(0)
    torch.save({'model': VideoClassifier(cfg, 0).state_dict(), 'config': dataclasses.asdict(cfg)}, tmp_path / 'ck.pt')
    out = tmp_path / 'out'
    res = segment.main(['--davis-root', root, '--ckpt', str(tmp_path / 'ck.pt'), '--output', str(out),
                        '--short-side', '0', '--device', 'cpu'])
    assert sorted(os.listdir(out / 'seq')) == [f'{t:05d}.png' for t in range(T)]
    for t in range(T):
        raw = open(out / 'seq' / f'{t:05d}.png', 'rb').read(26)
        assert raw[12:16] == b'IHDR' and raw[25] == 3                              # colour type 3: palette
        assert int.from_bytes(raw[16:20], 'big') == W and int.from_bytes(raw[20:24], 'big') == H
        m, pal = read_palette_png(str(out / 'seq' / f'{t:05d}.png'), with_palette=True)
        assert m.shape == (H, W) and m.max() <= 2 and (pal == palette).all()
    assert (read_palette_png(str(out / 'seq' / '00000.png')) == gt[0]).all()
    assert os.path.isfile(out / 'global_results-val.csv') and res['per_object'].keys() == {'seq_1', 'seq_2'}


def test_results_only_writes_beside_the_pngs_and_a_failed_run_leaves_no_old_result(tmp_path, capsys):
    gt = squares(5, 64, 96, MOVING)
    root = make_davis(tmp_path / 'davis', gt)
    write_pngs(tmp_path / 'res' / 'seq', gt)
    res = segment.main(['--davis-root', root, '--results-only', str(tmp_path / 'res')])   # no --output: RES
    assert res['J&F-Mean'] == 1.0 and f"outputs in {tmp_path / 'res'}" in capsys.readouterr().out
    written = set(os.listdir(tmp_path / 'res'))
    assert {'results.json', 'global_results-val.csv', 'per-sequence_results-val.csv'} <= written
    os.remove(tmp_path / 'res' / 'seq' / '00002.png')                # now the run fails: its folder keeps no result
    with pytest.raises(SystemExit, match='missing mask'):
        segment.main(['--davis-root', root, '--results-only', str(tmp_path / 'res')])
    assert not any(f.endswith(('.csv', '.json')) for f in os.listdir(tmp_path / 'res'))


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    """A tiny encoder without its config, read as --model base: refused, not scored as a random encoder."""
    torch.save({'model': VideoClassifier(ModelConfig(**PRESETS['tiny']), 0).state_dict()}, tmp_path / 'tiny.pt')
    root = make_davis(tmp_path / 'davis', squares(5, 64, 96, MOVING))
    with pytest.raises(SystemExit) as e:
        segment.main(['--davis-root', root, '--ckpt', str(tmp_path / 'tiny.pt'), '--model', 'base', '--device', 'cpu',
                      '--output', str(tmp_path / 'out')])
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'tiny.pt'} does not fit this model: 0/") and '\n' not in msg, msg
    assert 'encoder.patch_embed.proj.weight (checkpoint (192, 3, 2, 8, 8) vs model (768, 3, 2, 16, 16))' in msg
    assert not os.path.exists(tmp_path / 'out')


def test_colour_baseline_follows_objects_only_where_colour_tells_them_apart(tmp_path):
    """--features colour: each 8-px patch's mean colour through the same propagation. Two objects moving a patch a
    frame over a grey background: followed when each has a colour of its own, lost when all are grey."""
    T, H, W = 6, 64, 96
    gt = squares(T, H, W, [lambda t: (8, 8 + 8 * t, 32, 32 + 8 * t), lambda t: (40, 64 - 8 * t, 56, 88 - 8 * t)])
    cfg = ModelConfig(**PRESETS['tiny'], img_size=32, num_frames=4)
    torch.save({'model': VideoClassifier(cfg, 0).state_dict(), 'config': dataclasses.asdict(cfg)}, tmp_path / 'ck.pt')
    scores = []
    for colours in ([[128, 128, 128], [40, 40, 220], [220, 60, 40]], [[128, 128, 128]] * 3):
        root = make_davis(tmp_path / f'davis{len(scores)}', gt, frames=np.stack([np.uint8(colours)[m] for m in gt]))
        scores.append(segment.main(['--davis-root', root, '--ckpt', str(tmp_path / 'ck.pt'), '--features', 'colour',
                                    '--output', str(tmp_path / f'out{len(scores)}'), '--short-side', '0'])['J-Mean'])
    assert scores[0] > 0.8 and scores[1] < 0.5, scores
    img = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)   # 2 x 3 patches of 8 px
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    x = (x / 255 - torch.tensor([.485, .456, .406])[:, None, None]) / torch.tensor([.229, .224, .225])[:, None, None]
    by_hand = x.reshape(3, 2, 8, 3, 8).mean((2, 4)).permute(1, 2, 0)                   # each patch's mean colour
    clf = VideoClassifier(cfg, 0).eval()
    torch.testing.assert_close(segment.frame_features(clf, img, colour=True), F.normalize(by_hand, dim=-1))


def test_encoder_features_use_the_trained_final_norm_at_the_first_temporal_slot(tmp_path):
    """A pretraining checkpoint: features = the still frame's tubelets embedded, plus slot 0 of the position table
    (spatially resized, not interpolated in time), the blocks, the trained final LayerNorm (weights not 1/0), L2.
    A checkpoint without that norm (finetuned, mean-pooled): a parameter-free LayerNorm instead."""
    torch.manual_seed(0)
    cfg = ModelConfig(**PRESETS['tiny'], img_size=32, num_frames=4)                  # 2 temporal slots
    mae = M.MotionMAE(cfg)
    with torch.no_grad():
        mae.encoder.norm.weight.uniform_(0.5, 2.0)
        mae.encoder.norm.bias.normal_()
    torch.save({'model': mae.state_dict(), 'config': dataclasses.asdict(cfg)}, tmp_path / 'pre.pt')
    torch.save({'model': VideoClassifier(cfg, 0).state_dict(), 'config': dataclasses.asdict(cfg)}, tmp_path / 'ft.pt')
    img = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)     # 2 x 3 patches of 8 px
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    x = (x / 255 - torch.tensor([.485, .456, .406])[:, None, None]) / torch.tensor([.229, .224, .225])[:, None, None]
    enc = mae.encoder
    with torch.no_grad():
        tok = enc.patch_embed.proj(x[None, :, None].expand(-1, -1, 2, -1, -1)).flatten(2).transpose(1, 2)  # (1, 6, D)
        pos = M.resize_pos(enc.pos_embed, cfg.grid, (2, 2, 3))[:, :6]                    # slot 0 of 2
        y = tok + pos
        for blk in enc.blocks:
            y = blk(y)
    trained = F.layer_norm(y, (192,), enc.norm.weight, enc.norm.bias, 1e-6)[0].view(2, 3, -1)
    clf = segment.load_encoder(str(tmp_path / 'pre.pt'), 'tiny', 'cpu')
    torch.testing.assert_close(segment.frame_features(clf, img), F.normalize(trained, dim=-1), rtol=1e-4, atol=1e-5)
    plain = F.layer_norm(y, (192,))[0].view(2, 3, -1)                                   # the same encoder, no norm
    clf = segment.load_encoder(str(tmp_path / 'pre.pt'), 'tiny', 'cpu', trained_norm=False)
    torch.testing.assert_close(segment.frame_features(clf, img), F.normalize(plain, dim=-1), rtol=1e-4, atol=1e-5)
    clf = segment.load_encoder(str(tmp_path / 'ft.pt'), 'tiny', 'cpu')
    assert isinstance(clf.encoder.norm, torch.nn.Identity)
