"""
Compare pretext targets on the demo in one command: for every row and seed, pretrain, finetune, linear-probe and
propagate DAVIS labels with the project's own scripts, then print mean ± sd per measure and which rows are apart.

    python experiments/compare.py                                   # the EXPERIMENTS.md table: (a) (c) (e) (d)
    python experiments/compare.py --rows 'mine:space=1,blur=1' 'MotionMAE:' --seeds 0 1 2 --jobs 2

A row is LABEL:TARGET_WEIGHTS (pretrain.py's --target-weights; empty: the defaults) or LABEL:scratch (finetuning
from scratch; probe and DAVIS of a random encoder of the default shape). Every row also gets the colour-only DAVIS
baseline once. Measures: finetune top-1 (2x3 views), top-1 on the sign-of-motion classes (clockwise /
counterclockwise / closer / away, the ones a single frame's motion direction does not tell), linear-probe top-1,
demo DAVIS J&F, and the held-out losses relative to predicting 0 (space_rel, time_rel: lower is better). Rows are
apart on a measure when their means differ by more than twice the pooled sd of the seeds (sqrt of the mean of the
two variances).
Runs are folders under --out; a finished step is not run again, so an interrupted comparison continues.
Extra flags for pretrain.py / finetune.py: --pretrain-args '...' / --finetune-args '...' (e.g. another budget).
This file is a harness over the project's scripts, not part of the method: it only runs them and reads their
outputs.
"""
import argparse
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGN = ('Turning something clockwise', 'Turning something counterclockwise', 'Moving something closer',
        'Moving something away')
MEASURES = ('finetune', 'sign', 'probe', 'davis', 'space_rel', 'time_rel')
DEFAULT_ROWS = ['(a) MotionMAE:', '(c) VideoMAE:time=0', '(e) motion alone:space=0', '(d) scratch:scratch']


def sh(cmd, log, threads):
    """Run one of the scripts (a list of arguments after python) with `threads` torch threads; stop on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, 'a') as fh:
        fh.write(f"$ python {' '.join(cmd)}\n")
        fh.flush()
        if subprocess.call([sys.executable, *cmd], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT):
            raise SystemExit(f"failed: python {' '.join(cmd)} (log {log})")


def run_one(args, label, weights, seed):
    """All steps of one row and seed in <out>/<row's letters and digits>_s<seed>; -> its measures."""
    out = os.path.join(args.out, f"{''.join(c for c in label if c.isalnum())}_s{seed}")
    os.makedirs(out, exist_ok=True)
    log, S = os.path.join(out, 'commands.log'), str(seed)
    ckpt = os.path.join(out, 'ckpt.pt')
    if weights == 'scratch' and not os.path.exists(ckpt):              # a random encoder of the default shape
        code = ('import dataclasses, sys, torch, model, pretrain; c = pretrain.model_config(pretrain.get_args([]));'
                f'torch.manual_seed({seed}); torch.save({{"model": model.MotionMAE(c).state_dict(), '
                f'"config": dataclasses.asdict(c)}}, sys.argv[1])')
        sh(['-c', code, ckpt], log, args.threads)
    elif not os.path.exists(os.path.join(out, 'pretrained')):    # pretrain.py resumes an interrupted run
        sh(['pretrain.py', '--seed', S, '--target-weights', weights, '--out', out, *args.pretrain_args], log,
           args.threads)
        open(os.path.join(out, 'pretrained'), 'w').close()
    init = '' if weights == 'scratch' else ckpt
    for sub, extra in (('ft', []), ('lp', ['--linear-probe', '--init', ckpt])):
        if not os.path.exists(os.path.join(out, sub, 'test_results.json')):
            sh(['finetune.py', '--seed', S, '--init', init, '--out', os.path.join(out, sub), *extra,
                *args.finetune_args], log, args.threads)
    if not os.path.exists(os.path.join(out, 'davis', 'results.json')):
        sh(['segment.py', '--ckpt', ckpt, '--output', os.path.join(out, 'davis')], log, args.threads)
    ft = json.load(open(os.path.join(out, 'ft', 'test_results.json')))
    val = {}
    if os.path.exists(os.path.join(out, 'log.jsonl')):                 # the last held-out scores, if any
        val = ([r for r in map(json.loads, open(os.path.join(out, 'log.jsonl'))) if 'val_space_rel' in r
                or 'val_time_rel' in r][-1:] or [{}])[0]
    return dict(finetune=ft['top1'], sign=sum(ft['per_class'][c] for c in SIGN) / len(SIGN),
                probe=json.load(open(os.path.join(out, 'lp', 'test_results.json')))['top1'],
                davis=100 * json.load(open(os.path.join(out, 'davis', 'results.json')))['J&F-Mean'],
                space_rel=val.get('val_space_rel', math.nan), time_rel=val.get('val_time_rel', math.nan))


