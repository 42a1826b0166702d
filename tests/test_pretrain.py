"""pretrain.py end to end on a tiny demo (CPU): demo path, learning, resume, 2-process DDP, NaN skip, baseline."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import data
import model as M
import pretrain

# a tiny run: 8×32² clips of the demo's videos, the tiny model, one worker-less loader
TINY = ['--model', 'tiny', '--batch-size', '4', '--workers', '0', '--log-every', '1', '--vis-every', '1',
        '--warmup-epochs', '1', '--device', 'cpu', '--no-compile']


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return data.ensure_demo(str(tmp_path_factory.mktemp('demo') / 'demo'), per_class=(2, 1))


def run(demo_root, out, *extra):
    pretrain.main(['--data', 'demo', '--data-root', demo_root, '--out', str(out), *TINY, *extra])
    lines = [json.loads(l) for l in open(os.path.join(out, 'log.jsonl'))]
    return [l for l in lines if 'loss' in l], torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)


def test_demo_path_writes_loadable_checkpoint_log_and_picture_and_resumes_an_older_checkpoint(demo_root, tmp_path):
    steps, ck = run(demo_root, tmp_path, '--epochs', '1')
    assert len(steps) >= 1 and {'loss', 'loss_space', 'loss_time', 'lr', 'clips_per_s'} <= set(steps[0])
    m = M.MotionMAE(M.ModelConfig(**ck['config']))
    missing, unexpected = M.load_checkpoint(m, os.path.join(tmp_path, 'ckpt.pt'))
    assert missing == [] and unexpected == []
    assert os.path.getsize(os.path.join(tmp_path, 'recon_ep001.png')) > 1000
    for k in ('target_weights', 'decoder_mask_ratio', 'checkpoint_activations'):   # fields a checkpoint predates:
        del ck['config'][k]                                                         # their defaults, not refused
    torch.save(ck, tmp_path / 'ckpt.pt')
    steps, ck2 = run(demo_root, tmp_path, '--epochs', '2')
    assert ck2['epoch'] == 2 and ck2['step'] == 2 * ck['step']


def test_loss_falls_on_the_demo(demo_root, tmp_path):
    steps, _ = run(demo_root, tmp_path, '--epochs', '6', '--lr', '0.06')
    first, last = steps[0]['loss'], sum(s['loss'] for s in steps[-3:]) / 3
    assert last < 0.8 * first, (first, last)


def interrupt_after(monkeypatch, n_saves):
    """Simulate a kill right after the n-th checkpoint is written."""
    real, calls = pretrain.save_checkpoint, []

    class Killed(Exception):
        pass

    def save(*a):
        real(*a)
        calls.append(1)
        if len(calls) == n_saves:
            raise Killed
    monkeypatch.setattr(pretrain, 'save_checkpoint', save)
    return Killed


def test_resume_mid_epoch_continues_the_same_trajectory_and_logs_each_step_once(demo_root, tmp_path, monkeypatch):
    """A timed save at step 6 (mid epoch 2), a crash during step 8 after step 7 was logged: the resumed run's log
    drops step 7's line (logged again), and its steps, losses and weights are the uninterrupted run's."""
    args = ['--epochs', '3', '--save-minutes', '-1']                   # saves at the epochs' ends only
    straight, ck_straight = run(demo_root, tmp_path / 'a', *args)
    real = pretrain.lr_at

    class Killed(Exception):
        pass

    def lr_at(step, **kw):
        if step == 7:
            raise Killed
        return real(step, **kw)
    monkeypatch.setattr(pretrain.RunLog, 'save_due', lambda self, minutes: self.bar.n == 5)  # after step 6
    monkeypatch.setattr(pretrain, 'lr_at', lr_at)
    with pytest.raises(Killed):
        run(demo_root, tmp_path / 'b', *args)
    monkeypatch.undo()
    assert torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['step'] == 6
    assert '"step": 7,' in (tmp_path / 'b' / 'log.jsonl').read_text()
    resumed, ck_resumed = run(demo_root, tmp_path / 'b', *args)
    assert [s['step'] for s in resumed] == [s['step'] for s in straight] == list(range(1, 13))
    assert [s['loss'] for s in resumed] == [s['loss'] for s in straight]
    torch.testing.assert_close(ck_resumed['model'], ck_straight['model'], rtol=0, atol=0)


def test_nan_loss_or_gradient_is_skipped_and_counted_then_stops(demo_root, tmp_path, monkeypatch):
    """Step 2: a NaN loss; step 3: a finite loss whose gradient is NaN (sqrt'(0) x 0). Both skipped and counted;
    the weights, every saved tensor and every logged loss stay finite. Then 5 NaN steps in a row stop the run."""
    forward, calls = M.MotionMAE.forward, []

    def nan_at(bad, bad_grad=()):
        def fwd(self, *a, **kw):
            out = forward(self, *a, **kw)
            calls.append(1)
            if len(calls) in bad:
                out['loss'] = out['loss'] * float('nan')
            if len(calls) in bad_grad:
                out['loss'] = out['loss'] + torch.sqrt(0 * self.encoder.patch_embed.proj.weight.sum())
            return out
        return fwd
    monkeypatch.setattr(M.MotionMAE, 'forward', nan_at({2}, {3}))
    steps, ck = run(demo_root, tmp_path / 'a', '--epochs', '1', '--log-every', '2')    # steps 1-2, 3-4 in a line
    assert ck['n_nan'] == 2 and steps[-1]['skipped'] == 2 and [s['step'] for s in steps] == [2, 4]
    assert all(np.isfinite(s['loss']) and np.isfinite(s['loss_time']) for s in steps)
    saved = list(ck['model'].values()) + [v for s in ck['optimizer']['state'].values() for v in s.values()]
    assert all(torch.isfinite(v).all() for v in saved)
    calls.clear()
    monkeypatch.setattr(M.MotionMAE, 'forward', nan_at(set(range(1, 100))))
    with pytest.raises(SystemExit, match='NaN'):
        run(demo_root, tmp_path / 'b', '--epochs', '2')                 # 4 steps an epoch: the 5th NaN in a row stops


def blur_target(cfg, x, x_next):
    """A throwaway pixel-shaped target: the clip blurred over 3 x 3 pixels, normalised per tubelet like pixels."""
    y = torch.nn.functional.avg_pool3d(M.unnormalize(x), (1, 3, 3), stride=1, padding=(0, 1, 1))
    return M.normalize_patches(M.patchify(y, cfg.tubelet_size, cfg.patch_size))


def colour_target(cfg, x, x_next):
    """A throwaway target of width 3, not pixel-shaped: each tubelet's mean colour."""
    v = M.patchify(M.unnormalize(x), cfg.tubelet_size, cfg.patch_size)           # (B, N, K)
    return v.view(*v.shape[:2], -1, 3).mean(2)                                     # (B, N, 3)


@pytest.mark.parametrize('decoder', ['separate', 'shared'])
def test_a_registered_target_trains_logs_draws_and_round_trips(demo_root, tmp_path, monkeypatch, decoder):
    """One function + one TARGETS entry + --target-weights: nothing else changes anywhere."""
    monkeypatch.setitem(M.TARGETS, 'blur', blur_target)
    monkeypatch.setitem(M.TARGETS, 'colour', colour_target)
    flags = ['--target-weights', 'time=0,blur=0.5,colour=2', '--decoder', decoder]
    steps, ck = run(demo_root, tmp_path, '--epochs', '1', *flags)
    assert ck['config']['target_weights'] == {'time': 0.0, 'blur': 0.5, 'colour': 2.0}
    assert 'loss_time' not in steps[0]
    for s in steps:                                              # the weighted sum, averaged over the same steps
        assert s['loss'] == pytest.approx(s['loss_space'] + 0.5 * s['loss_blur'] + 2 * s['loss_colour'], rel=1e-5)
    val = [json.loads(l) for l in open(tmp_path / 'log.jsonl') if 'val_space_rel' in l][0]
    assert {'val_blur_rel', 'val_blur_mean_rel', 'val_colour_rel'} <= set(val) and 'val_time_rel' not in val
    trunk = 'shared' if decoder == 'shared' else 'colour'
    assert ck['model'][f'decoders.{trunk}.heads.colour.weight'].shape == (3, 96)   # the target's width x D_d
    torch.manual_seed(0)                                         # the run's initial weights: the new heads trained
    init = M.MotionMAE(M.ModelConfig(**ck['config'])).state_dict()
    for n in ('blur', 'colour'):
        key = f"decoders.{'shared' if decoder == 'shared' else n}.heads.{n}.weight"
        assert not torch.equal(ck['model'][key], init[key]), key
    # the picture: input, masked, space reconstruction, true and predicted blur (colour is not pixel-shaped), 2 clips
    # each 32-px frame upscaled x4 (nearest) with a 4-px gap, a 150-px label column
    assert cv2.imread(str(tmp_path / 'recon_ep001.png')).shape[:2] == (2 * 5 * 132, 150 + 8 * 132)
    steps2, ck2 = run(demo_root, tmp_path, '--epochs', '2', *flags)           # resumes: the weights come back
    assert ck2['epoch'] == 2 and len(steps2) == 2 * len(steps) and ck2['config'] == ck['config']
    with pytest.raises(SystemExit, match=r'another model config \(target_weights\)'):
        run(demo_root, tmp_path, '--epochs', '3', '--target-weights', 'time=0,blur=1,colour=2', '--decoder', decoder)
    with pytest.raises(SystemExit, match='unknown target nosuch: model.TARGETS has space, time, blur, colour'):
        M.MotionMAE(M.ModelConfig(target_weights={'nosuch': 1.0}))


def test_bf16_autocast_runs_on_cpu_with_fp32_weights(demo_root, tmp_path):
    """--amp bf16 on CPU takes the CUDA path (autocast): the first step's loss (lr 0 in warmup: the same weights and
    batch) differs from fp32 by bf16 rounding only; weights stay fp32 in the checkpoint."""
    s32, _ = run(demo_root, tmp_path / 'fp32', '--epochs', '1', '--amp', 'none')
    s16, ck = run(demo_root, tmp_path / 'bf16', '--epochs', '1', '--amp', 'bf16')
    a, b = s32[0]['loss'], s16[0]['loss']
    assert a != b and abs(a - b) < 0.02 * a, (a, b)
    assert all(np.isfinite(s['loss']) for s in s16)
    assert all(v.dtype == torch.float32 for v in ck['model'].values() if v.is_floating_point())


def test_a_missing_root_gives_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        pretrain.main(['--data', 'ssv2', '--data-root', str(tmp_path / 'nope'), '--device', 'cpu'])
    assert 'ssv2' in str(e.value) and '\n' not in str(e.value).strip()


def test_bench_prints_all_variants(capsys):
    pretrain.main(['--bench', '--model', 'tiny', '--data', 'demo', '--batch-size', '1', '--device', 'cpu',
                   '--no-compile', '--bench-steps', '1'])
    out = capsys.readouterr().out
    assert 'videomae' in out and 'shared decoder' in out
    mfu = re.findall(r'MFU +(n/a|[\d.]+%)', out)
    assert len(mfu) == 5 and all(m == 'n/a' or float(m[:-1]) <= 100 for m in mfu), mfu  # never above the peak


def test_validation_is_relative_to_predicting_zero_and_to_the_trivial_rule():
    """validate() against a hand computation, in chunks that do not divide the clips."""
    torch.manual_seed(0)
    cfg = M.ModelConfig(**M.PRESETS['tiny'], img_size=32, num_frames=8, mask_ratio=0.75)
    raw = M.MotionMAE(cfg)
    rng, (W, H) = np.random.default_rng(0), data.DEMO_SIZE
    clips = np.stack([np.stack(data._demo_video(rng, m)[:16]) for m in list(data.DEMO_CLASSES.values())[:4]])
    clips = torch.from_numpy(clips[..., :32, :32, :]).permute(0, 4, 1, 2, 3)     # (4, 3, 16, 32, 32) uint8
    val = {'x': clips[:, :, 0:16:2], 'x_next': clips[:, :, 1:16:2], 'mask': raw.draw_mask(4, 'cpu')}
    x, xn, mask = data.normalize(val['x']), data.normalize(val['x_next']), val['mask']
    rec = pretrain.validate(raw, val, torch.device('cpu'), 'none', chunk=3)          # chunks of 3 + 1 clips
    with torch.no_grad():
        out = raw.eval()(x, xn, mask)
    for n in ('space', 'time'):
        tgt = M.TARGETS[n](cfg, x, xn)
        hid = tgt[mask].view(4, -1, tgt.shape[-1])
        vis_mean = tgt[~mask].view(4, -1, tgt.shape[-1]).mean(1, keepdim=True)
        zero = hid.pow(2).mean()
        assert rec[f'val_{n}_rel'] == pytest.approx((out[f'loss_{n}'] / zero).item(), rel=1e-4)
        assert rec[f'val_{n}_mean_rel'] == pytest.approx(((hid - vis_mean).pow(2).mean() / zero).item(), rel=1e-4)
    assert set(rec) == {'val_space_rel', 'val_space_mean_rel', 'val_time_rel', 'val_time_mean_rel'}


# --- on a cluster: preemption, failed saves, resume every rank agrees on

PRETRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrain.py')


def two_ranks(demo_root, tmp_path, *extra):
    """One job of two processes started as a launcher on two nodes would (RANK, WORLD_SIZE, MASTER_*), each in a
    folder of its own, so that the relative --out 'out' is a different folder on each: node-local disks."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=str(port))
        os.makedirs(tmp_path / f'node{r}', exist_ok=True)
        procs.append(subprocess.Popen([sys.executable, PRETRAIN, '--data', 'demo', '--data-root', demo_root, '--out',
                                       'out', *TINY, '--batch-size', '2', *extra], cwd=tmp_path / f'node{r}', env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(p.communicate(timeout=120)[1], p.returncode) for p in procs]


def test_ranks_that_cannot_read_rank_0s_checkpoint_stop_the_resume_with_one_line(demo_root, tmp_path):
    run(demo_root, tmp_path / 'node0' / 'out', '--epochs', '1')        # node 0's folder has a checkpoint
    for err, rc in two_ranks(demo_root, tmp_path, '--epochs', '2'):     # rank 0 resumes; rank 1 cannot follow
        assert rc == 1 and err.strip().splitlines()[-1].startswith(
            'rank 1 cannot resume from out/ckpt.pt with rank 0 (checkpoint out/ckpt.pt: not found)'), err


def signal_group(cmd, out, at_step=2):
    """Start cmd as a job of its own (setsid, as a scheduler starts one), and once <out>/log.jsonl shows `at_step`,
    SIGTERM its whole process group (SLURM, torchrun): trainers, loader workers, launcher. -> (stderr lines, seconds
    from the signal to the exit); the run must exit within 60 s with rank 0's one line."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / 'log.jsonl'
    while not (log.exists() and f'"step": {at_step},' in log.read_text()):
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.02)
    t = time.time()
    os.killpg(p.pid, signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 1 and 'Traceback' not in err and 'Error' not in err, err[-3000:]
    return err.strip().splitlines(), time.time() - t


def stopped_at(err, path):
    m = re.search(r'stopped by SIGTERM at step (\d+): checkpoint (\S+); run the same command to continue$', err[-1])
    assert m and m[2] == str(path), err[-3:]
    assert torch.load(path, weights_only=True)['step'] == int(m[1]) and not os.path.exists(f'{path}.tmp')
    return int(m[1])


def test_sigterm_to_the_process_group_with_loader_workers_saves_the_step_reached(demo_root, tmp_path):
    """One process with 2 loader workers: the workers ignore the signal, the trainer saves the step it reached."""
    cmd = [sys.executable, PRETRAIN, '--data', 'demo', '--data-root', demo_root, '--out', str(tmp_path), *TINY,
           '--epochs', '30', '--workers', '2']
    err, seconds = signal_group(cmd, tmp_path, at_step=6)
    assert 6 <= stopped_at(err, tmp_path / 'ckpt.pt') < 120 and seconds < 60


def test_sigterm_to_a_two_process_group_saves_and_the_run_goes_on_with_accumulation(demo_root, tmp_path):
    """SIGTERM to the process group of a 2-process run with loader workers: both ranks stop at one step, rank 0 saves
    it, one line names it. One process with --accum 2 (the same global batch) continues it on the trajectory of an
    uninterrupted one-process --accum 2 run, with as many steps an epoch; another global batch is refused."""
    extra = ['--epochs', '3', '--decoder-mask-ratio', '0.5', '--batch-size', '2']   # decoder masks: drawn globally
    cmd = [sys.executable, PRETRAIN, '--data', 'demo', '--data-root', demo_root, '--out', str(tmp_path / 'b'), *TINY,
           *extra, '--gpus', '2', '--workers', '1']
    err, seconds = signal_group(cmd, tmp_path / 'b')
    assert stopped_at(err, tmp_path / 'b' / 'ckpt.pt') < 12 and seconds < 60
    with pytest.raises(SystemExit, match='was trained with a global batch of 4, this run has 2'):
        run(demo_root, tmp_path / 'b', *extra)
    resumed, ck_resumed = run(demo_root, tmp_path / 'b', *extra, '--accum', '2')   # 1 process x 2 clips x 2
    straight, ck_straight = run(demo_root, tmp_path / 'a', *extra, '--accum', '2')
    assert [s['step'] for s in resumed] == [s['step'] for s in straight] == list(range(1, 13))
    torch.testing.assert_close([s['loss'] for s in resumed], [s['loss'] for s in straight], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ck_resumed['model'], ck_straight['model'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('when', ['before validation', 'during validation'])
def test_a_signal_at_an_epochs_end_stops_before_more_work_with_one_save(demo_root, tmp_path, monkeypatch, when):
    """A signal after the epoch's last step: no validation; one during it: no further step. Either way one save
    (the epoch's), then the one line."""
    validated, saves = [], []
    real_validate, real_save, real_step = pretrain.validate, pretrain.save_checkpoint, pretrain.RunLog.step

    def step(self, step, *a):
        real_step(self, step, *a)
        if step == 4 and when == 'before validation':             # after the epoch's last step was agreed
            os.kill(os.getpid(), signal.SIGTERM)

    def validate(*a):
        validated.append(1)
        if when == 'during validation':
            os.kill(os.getpid(), signal.SIGTERM)
        return real_validate(*a)
    monkeypatch.setattr(pretrain.RunLog, 'step', step)
    monkeypatch.setattr(pretrain, 'validate', validate)
    monkeypatch.setattr(pretrain, 'save_checkpoint', lambda *a: saves.append(1) or real_save(*a))
    with pytest.raises(SystemExit, match=r'^stopped by SIGTERM at step 4: checkpoint'):
        run(demo_root, tmp_path, '--epochs', '3', '--save-minutes', '-1')
    ck = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ck['step'] == 4 and ck['epoch'] == 1 and len(saves) == 1
    assert len(validated) == (0 if when == 'before validation' else 1)


def test_a_later_signal_does_not_interrupt_a_save(tmp_path):
    """A second SIGTERM more than 5 s after the first (SLURM's at the end of its grace time) while a checkpoint is
    written: the save finishes (outside a save, it exits at once)."""
    code = ('import os, signal, sys, time, torch, pretrain\n'
            'pretrain.STOP.update(signal="SIGTERM", t=time.time() - 10)\n'
            'signal.signal(signal.SIGTERM, pretrain._preempt)\n'
            'def state():\n'
            '    os.kill(os.getpid(), signal.SIGTERM)\n'
            '    return {"step": 3, "w": torch.zeros(10)}\n'
            'print("stop agreed:", pretrain.save_checkpoint(sys.argv[1], state))\n'
            'os.kill(os.getpid(), signal.SIGTERM)\n'
            'time.sleep(5)\n')
    p = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'ckpt.pt')], cwd=os.path.dirname(PRETRAIN),
                       capture_output=True, text=True, timeout=60)
    assert p.stdout == 'stop agreed: True\n' and p.returncode == 128 + signal.SIGTERM, p.stderr
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['step'] == 3


