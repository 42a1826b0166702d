"""finetune.py: layer-decay groups, mixup/cutmix, multi-view averaging, checkpoint interop, and short CPU runs on a
tiny demo (SSv2 layout) from a tiny pretrain checkpoint: train -> eval-only, resume, linear probe, 2-process eval."""
import argparse
import importlib.util
import json
import os
from dataclasses import asdict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import finetune as FT
import pretrain
from data import VideoDataset, ensure_demo
import model as M
from model import IMAGENET_MEAN, IMAGENET_STD, PRESETS, ModelConfig, MotionMAE, VideoClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**kw):
    return ModelConfig(**{**PRESETS['tiny'], 'img_size': 32, 'num_frames': 4, **kw})  # p=8: grid (2, 4, 4)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A demo in the SSv2 layout with 2 train + 1 val videos per class (16 + 8) and a tiny pretrain checkpoint."""
    root = tmp_path_factory.mktemp('ft')
    demo = ensure_demo(str(root / 'demo'), per_class=(2, 1))
    torch.manual_seed(0)
    pre = MotionMAE(tiny())
    torch.save({'model': pre.state_dict(), 'config': asdict(tiny())}, root / 'pre.pt')
    return root, demo, pre.state_dict()


def run(setup, out, *extra):
    root, demo, _ = setup
    return FT.main(['--data', 'ssv2', '--data-root', demo, '--init', str(root / 'pre.pt'), '--out', str(root / out),
                    '--batch-size', '4', '--workers', '0', '--epochs', '1', '--warmup-epochs', '1', '--lr', '1e-2',
                    '--log-every', '2', *extra])


def log_lines(path):
    return [json.loads(line) for line in open(path)]

# --- layer-wise lr decay


def test_layer_decay_groups_two_block_model():
    model = VideoClassifier(tiny(depth=2), 5)
    args = FT.get_args(['--data', 'ssv2', '--init', ''])
    opt = M.configure_optimizer(model, 1.0, args.weight_decay, (0.9, 0.999), layer_decay=args.layer_decay)
    got = {id(p): (g['lr_scale'], g['weight_decay']) for g in opt.param_groups for p in g['params']}
    assert len(got) == len(list(model.parameters()))
    # hand-computed, L = 2: embedding 0.75^3, block 0 0.75^2, block 1 0.75^1, fc_norm/head 1; no decay on 1-d params
    for name, p in model.named_parameters():
        scale = (0.75 ** 3 if name.startswith('encoder.patch_embed')
                 else 0.75 ** 2 if name.startswith('encoder.blocks.0.')
                 else 0.75 if name.startswith('encoder.blocks.1.') else 1.0)
        assert got[id(p)] == pytest.approx((scale, 0.0 if p.ndim == 1 else 0.05)), name
    assert {round(s, 6) for s, _ in got.values()} == {0.421875, 0.5625, 0.75, 1.0}

# --- mixup / cutmix / soft targets


def test_mixup_targets_and_batch_equal_hand_formula():
    torch.manual_seed(0)
    x, y, K, lam = torch.randn(3, 3, 4, 8, 8), torch.tensor([0, 2, 3]), 4, 0.7
    xm, t = FT.mix(x, y, K, lam, None, smoothing=0.1)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    assert torch.allclose(xm, 0.7 * x + 0.3 * x[[2, 1, 0]])
    on, off = 1 - 0.1 + 0.1 / K, 0.1 / K                          # smoothed one-hot: 0.925 / 0.025
    hand = torch.full((3, K), off)                                   # every class starts at the smoothing floor
    for i, (a, b) in enumerate([(0, 3), (2, 2), (3, 0)]):            # (own label, partner's label)
        hand[i, a] += 0.7 * (on - off)
        hand[i, b] += 0.3 * (on - off)
    torch.testing.assert_close(t, hand)
    # no mixing (λ = 1): targets are label smoothing and the loss is PyTorch's label-smoothed cross-entropy
    logits = torch.randn(3, K)
    xs, ts = FT.mix(x, y, K, 1.0, None, smoothing=0.1)
    assert xs is x
    torch.testing.assert_close(FT.soft_cross_entropy(logits, ts), F.cross_entropy(logits, y, label_smoothing=0.1))


