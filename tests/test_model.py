"""model.py: geometry, masking, targets, loss, decoders, classifier, checkpoints (CPU, tiny)."""
import ast
import os
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model as M
from model import PRESETS, ModelConfig, MotionMAE, VideoClassifier

torch.manual_seed(0)


def tiny(**kw):
    base = dict(PRESETS['tiny'], img_size=32, num_frames=4)
    base.update(kw)
    return ModelConfig(**base)  # p=8: grid (2, 4, 4), N = 32 tokens


def clips(cfg, B=2):
    x = torch.randn(B, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    return x, torch.randn_like(x)

# --- geometry


def test_patchify_unpatchify_exact_inverses_and_layout():
    x = torch.randn(2, 3, 4, 16, 24)
    v = M.patchify(x, 2, 8)                                         # grid (2, 2, 3)
    assert v.shape == (2, 12, 2 * 8 * 8 * 3)
    assert torch.equal(M.unpatchify(v, 2, 8, (2, 2, 3)), x)
    assert torch.equal(M.patchify(M.unpatchify(v, 2, 8, (2, 2, 3)), 2, 8), v)
    # token (ti=1, hi=0, wi=2) is index 1*6 + 0*3 + 2 = 8, values ordered (u, p, p, C)
    crop = x[:, :, 2:4, 0:8, 16:24].permute(0, 2, 3, 4, 1).reshape(2, -1)
    assert torch.equal(v[:, 8], crop)


def test_sinusoid_table_matches_videomae_numpy_formula():
    n, d = 1568, 64
    ang = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    ang[:, 0::2], ang[:, 1::2] = np.sin(ang[:, 0::2]), np.cos(ang[:, 1::2])
    assert torch.equal(M.sinusoid_table(n, d), torch.from_numpy(ang).float())


def _cubic_matrix(n, m, a=-0.75):
    """(m, n) weights of 1-D cubic convolution (Keys, a = -0.75) from n to m samples, half-pixel centres, taps
    clamped at the borders: written out by hand, independent of F.interpolate."""
    def k(d):
        d = abs(d)
        return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1 if d <= 1 else a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a
    W = np.zeros((m, n))
    for i in range(m):
        x = (i + 0.5) * n / m - 0.5
        x0 = int(np.floor(x))
        for j in range(x0 - 1, x0 + 3):
            W[i, min(max(j, 0), n - 1)] += k(x - j)
    return W


def _linear_matrix(n, m):
    """(m, n) weights of 1-D linear interpolation, half-pixel centres, clamped at the borders."""
    W = np.zeros((m, n))
    for i in range(m):
        x = max((i + 0.5) * n / m - 0.5, 0.0)
        x0 = int(np.floor(x))
        W[i, x0] += 1 - (x - x0)
        W[i, min(x0 + 1, n - 1)] += x - x0
    return W


def test_position_resize_keeps_training_grid_exact_and_equals_hand_interpolation():
    table = M.sinusoid_table(2 * 4 * 4, 8)[None]
    assert M.resize_pos(table, (2, 4, 4), (2, 4, 4)) is table
    src = table.reshape(2, 4, 4, 8).double().numpy()
    for dst in [(4, 8, 6), (3, 3, 5)]:                             # up and down, each axis its own factor
        (t2, h2, w2) = dst
        hand = np.einsum('Tt,Hh,Ww,thwd->THWd', _linear_matrix(2, t2), _cubic_matrix(4, h2), _cubic_matrix(4, w2), src)
        got = M.resize_pos(table, (2, 4, 4), dst)
        assert got.shape == (1, t2 * h2 * w2, 8)
        torch.testing.assert_close(got, torch.from_numpy(hand).float().reshape(1, -1, 8), rtol=0, atol=1e-5)

# --- masking


def test_tube_mask_same_positions_every_slot_exact_count_different_samples():
    grid = (8, 14, 14)
    m = M.tube_mask(16, grid, 0.9, None)
    assert m.shape == (16, 8 * 196) and m.dtype == torch.bool
    per_slot = m.view(16, 8, 196)
    assert (per_slot == per_slot[:, :1]).all()                      # same spatial positions in every slot
    assert (m.sum(1) == 8 * int(0.9 * 196)).all()                   # exactly N_hid per sample
    assert (m.sum(1) == M.num_hidden(ModelConfig(mask_ratio=0.9))).all()
    assert len({tuple(r.tolist()) for r in per_slot[:, 0]}) == 16   # different across samples


def test_random_mask_count_and_not_tubes():
    m = M.random_mask(8, (8, 14, 14), 0.75, None)
    assert (m.sum(1) == int(0.75 * 1568)).all()
    assert not (m.view(8, 8, 196) == m.view(8, 8, 196)[:, :1]).all()
    assert M.num_hidden(ModelConfig(mask_type='random', mask_ratio=0.75)) == int(0.75 * 1568)

# --- targets (hand computation, token by token)


def hand_target(frames, u, p, norm):
    """Loop over tokens: crop (C, u, p, p), reorder to (u, p, p, C), normalise per channel."""
    B, C, T, H, W = frames.shape
    out = []
    for ti in range(T // u):
        for hi in range(H // p):
            for wi in range(W // p):
                c = frames[:, :, ti * u:(ti + 1) * u, hi * p:(hi + 1) * p, wi * p:(wi + 1) * p]
                c = c.permute(0, 2, 3, 4, 1).reshape(B, -1, C)     # (B, u·p·p, C)
                if norm:
                    c = (c - c.mean(1, keepdim=True)) / (c.std(1, keepdim=True) + 1e-6)
                out.append(c.reshape(B, -1))
    return torch.stack(out, 1)


@pytest.mark.parametrize('motion_norm', ['clip', 'patch', 'none'])
def test_space_and_time_targets_equal_hand_computation(motion_norm):
    cfg = tiny(motion_norm=motion_norm)
    mean, std = torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1, 1), torch.tensor(M.IMAGENET_STD).view(1, 3, 1, 1, 1)
    raw, raw_next = torch.rand(2, 3, 4, 32, 32), torch.rand(2, 3, 4, 32, 32)  # pixels in [0, 1]
    if motion_norm == 'clip':
        raw_next[1] = raw[1] + (torch.rand_like(raw[1]) - 0.5) / 255       # clip 1: noise of one grey level
    x, xn = (raw - mean) / std, (raw_next - mean) / std
    torch.testing.assert_close(M.space_target(cfg, x), hand_target(raw, 2, 8, True), rtol=1e-4, atol=1e-4)
    want = hand_target(raw_next - raw, 2, 8, motion_norm == 'patch')
    if motion_norm == 'clip':  # one scale per clip and channel: root mean square of its raw differences + 2 grey levels
        d = raw_next - raw
        want = want / (d.pow(2).mean(dim=(2, 3, 4)).sqrt() + 2 / 255).repeat(1, tgt_dim(cfg) // 3)[:, None]
    got = M.time_target(cfg, x, xn)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if motion_norm == 'none':
        assert got.abs().max() <= 1 + 1e-5  # raw differences stay in [-1, 1]
    if motion_norm == 'clip':  # the noise-only clip stays small; 'patch' would lift it to unit variance
        assert got[1].pow(2).mean() < 0.1 < 0.9 < got[0].pow(2).mean()

def test_clip_motion_norm_keeps_the_codec_noise_of_real_video_small(shared_data):
    """The motion-norm decision, measured: on a real Kinetics clip (H.264) 'patch' puts about half of the time
    target's energy on tubelet-channels whose raw frame difference has a std under 2 grey levels (codec and sensor
    noise on still parts), 'clip' well under 1% (README: the motion target and codec noise)."""
    import data
    frames = torch.from_numpy(data.read_frames(os.path.join(shared_data, 'videos', 'flipping_a_pancake.mkv')))
    clip = frames[:33, :, :416].permute(3, 0, 1, 2)[None]               # (1, 3, 33, 240, 416): a 15 x 26 grid
    x, xn = data.normalize(clip[:, :, 0:32:2]), data.normalize(clip[:, :, 1:33:2])  # 16 frames at stride 2, g = 1
    cfg = ModelConfig(num_frames=16)                                    # 2 x 16 x 16 tubelets
    d = M.patchify(M.unnormalize(xn) - M.unnormalize(x), 2, 16)        # raw differences (1, N, K)
    noise = (d.view(1, d.shape[1], -1, 3).std(dim=2) * 255 < 2)[:, :, None]  # (1, N, 1, 3) per tubelet-channel
    share = {}
    for norm in ('patch', 'clip'):
        e = M.time_target(replace(cfg, motion_norm=norm), x, xn).view(1, d.shape[1], -1, 3).pow(2)
        share[norm] = ((e * noise).sum() / e.sum()).item()
    assert 0.3 < noise.float().mean() and share['patch'] > 0.3 and share['clip'] < 0.01, share

# --- loss


def test_loss_equals_mse_over_hidden_tokens_in_raster_order():
    cfg = tiny()
    m = MotionMAE(cfg)
    x, xn = clips(cfg)
    out = m(x, xn)
    mask, B = out['mask'], x.shape[0]
    for name, fn in M.TARGETS.items():
        tgt = fn(cfg, x, xn)[mask].reshape(B, -1, tgt_dim(cfg))    # boolean indexing: raster order
        torch.testing.assert_close(out[f'loss_{name}'], ((out[f'pred_{name}'] - tgt) ** 2).mean())
    torch.testing.assert_close(out['loss'], out['loss_space'] + cfg.time_weight * out['loss_time'])


def tgt_dim(cfg):
    return 3 * cfg.tubelet_size * cfg.patch_size ** 2


@pytest.mark.parametrize('motion_norm', ['patch', 'none'])  # 'clip' shares one scale over the clip, visible tokens too
def test_loss_depends_on_hidden_tokens_only(motion_norm):
    cfg = tiny(time_weight=0.5, motion_norm=motion_norm)
    m = MotionMAE(cfg).eval()
    x, xn = clips(cfg, B=1)
    mask = M.tube_mask(1, cfg.grid, cfg.mask_ratio, None)
    base = m(x, xn, mask)
    vis = torch.nonzero(~mask[0])[0].item()                       # a visible and a hidden token
    hid = torch.nonzero(mask[0])[0].item()
    for tok, changes in ((vis, False), (hid, True)):
        v = M.patchify(xn, 2, 8)
        v[:, tok] += torch.randn_like(v[:, tok])                   # changes that token's time target only
        out = m(x, M.unpatchify(v, 2, 8, cfg.grid), mask)
        assert torch.equal(out['pred_time'], base['pred_time'])   # x_next never reaches the network
        assert (out['loss'] != base['loss']) == changes


def test_external_mask_with_unequal_counts_is_rejected():
    cfg = tiny()
    m = MotionMAE(cfg)
    x, xn = clips(cfg)
    mask = M.tube_mask(2, cfg.grid, cfg.mask_ratio, None)
    mask[0, ~mask[0]] = True
    with pytest.raises(ValueError):
        m(x, xn, mask)


def test_time_weight_zero_is_videomae():
    cfg = tiny(time_weight=0.0)
    m = MotionMAE(cfg)
    assert not any('time' in k for k in m.state_dict())
    out = m(*clips(cfg))
    assert 'loss_time' not in out and 'pred_time' not in out
    assert torch.equal(out['loss'], out['loss_space'])
    assert m(clips(cfg)[0])['loss'].isfinite()                    # no x_next needed


def test_shared_vs_separate_parameter_difference():
    def count(mod):
        return sum(p.numel() for p in mod.parameters())
    sep, sh = MotionMAE(tiny(decoder='separate')), MotionMAE(tiny(decoder='shared'))
    cfg = sep.cfg
    D, Dd, r = cfg.embed_dim, cfg.decoder_embed_dim, int(cfg.mlp_ratio)
    block = 2 * 2 * Dd + (3 * Dd * Dd + 2 * Dd) + (Dd * Dd + Dd) + (Dd * r * Dd + r * Dd) + (r * Dd * Dd + Dd)
    trunk = D * Dd + Dd + cfg.decoder_depth * block + 2 * Dd       # proj, mask token, blocks, norm
    assert count(sep) - count(sh) == trunk
    assert count(sh) - count(MotionMAE(tiny(time_weight=0))) == Dd * tgt_dim(cfg) + tgt_dim(cfg)  # one head


@pytest.mark.parametrize('kw', [dict(), dict(decoder='shared'), dict(mask_type='random')])
def test_every_parameter_gets_a_gradient(kw):
    m = MotionMAE(tiny(**kw))
    m(*clips(m.cfg))['loss'].backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n

# --- finetune model


def test_classifier_logits_and_features_at_other_sizes():
    cfg = tiny(drop_path=0.1)
    clf = VideoClassifier(cfg, num_classes=7)
    x, _ = clips(cfg, B=3)
    assert clf(x).shape == (3, 7)
    assert clf.head.weight.abs().max() < 0.01                      # head init scaled by 0.001
    clf.eval()
    f = clf.encoder(torch.randn(1, 3, 2, 48, 80))                  # one tubelet, non-square, larger: 6 x 10 tokens
    assert f.shape == (1, 60, cfg.embed_dim)
    torch.testing.assert_close(clf.encoder(x)[0:1], clf.encoder(x[0:1]))

# --- checkpoints


def test_checkpoint_round_trip_with_prefixes(tmp_path):
    cfg = tiny()
    m = MotionMAE(cfg)
    path = os.path.join(tmp_path, 'ckpt.pt')
    sd = {'_orig_mod.' + k: v for k, v in m.state_dict().items()}
    torch.save({'model': sd, 'config': dict(asdict(cfg), learned_pos=False), 'step': 3}, path)  # a retired field
    m2 = MotionMAE(M.checkpoint_config(M.read_checkpoint(path), path))
    missing, unexpected = M.load_checkpoint(m2, path)
    assert missing == [] and unexpected == []
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    clf = VideoClassifier(cfg, 5)                                  # pretrain -> finetune
    missing, unexpected = M.load_checkpoint(clf, {'module': {'module.' + k: v for k, v in sd.items()}})
    assert sorted(missing) == ['fc_norm.bias', 'fc_norm.weight', 'head.bias', 'head.weight']
    assert all(k.startswith(('decoders.', 'encoder.norm.')) for k in unexpected)
    torch.testing.assert_close(clf.encoder.pos_embed, m.encoder.pos_embed)
    shared = MotionMAE(tiny(decoder='shared'))                     # the space decoder becomes the shared trunk
    missing, unexpected = M.load_checkpoint(shared, sd)
    assert missing == ['decoders.shared.heads.time.weight', 'decoders.shared.heads.time.bias']
    assert torch.equal(shared.decoders.shared.blocks[0].mlp.fc1.weight, m.decoders.space.blocks[0].mlp.fc1.weight)


def test_videomae_training_checkpoint_with_namespace_loads_from_a_path(tmp_path):
    import argparse
    m = MotionMAE(tiny(time_weight=0.0))
    path = os.path.join(tmp_path, 'checkpoint-799.pth')
    torch.save({'model': to_videomae(m.state_dict()), 'args': argparse.Namespace(lr=1.5e-4), 'epoch': 799}, path)
    missing, unexpected = M.load_checkpoint(MotionMAE(tiny(time_weight=0.0)), path)
    assert missing == [] and unexpected == []


def test_load_refuses_an_encoder_that_does_not_fit_and_reports_the_rest(capsys):
    sd = MotionMAE(tiny()).state_dict()
    sd['encoder.patch_embed.proj.bias'] = torch.zeros(3)
    with pytest.raises(M.CheckpointError) as e:
        M.load_checkpoint(MotionMAE(tiny()), sd, path='x.pt')
    n = sum(k.startswith('encoder.') for k in sd)
    assert str(e.value) == (f'x.pt does not fit this model: {n - 1}/{n} encoder tensors match; first misfit '
                            'encoder.patch_embed.proj.bias (checkpoint (3,) vs model (192,))')
    small = {k: v for k, v in MotionMAE(tiny()).state_dict().items() if not k.startswith('decoders.time.')}
    with pytest.raises(M.CheckpointError, match=r'0/\d+ encoder tensors match; first misfit encoder.patch_embed'):
        M.load_checkpoint(VideoClassifier(ModelConfig(**PRESETS['small']), 0), small)
    capsys.readouterr()
    missing, unexpected = M.load_checkpoint(MotionMAE(tiny()), small, path='x.pt')     # a new time decoder: fine
    assert all(k.startswith('decoders.time.') for k in missing) and missing and not unexpected
    assert capsys.readouterr().out.strip().endswith('new (initialised): decoders.time; not used: none')


@pytest.mark.parametrize('kind', ['missing', 'truncated', 'text', 'empty', 'list', 'no tensors'])
def test_unusable_checkpoint_files_are_one_line_errors(tmp_path, kind):
    path = str(tmp_path / 'ck.pt')
    torch.save({'model': MotionMAE(tiny()).state_dict()}, path)
    raw = open(path, 'rb').read()
    if kind == 'missing':
        os.remove(path)
    elif kind in ('truncated', 'text', 'empty'):
        open(path, 'wb').write({'truncated': raw[:len(raw) // 2], 'text': b'hello\n', 'empty': b''}[kind])
    else:
        torch.save([1, 2] if kind == 'list' else {'model': {'step': 3}}, path)
    with pytest.raises(M.CheckpointError) as e:
        M.load_checkpoint(MotionMAE(tiny()), path, verbose=False)
    msg = str(e.value)
    assert path in msg and '\n' not in msg and isinstance(e.value, SystemExit), msg
    expected = {'missing': 'not found', 'truncated': 'truncated or corrupt', 'text': 'not a PyTorch checkpoint',
                'empty': 'truncated or corrupt', 'list': 'holds a list', 'no tensors': 'holds no model weights'}
    assert expected[kind] in msg

# --- VideoMAE interop: an independent re-statement of VideoMAE's forward on its own key layout


def to_videomae(sd):
    out = {}
    for k, v in sd.items():
        k = (k.replace('decoders.space.proj.', 'encoder_to_decoder.').replace('decoders.space.mask_token', 'mask_token')
             .replace('decoders.space.heads.space.', 'decoder.head.').replace('decoders.space.', 'decoder.'))
        out[k] = v + 0.1 * torch.randn_like(v) if v.ndim == 1 else v   # non-trivial norms and biases
    return out


def vm_table(n, d):
    ang = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    ang[:, 0::2], ang[:, 1::2] = np.sin(ang[:, 0::2]), np.cos(ang[:, 1::2])
    return torch.FloatTensor(ang).unsqueeze(0)


def vm_blocks(sd, pre, x, depth, heads):
    for i in range(depth):
        b = f'{pre}blocks.{i}.'
        h = F.layer_norm(x, x.shape[-1:], sd[b + 'norm1.weight'], sd[b + 'norm1.bias'], 1e-6)
        B, N, C = h.shape
        bias = torch.cat((sd[b + 'attn.q_bias'], torch.zeros_like(sd[b + 'attn.v_bias']), sd[b + 'attn.v_bias']))
        qkv = F.linear(h, sd[b + 'attn.qkv.weight'], bias).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = x + F.linear((a @ v).transpose(1, 2).reshape(B, N, C), sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'])
        h = F.layer_norm(x, x.shape[-1:], sd[b + 'norm2.weight'], sd[b + 'norm2.bias'], 1e-6)
        h = F.gelu(F.linear(h, sd[b + 'mlp.fc1.weight'], sd[b + 'mlp.fc1.bias']))
        h = F.linear(h, sd[b + 'mlp.fc2.weight'], sd[b + 'mlp.fc2.bias'])
        x = x + h
    return x


def vm_embed(sd, pre, x, cfg):
    x = F.conv3d(x, sd[pre + 'patch_embed.proj.weight'], sd[pre + 'patch_embed.proj.bias'],
                 stride=(cfg.tubelet_size, cfg.patch_size, cfg.patch_size)).flatten(2).transpose(1, 2)
    return x + vm_table(x.shape[1], x.shape[2]).type_as(x)


def test_videomae_pretrain_checkpoint_gives_videomae_outputs():
    cfg = tiny(time_weight=0.0, img_size=48, num_frames=8)         # N = 4·6·6 = 144 tokens
    sd = to_videomae(MotionMAE(cfg).state_dict())
    m = MotionMAE(cfg)
    missing, unexpected = M.load_checkpoint(m, {'model': sd})
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 8, 48, 48)
    mask = M.tube_mask(2, cfg.grid, 0.9, None)
    out = m(x, mask=mask)
    # VideoMAE: encoder on x[~mask], decoder on cat(visible + pos, mask_token + pos), head on the last N_hid
    B, D = 2, cfg.embed_dim
    z = vm_embed(sd, 'encoder.', x, cfg)[~mask].reshape(B, -1, D)
    z = vm_blocks(sd, 'encoder.', z, cfg.depth, cfg.num_heads)
    z = F.layer_norm(z, (D,), sd['encoder.norm.weight'], sd['encoder.norm.bias'], 1e-6)
    z = F.linear(z, sd['encoder_to_decoder.weight'])
    pos = vm_table(144, cfg.decoder_embed_dim).expand(B, -1, -1)
    Dd = cfg.decoder_embed_dim
    y = torch.cat([z + pos[~mask].reshape(B, -1, Dd), sd['mask_token'] + pos[mask].reshape(B, -1, Dd)], dim=1)
    y = vm_blocks(sd, 'decoder.', y, cfg.decoder_depth, cfg.decoder_num_heads)
    n_hid = int(mask[0].sum())
    y = F.layer_norm(y[:, -n_hid:], (Dd,), sd['decoder.norm.weight'], sd['decoder.norm.bias'], 1e-6)
    pred = F.linear(y, sd['decoder.head.weight'], sd['decoder.head.bias'])
    assert (out['pred_space'] - pred).abs().max() <= 1e-5


def test_videomae_finetune_checkpoint_gives_videomae_logits():
    cfg = tiny(img_size=48, num_frames=8)
    native = VideoClassifier(cfg, 6)
    sd = {k.replace('encoder.', ''): v + 0.1 * torch.randn_like(v) for k, v in native.state_dict().items()}
    clf = VideoClassifier(cfg, 6).eval()
    missing, unexpected = M.load_checkpoint(clf, {'module': sd})
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 8, 48, 48)
    z = vm_blocks(sd, '', vm_embed(sd, '', x, cfg), cfg.depth, cfg.num_heads).mean(1)
    z = F.layer_norm(z, z.shape[-1:], sd['fc_norm.weight'], sd['fc_norm.bias'], 1e-6)
    logits = F.linear(z, sd['head.weight'], sd['head.bias'])
    assert (clf(x) - logits).abs().max() <= 1e-5

# --- imports


def test_model_imports_only_torch_and_stdlib():
    tree = ast.parse(open(M.__file__).read())
    mods = {a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert mods <= {'torch', 'argparse', 'math', 'os', 'dataclasses'}, mods


def test_training_step_compiles_as_one_graph_and_equals_eager():
    cfg = tiny(decoder_mask_ratio=0.5)                             # both masks: the encoder's and the decoders'
    m = MotionMAE(cfg)
    x, xn = clips(cfg)
    mask = m.draw_mask(2, x.device)
    dec = M.decoder_mask(mask, M.num_decoded(cfg))
    eager = m(x, xn, mask, dec)
    compiled = torch.compile(m, fullgraph=True)(x, xn, mask, dec)  # static shapes: no graph break, no sync
    torch.testing.assert_close(compiled['loss'], eager['loss'], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled['pred_time'], eager['pred_time'], rtol=1e-4, atol=1e-5)


# --- cheaper steps: visible-only embedding, decoder masking, activation checkpointing


def test_visible_only_embedding_equals_embedding_every_tubelet_then_gathering():
    cfg = tiny()
    enc = MotionMAE(cfg).encoder
    x = clips(cfg)[0]
    mask = M.tube_mask(2, cfg.grid, cfg.mask_ratio)
    ids_keep = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :int((~mask[0]).sum())]
    full = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed  # the Conv3d on every tubelet
    ref = torch.gather(full, 1, ids_keep[..., None].expand(-1, -1, cfg.embed_dim))
    for blk in enc.blocks:
        ref = blk(ref)
    torch.testing.assert_close(enc(x, ids_keep), enc.norm(ref), rtol=1e-5, atol=1e-5)


def test_decoder_mask_reconstructs_a_random_share_and_the_loss_covers_it_only():
    cfg = tiny(decoder_mask_ratio=0.5)
    m = MotionMAE(cfg)
    x, xn = clips(cfg)
    mask = m.draw_mask(2, x.device)
    dec = M.decoder_mask(mask, M.num_decoded(cfg))
    n_hid = M.num_hidden(cfg)
    assert (dec.sum(1) == n_hid - n_hid // 2).all() and not (dec & ~mask).any() and not torch.equal(dec[0], dec[1])
    out = m(x, xn, mask, dec)
    for name, fn in M.TARGETS.items():
        tgt = fn(cfg, x, xn)[dec].reshape(2, -1, tgt_dim(cfg))   # boolean indexing: raster order of decoded tokens
        torch.testing.assert_close(out[f'loss_{name}'], ((out[f'pred_{name}'] - tgt) ** 2).mean())
    full = MotionMAE(tiny())
    full.load_state_dict(m.state_dict())
    torch.testing.assert_close(full(x, xn, mask)['loss'], m(x, xn, mask, mask)['loss'])   # dec = mask: r = 0
    assert m(x, xn, mask)['pred_space'].shape[1] == M.num_decoded(cfg)                  # drawn when not given


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    cfg = tiny(drop_path=0.1)                                      # random drop paths are replayed in backward
    m = MotionMAE(cfg)
    mc = MotionMAE(replace(cfg, checkpoint_activations=True))
    mc.load_state_dict(m.state_dict())
    x, xn = clips(cfg)
    mask = m.draw_mask(2, x.device)
    outs = []
    for model in (m, mc):
        torch.manual_seed(3)
        outs.append(model(x, xn, mask)['loss'])
        outs[-1].backward()
    assert outs[0].item() == outs[1].item()
    for (n, p), pc in zip(m.named_parameters(), mc.parameters()):
        torch.testing.assert_close(p.grad, pc.grad, rtol=0, atol=0, msg=n)