def test_one_ranks_setup_failure_stops_every_rank_at_once_with_its_line(demo_root, tmp_path):
    """Two processes as on two nodes; the data root (relative; the demo in its SSv2 layout) exists on node 0 only:
    both ranks exit with rank 1's one line at once, not after the process group's timeout."""
    os.makedirs(tmp_path / 'node0')
    os.symlink(demo_root, tmp_path / 'node0' / 'demo')
    t = time.time()
    for err, rc in two_ranks(demo_root, tmp_path, '--data', 'ssv2', '--data-root', 'demo'):
        assert rc == 1 and 'Traceback' not in err and err.strip().splitlines()[-1].startswith(
            'rank 1: ') and 'demo' in err.strip().splitlines()[-1], err
    assert time.time() - t < 60


def test_a_save_refused_by_the_file_system_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    path = tmp_path / 'ckpt.pt'
    pretrain.save_checkpoint(str(path), lambda: {'step': 1})
    code = ('import resource, sys, torch, pretrain; resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000)); '
            'pretrain.save_checkpoint(sys.argv[1], lambda: {"step": 2, "w": torch.zeros(10 ** 6)})')
    p = subprocess.run([sys.executable, '-c', code, str(path)], cwd=os.path.dirname(PRETRAIN), capture_output=True,
                       text=True)
    assert p.returncode == 1 and p.stderr.strip() == f'cannot save checkpoint {path}: File too large', p.stderr
    assert torch.load(path, weights_only=True) == {'step': 1} and os.listdir(tmp_path) == ['ckpt.pt']
    with pytest.raises(SystemExit, match='model tensors hold NaN/inf'):              # NaN weights never replace it
        pretrain.save_checkpoint(str(path), lambda: {'step': 2, 'model': {'w': torch.tensor([1.0, float('nan')])}})
    assert torch.load(path, weights_only=True) == {'step': 1} and os.listdir(tmp_path) == ['ckpt.pt']
    with pytest.raises(SystemExit, match=f'--out {tmp_path}/ckpt.pt/sub is not writable: Not a directory'):
        pretrain.main(['--out', str(path / 'sub'), '--device', 'cpu'])


def test_a_loader_bound_run_reports_its_data_wait_and_says_so_once(demo_root, tmp_path, monkeypatch, capsys):
    """Videos that take 50 ms each to load: log lines carry data_wait, the share of the time the loop waited for its
    batch (most of it here), and one line names the remedies, once in two epochs."""
    real = data.PretrainDataset.load
    monkeypatch.setattr(data.PretrainDataset, 'load', lambda self, *a: time.sleep(0.05) or real(self, *a))
    steps, _ = run(demo_root, tmp_path, '--epochs', '2', '--val-clips', '0')
    waits = [s['data_wait'] for s in steps]
    assert 0.5 < np.mean(waits) and max(waits) <= 1, waits                         # epoch ends: work, not waits
    assert capsys.readouterr().out.count('data loading: the loop waited for batches') == 1
    monkeypatch.undo()
    steps, _ = run(demo_root, tmp_path / 'fast', '--epochs', '1', '--val-clips', '0')
    assert np.mean([s['data_wait'] for s in steps]) < 0.5, [s['data_wait'] for s in steps]