def test_cutmix_box_same_on_all_frames_and_lambda_is_kept_area():
    x, y = torch.randn(4, 3, 4, 10, 12), torch.tensor([0, 1, 2, 3])
    for seed in range(50):
        lam, box = FT.draw_mix(np.random.default_rng(seed), 10, 12, mixup=0.0, cutmix=1.0)
        y0, y1, x0, x1 = box
        assert 0 <= y0 <= y1 <= 10 and 0 <= x0 <= x1 <= 12
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 120)
    lam, (y0, y1, x0, x1) = FT.draw_mix(np.random.default_rng(3), 10, 12, mixup=0.0, cutmix=1.0)
    assert 0 < lam < 1 and y1 > y0 and x1 > x0
    xm, t = FT.mix(x, y, 5, lam, (y0, y1, x0, x1), smoothing=0.0)
    inside = torch.zeros(10, 12, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    hand = torch.where(inside, x.flip(0), x)                         # the partner's pixels in the box, every frame
    assert torch.equal(xm, hand)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[0, 0] == pytest.approx(lam) and t[0, 3] == pytest.approx(1 - lam)
    # switching: mixup only -> no box; both off -> λ = 1; both on -> both kinds occur
    assert all(FT.draw_mix(np.random.default_rng(s), 10, 12, 0.8, 0.0)[1] is None for s in range(20))
    assert FT.draw_mix(np.random.default_rng(0), 10, 12, 0.0, 0.0) == (1.0, None)
    kinds = {FT.draw_mix(np.random.default_rng(s), 10, 12, 0.8, 1.0)[1] is None for s in range(40)}
    assert kinds == {True, False}

# --- multi-view evaluation


def test_average_views_groups_each_videos_views():
    B, V, K = 3, 6, 5
    logits = torch.randn(B * V, K)
    avg = FT.average_views(logits, V)
    assert avg.shape == (B, K)
    for b in range(B):                                               # video-major: views b·V .. b·V + V-1
        torch.testing.assert_close(avg[b], logits[b * V:(b + 1) * V].softmax(-1).mean(0))
    assert not torch.allclose(avg, logits.view(V, B, K).softmax(-1).mean(0))


class ViewId(torch.nn.Module):
    """Stub classifier: reads the (un-normalised) first pixel value v of a clip and votes for class v % K."""
    def __init__(self, K):
        super().__init__()
        self.K = K

    def forward(self, x):
        v = (x[:, 0, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255
        return 50.0 * F.one_hot(v.round().long() % self.K, self.K).float()


def test_predict_averages_exactly_the_views_and_drops_sampler_padding():
    K, V = 7, 6
    x = torch.zeros(2, V, 3, 2, 4, 4, dtype=torch.uint8)
    x[0, :, 0] = torch.tensor([0, 0, 1, 1, 1, 2], dtype=torch.uint8).view(V, 1, 1, 1)   # votes 2/6, 3/6, 1/6
    x[1, :, 0] = torch.tensor([5, 5, 5, 5, 5, 6], dtype=torch.uint8).view(V, 1, 1, 1)
    batch = dict(x=x, label=torch.tensor([1, 6]), index=torch.tensor([4, 9]), bad=[])
    padded = dict(x=x[:1], label=torch.tensor([1]), index=torch.tensor([4]), bad=[])  # a repeated (padding) item
    idx, scores, labels = FT.predict(ViewId(K), [batch, padded], torch.device('cpu'), 'none', 1)
    assert idx.tolist() == [4, 9] and labels.tolist() == [1, 6]
    hand = torch.tensor([[2, 3, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 5, 1]]) / 6
    torch.testing.assert_close(scores, hand, atol=1e-6, rtol=0)
    res, conf = FT.metrics(scores, labels, K)
    assert res['top1'] == 50.0 and res['top5'] == 100.0 and conf[1, 1] == 1 and conf[6, 5] == 1 and conf.sum() == 2


def test_test_views_count_order_and_crop_positions(tmp_path):
    """A 96×48 video whose red channel grows with x and green with time: 2 clips × 3 crops come clip-major, the
    crops at the left, centre and right of the long side, clip 1 later than clip 0."""
    path, n = str(tmp_path / 'v.avi'), 40
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10, (96, 48))
    for f in range(n):
        img = np.zeros((48, 96, 3), np.uint8)
        img[..., 2] = np.linspace(0, 255, 96)[None, :]                # red (BGR) = column
        img[..., 1] = 5 * f                                          # green = time
        writer.write(img)
    writer.release()
    ds = VideoDataset([(path, 0)], 'test', num_frames=4, sampling='segment', img_size=16, test_clips=2, test_crops=3)
    x = ds[0]['x'].float()                                           # (V, 3, T, S, S)
    assert x.shape == (6, 3, 4, 16, 16)
    red, green = x[:, 0].mean((1, 2, 3)), x[:, 1].mean((1, 2, 3))
    for c in range(2):
        r = red[3 * c:3 * c + 3]
        assert r[0] < 70 and 110 < r[1] < 145 and r[2] > 185           # left, centre, right: columns 0-47, 24-71, 48-95
        assert torch.allclose(green[3 * c:3 * c + 3], green[3 * c].expand(3), atol=3)  # the crops share the clip
    assert green[3] > green[0] + 10                                  # the second clip is later

def test_min_crop_bounds_the_training_crop(tmp_path):
    """A 64x64 video whose red channel grows with x: with min_crop 0.9 every training crop spans at least
    sqrt(0.9 * 3/4) of the width (its red range), with VideoMAE's 0.08 some crops span far less."""
    path = str(tmp_path / 'v.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 64))
    for _ in range(12):
        img = np.zeros((64, 64, 3), np.uint8)
        img[..., 2] = np.linspace(0, 255, 64)[None, :]
        writer.write(img)
    writer.release()

    def spans(min_crop):
        ds = VideoDataset([(path, 0)], 'train', num_frames=4, stride=1, img_size=16, flip=False, rand_aug=False,
                          erase_p=0.0, min_crop=min_crop)
        red = [ds.load(0, seed)['x'][0, 0].float() for seed in range(40)]
        return torch.tensor([r.max() - r.min() for r in red])
    wide, default = spans(0.9), spans(0.08)
    assert wide.min() > 0.8 * 255 * 0.9, wide.min()                  # sqrt(0.9 * 0.75) = 0.82, less the edge pixels
    assert default.min() < 0.5 * 255, default.min()


def test_demo_recipe_head_init_and_augmentation():
    """The demo finetunes with a head at the encoder's init scale, no RandAugment/erasing, crops >= half the frame;
    the paper's datasets keep VideoMAE's (x 0.001, on, 0.08). The head's weights follow the scale."""
    demo, k400 = FT.get_args(['--data', 'demo', '--init', '']), FT.get_args(['--data', 'k400', '--model', 'tiny', '--init', ''])
    k400.img_size, k400.num_frames = 32, 4
    stds = [FT.build_model(a, 8, {}, resume=False)[0].head.weight.std().item() for a in (demo, k400)]
    assert 0.015 < stds[0] < 0.025 and 1e-5 < stds[1] < 3e-5, stds


# --- checkpoint interop


def test_videomae_finetune_layout_gives_identical_logits(tmp_path, capsys):
    args = FT.get_args(['--data', 'demo', '--model', 'tiny', '--init', str(tmp_path / 'vm.pth')])
    cfg = ModelConfig(**PRESETS['tiny'], img_size=32, num_frames=8)   # what build_model makes of a VideoMAE ckpt
    torch.manual_seed(1)
    native = VideoClassifier(cfg, 8).eval()
    with torch.no_grad():
        for p in native.parameters():
            p.add_(0.1 * torch.randn_like(p))                        # no parameter left at its init value
    sd = {k.replace('encoder.', '', 1): v for k, v in native.state_dict().items()}
    assert {k.split('.')[0] for k in sd} == {'patch_embed', 'blocks', 'fc_norm', 'head'}
    torch.save({'module': sd, 'args': argparse.Namespace(model='vit_tiny')}, tmp_path / 'vm.pth')
    model, cfg2, probe = FT.build_model(args, 8, M.read_checkpoint(args.init))
    assert cfg2.img_size == 32 and cfg2.num_frames == 8 and not probe  # the demo preset's geometry
    out = capsys.readouterr().out
    assert 'VideoMAE-layout' in out and 'new (initialised): none; not used: none' in out
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), native(x))

# --- short runs on the tiny demo


def test_finetune_steps_then_eval_only_reproduces_logged_accuracy(setup, capsys):
    root, _, pre = setup
    res = run(setup, 'ft')
    out = capsys.readouterr().out
    assert 'init: MotionMAE checkpoint' in out
    assert 'new (initialised): fc_norm, head; not used: decoders.space, decoders.time, encoder.norm' in out
    logs = log_lines(root / 'ft' / 'log.jsonl')
    steps = [r for r in logs if 'loss' in r]
    assert [r['step'] for r in steps] == [2, 4] and all(np.isfinite(r['loss']) for r in steps)
    assert 0 < steps[0]['lr'] < steps[1]['lr'] <= 1e-2 * 4 / 256       # warmup (1 epoch = 4 steps), scaled by batch/256
    ck = torch.load(root / 'ft' / 'ckpt.pt', weights_only=True)
    assert ck['step'] == 4 and ck['epoch'] == 1 and ck['num_classes'] == 8
    w = 'encoder.blocks.0.attn.qkv.weight'
    assert not torch.equal(ck['model'][w], pre[w])                    # trained from the pretrain weights
    assert (ck['model'][w] - pre[w]).abs().max() < 0.1
    results = json.load(open(root / 'ft' / 'test_results.json'))
    assert results['views'] == '2x3' and results['n_videos'] == 8 and len(results['per_class']) == 8
    assert sum(map(sum, results['confusion'])) == 8
    img = cv2.imread(str(root / 'ft' / 'confusion.png'))         # 8 classes x 64 px, the names in a margin m
    m = img.shape[0] - 512
    assert img.shape == (512 + m, 512 + m, 3) and m > 50
    assert (img[m:, :m] < 100).any() and (img[:m, m:] < 100).any()  # names on both axes (black text on white)
    # --eval-only of the saved checkpoint: the same single-view val as logged, the same multi-view test
    again = FT.main(['--data', 'ssv2', '--data-root', setup[1], '--out', str(root / 'ft'), '--eval-only',
                     '--batch-size', '4', '--workers', '0'])
    val = [r for r in logs if 'val_top1' in r][-1]
    assert again['val']['top1'] == val['val_top1'] and again['val']['nll'] == pytest.approx(val['val_nll'], rel=1e-6)
    assert again['test']['top1'] == results['top1'] and again['test']['nll'] == pytest.approx(results['nll'], rel=1e-6)
    assert res['test']['nll'] == pytest.approx(results['nll'], rel=1e-6)
    # from the pretrain checkpoint instead (fresh head), the scores are different: the check can fail
    other = FT.main(['--data', 'ssv2', '--data-root', setup[1], '--out', str(root / 'ft'), '--eval-only',
                     '--init', str(root / 'pre.pt'), '--batch-size', '4', '--workers', '0'])
    assert other['val']['nll'] != pytest.approx(val['val_nll'], rel=1e-6)


def test_resume_mid_epoch_continues_the_same_trajectory(setup, monkeypatch):
    root = setup[0]
    run(setup, 'full', '--epochs', '2')
    calls, real = [0], FT.lr_at

    def interrupt(*a, **kw):  # the 7th step (epoch 1, batch 2) never happens: a crash
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(FT, 'lr_at', interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(setup, 'cut', '--epochs', '2', '--save-minutes', '0')
    monkeypatch.setattr(FT, 'lr_at', real)
    assert torch.load(root / 'cut' / 'ckpt.pt', weights_only=True)['videos'] == 8       # 2 batches of 4 done
    run(setup, 'cut', '--epochs', '2')
    a = torch.load(root / 'full' / 'ckpt.pt', weights_only=True)
    b = torch.load(root / 'cut' / 'ckpt.pt', weights_only=True)
    assert a['step'] == b['step'] == 8
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k


def test_one_process_with_accumulation_equals_two_processes(setup):
    """The same global batch of 4 clips as 1 process x 2 clips x --accum 2 and as 2 processes x 2 clips: the same
    steps an epoch and, without mixup, cutmix and drop path (each rank's own randomness), the same weights."""
    root = setup[0]
    flags = ['--batch-size', '2', '--mixup', '0', '--cutmix', '0', '--drop-path', '0', '--device', 'cpu']
    run(setup, 'accum', *flags, '--accum', '2')
    run(setup, 'ddp', *flags, '--gpus', '2')
    a, b = (torch.load(root / out / 'ckpt.pt', weights_only=True) for out in ('accum', 'ddp'))
    assert a['step'] == b['step'] == 4 and a['clips_per_step'] == b['clips_per_step'] == 4
    assert [r['step'] for r in log_lines(root / 'accum' / 'log.jsonl') if 'loss' in r] == [2, 4]
    w = 'encoder.blocks.0.attn.qkv.weight'
    assert not torch.equal(a['model'][w], setup[2][w])
    torch.testing.assert_close(a['model'], b['model'], rtol=1e-4, atol=1e-6)


def test_linear_probe_leaves_encoder_unchanged(setup):
    root, _, pre = setup
    run(setup, 'probe', '--linear-probe')
    ck = torch.load(root / 'probe' / 'ckpt.pt', weights_only=True)
    assert ck['linear_probe'] and ck['step'] == 4
    enc = [k for k in ck['model'] if k.startswith('encoder.')]
    assert len(enc) > 40 and all(torch.equal(ck['model'][k], pre[k]) for k in enc)
    assert torch.equal(ck['model']['fc_norm.weight'], torch.ones(192))  # frozen (fresh, as in MAE)
    assert ck['model']['head.0.num_batches_tracked'] == 4 and ck['model']['head.0.running_mean'].abs().sum() > 0
    assert 'head.0.weight' not in ck['model']                         # BatchNorm1d(affine=False)
    assert len(ck['optimizer']['state']) == 2                         # only the linear layer is optimized


def test_two_process_eval_gathers_each_video_once(setup, tmp_path):
    """7 val videos on 2 ranks: the sampler pads one; the gathered scores must be those of 1 process."""
    root, demo, pre = setup
    train, _ = FT.load_split('ssv2', demo, 'train')
    val, _ = FT.load_split('ssv2', demo, 'val')
    for split, items in (('train', train), ('val', val[:7])):
        with open(tmp_path / f'{split}.txt', 'w') as fh:
            fh.write(''.join(f'{p} {c}\n' for p, c in items))
    torch.manual_seed(2)
    clf = VideoClassifier(tiny(), 8, init_scale=10.0)                # a head that tells videos apart
    FT.load_checkpoint(clf, pre, verbose=False)
    torch.save(dict(model=clf.state_dict(), config=asdict(tiny()), linear_probe=False), tmp_path / 'clf.pt')
    args = ['--data', f'list:{tmp_path}/{{split}}.txt', '--eval-only', '--init', str(tmp_path / 'clf.pt'),
            '--batch-size', '2', '--workers', '0', '--device', 'cpu']
    one = FT.main(args + ['--out', str(tmp_path / 'one')])['test']
    FT.main(args + ['--out', str(tmp_path / 'two'), '--gpus', '2'])
    two = json.load(open(tmp_path / 'two' / 'test_results.json'))
    assert one['n_videos'] == two['n_videos'] == 7
    assert abs(one['nll'] - np.log(8)) > 0.01                         # not uniform scores
    assert two['top1'] == one['top1'] and two['nll'] == pytest.approx(one['nll'], rel=1e-5)


def test_two_process_bad_input_stops_with_one_line(tmp_path):
    """A rank that stops on bad input ends `--gpus 2` with one line, not mp.spawn's traceback."""
    for split in ('train', 'val'):
        (tmp_path / f'{split}.txt').write_text('a.webm 0\nb.webm 1\n')
    with pytest.raises(SystemExit, match=r'^launch: process \d terminated with exit code 1$'):
        FT.main(['--data', f'list:{tmp_path}/{{split}}.txt', '--eval-only', '--init', str(tmp_path / 'missing.pt'),
                 '--gpus', '2', '--workers', '0', '--device', 'cpu', '--out', str(tmp_path / 'o')])


def test_own_list_data_at_48px_8_frames_round_trips_its_geometry(setup, tmp_path):
    """A list: dataset pretrained at 48 px x 8 frames, stride 1; finetuning reads the three back from the checkpoint,
    its clips have that geometry, and it flips as its own preset says (lists: on), not as the pretraining (never)."""
    demo = setup[1]
    for split in ('train', 'val'):
        with open(tmp_path / f'own_{split}.txt', 'w') as fh:
            fh.writelines(f'{path} {label}\n' for path, label in data.load_split('ssv2', demo, split)[0])
    own = f"list:{tmp_path / 'own_{split}.txt'}"
    common = ['--data', own, '--model', 'tiny', '--batch-size', '4', '--epochs', '1', '--warmup-epochs', '1',
              '--workers', '0', '--device', 'cpu', '--no-compile']
    pretrain.main(common + ['--img-size', '48', '--num-frames', '8', '--stride', '1', '--no-flip', '--val-clips', '2',
                            '--out', str(tmp_path / 'pre')])
    ck = torch.load(tmp_path / 'pre' / 'ckpt.pt', weights_only=True)
    geometry = (ck['config']['img_size'], ck['config']['num_frames'], ck['args']['stride'], ck['args']['flip'])
    assert geometry == (48, 8, 1, False)
    assert M.MotionMAE(ModelConfig(**ck['config'])).decoders['space'].pos_embed.shape[1] == 4 * 6 * 6  # the grid
    FT.main(common + ['--init', str(tmp_path / 'pre' / 'ckpt.pt'), '--out', str(tmp_path / 'ft')])
    ft = torch.load(tmp_path / 'ft' / 'ckpt.pt', weights_only=True)
    args = argparse.Namespace(**ft['args'])
    assert (ft['config']['img_size'], ft['config']['num_frames'], args.stride, args.flip) == (48, 8, 1, True)
    ds = FT.dataset(args, ModelConfig(**ft['config']), data.load_split(own, None, 'train')[0], 'train')
    assert ds[0]['x'].shape == (3, 8, 48, 48) and (ds.stride, ds.flip) == (1, True)
    with pytest.raises(SystemExit, match='must be multiples of the patch size 8'):
        pretrain.main(common + ['--img-size', '50', '--out', str(tmp_path / 'bad')])


def test_top1_interval_is_wilsons():
    """68 of 100 right: the 95% Wilson score interval is 58.3-76.3% (the textbook value)."""
    labels = torch.zeros(100, dtype=torch.long)
    scores = F.one_hot(torch.tensor([0] * 68 + [1] * 32), 3).float()
    res, conf = FT.metrics(scores, labels, 3)
    assert res['top1'] == 68.0 and conf[0].tolist() == [68, 32, 0]
    assert [round(v, 1) for v in res['top1_ci95']] == [58.3, 76.3]


def test_recipe_stages_flips_warmup_start_and_init_refusal(setup, tmp_path):
    """No flips in pretraining on any dataset [VideoMAE]; finetuning flips as its dataset's preset says, whatever the
    pretraining did; warmup starts at 0 (VideoMAE's scheduler); a real dataset without --init stops with one line;
    --num-sample 2 trains on 2 clips of each video, still 4 steps of 4 videos an epoch."""
    assert not any(pretrain.get_args(['--data', d]).flip for d in ('ssv2', 'k400', 'ucf101', 'demo'))
    root, demo, _ = setup
    ck = dict(torch.load(root / 'pre.pt', weights_only=True), args={'data': 'k400', 'flip': False, 'stride': 2})
    args = FT.get_args(['--data', 'k400', '--init', str(root / 'pre.pt')])
    FT.build_model(args, 5, ck)                                    # reads the pretraining run's clip flags back
    assert args.flip and not FT.get_args(['--data', 'ssv2', '--init', '']).flip
    with pytest.raises(SystemExit, match=r"^finetune.py --data k400: no --init; .* --init '' to train from scratch"):
        FT.get_args(['--data', 'k400'])
    run(setup, 'warm', '--num-sample', '2', '--log-every', '1')
    lines = [r for r in log_lines(root / 'warm' / 'log.jsonl') if 'loss' in r]
    assert lines[0]['lr'] == 0 and len(lines) == 4                                   # 16 videos / 4 a step


def test_experiments_md_holds_the_current_recipe_tables():
    """EXPERIMENTS.md's recipe tables are experiments/recipes.py's output for today's presets (run it to refresh)."""
    spec = importlib.util.spec_from_file_location('recipes', os.path.join(ROOT, 'experiments', 'recipes.py'))
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    assert recipes.tables() in open(os.path.join(ROOT, 'EXPERIMENTS.md')).read()