def mean_sd(v):
    v = [x for x in v if not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', nargs='+', default=DEFAULT_ROWS, help='LABEL:TARGET_WEIGHTS or LABEL:scratch')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--out', default='runs/compare')
    p.add_argument('--jobs', type=int, default=2, help='runs at a time (2 on 2 cores: EXPERIMENTS.md)')
    p.add_argument('--threads', type=int, help='torch threads a run (default: cores / jobs)')
    p.add_argument('--pretrain-args', type=shlex.split, default=[], help="e.g. '--epochs 88'")
    p.add_argument('--finetune-args', type=shlex.split, default=[], help="e.g. '--epochs 10'")
    args = p.parse_args(argv)
    args.threads = args.threads or max(1, len(os.sched_getaffinity(0)) // args.jobs)
    args.out = os.path.abspath(args.out)
    if any(':' not in r for r in args.rows):
        p.error('a row is LABEL:TARGET_WEIGHTS or LABEL:scratch')
    rows = [r.rsplit(':', 1) for r in args.rows]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    sh(['data.py', 'check', '--num-frames', '8'], os.path.join(args.out, 'demo.log'), args.threads)  # generate once
    colour = os.path.join(args.out, 'colour')
    pool = ThreadPoolExecutor(args.jobs)
    runs = itertools.product(rows, args.seeds)
    jobs = {(label, s): pool.submit(run_one, args, label, w, s) for (label, w), s in runs}
    try:
        res = {k: f.result() for k, f in jobs.items()}
    finally:
        pool.shutdown(cancel_futures=True)                             # a failed run: no new ones start
    first = next(iter(res))
    if not os.path.exists(os.path.join(colour, 'results.json')):
        ckpt = os.path.join(args.out, f"{''.join(c for c in first[0] if c.isalnum())}_s{first[1]}", 'ckpt.pt')
        sh(['segment.py', '--features', 'colour', '--ckpt', ckpt, '--output', colour], os.path.join(args.out,
                                                                                                    'demo.log'), 2)
    davis_colour = 100 * json.load(open(os.path.join(colour, 'results.json')))['J&F-Mean']
    stats = {(label, m): mean_sd([res[label, s][m] for s in args.seeds]) for label, _ in rows for m in MEASURES}
    print(f"{len(rows)} rows x {len(args.seeds)} seeds in {(time.time() - t0) / 60:.0f} min; mean ± sd (seeds "
          f"{', '.join(map(str, args.seeds))}); colour-only DAVIS baseline: J&F {davis_colour:.1f}")
    print('| row | ' + ' | '.join(MEASURES) + ' |\n|---|' + '---|' * len(MEASURES))
    for label, _ in rows:
        cells = [f'{m:.3f} ± {s:.3f}' if k.endswith('_rel') else f'{m:.1f} ± {s:.1f}'
                 for k in MEASURES for m, s in [stats[label, k]]]
        print(f'| {label} | ' + ' | '.join(c.replace('nan ± nan', '–') for c in cells) + ' |')
    print('apart (|difference of means| > 2 pooled sd):')
    for (a, _), (b, _) in itertools.combinations(rows, 2):
        for k in MEASURES:
            (ma, sa), (mb, sb) = stats[a, k], stats[b, k]
            pooled = math.sqrt((sa ** 2 + sb ** 2) / 2)
            if not math.isnan(ma - mb) and abs(ma - mb) > 2 * pooled:
                print(f'  {k}: {a if ma > mb else b} higher than {b if ma > mb else a} '
                      f'({max(ma, mb):.3g} vs {min(ma, mb):.3g}, 2 pooled sd {2 * pooled:.2g})')
    with open(os.path.join(args.out, 'results.json'), 'w') as fh:
        json.dump(dict(runs={f'{k[0]} s{k[1]}': v for k, v in res.items()}, colour_davis=davis_colour), fh, indent=1)


if __name__ == '__main__':
    main()
