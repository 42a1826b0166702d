"""
The full-scale recipes as tables, one a stage: rows = flags, columns = ssv2 / k400 / ucf101, each cell the value the
presets give (read from pretrain.py / finetune.py / data.py, so the tables follow the code) and where it comes from
(written here by hand). EXPERIMENTS.md holds the output; tests/test_finetune.py checks that it is the current one.

    python experiments/recipes.py          # prints the two tables (paste them into EXPERIMENTS.md: Recipes)

Sources: pretrain.sh / finetune.sh are VideoMAE's ViT-B scripts for the dataset (scripts/ssv2/..._epoch_800,
scripts/kinetics/..._epoch_800, scripts/ucf101/..._epoch_3200); run_mae_pretraining.py, run_class_finetuning.py,
datasets.py, kinetics.py, ssv2.py are VideoMAE's files (their argparse defaults where the script is silent).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import finetune  # noqa: E402
import pretrain  # noqa: E402
from data import dataset_info  # noqa: E402

DATASETS = ('ssv2', 'k400', 'ucf101')
PRE, RUN = 'run_mae_pretraining.py', 'run_class_finetuning.py'
NOT_FLAGS = {'sampling', 'test_views'}  # fixed by the dataset (data.DATASETS)
# flag: source, or {dataset: source}
PRETRAIN = {
    'model': 'paper (ViT-B)',
    'epochs': 'pretrain.sh (--epochs N+1: checkpoint N)',
    'warmup_epochs': 'pretrain.sh',
    'batch_size': 'pretrain.sh (clips a GPU)',
    'lr': {'ssv2': PRE, 'k400': PRE, 'ucf101': 'pretrain.sh'},
    'min_lr': PRE,
    'weight_decay': PRE,
    'mask_ratio': 'pretrain.sh',
    'mask_type': 'pretrain.sh',
    'decoder': "paper's decoder ablation",
    'time_weight': 'paper (λ)',
    'motion_gap': 'paper (adjacent frames)',
    'img_size': PRE,
    'num_frames': 'pretrain.sh',
    'stride': 'pretrain.sh (--sampling_rate)',
    'flip': 'datasets.py (multi-scale crop only)',
    'repeat': 'ours (VideoMAE: one clip a video)',
    'clip_grad': PRE,
    'workers': PRE,
}
FINETUNE = {
    'epochs': 'finetune.sh',
    'warmup_epochs': RUN,
    'batch_size': 'finetune.sh (videos a GPU)',
    'num_sample': 'finetune.sh',
    'lr': 'finetune.sh (per 256 videos)',
    'min_lr': {'ssv2': RUN, 'k400': RUN, 'ucf101': 'finetune.sh'},
    'weight_decay': 'finetune.sh',
    'layer_decay': {'ssv2': RUN, 'k400': RUN, 'ucf101': 'finetune.sh'},
    'drop_path': {'ssv2': RUN, 'k400': RUN, 'ucf101': 'finetune.sh'},
    'dropout': {'ssv2': RUN, 'k400': RUN, 'ucf101': 'finetune.sh (--fc_drop_rate)'},
    'head_init_scale': RUN + ' (--init_scale)',
    'mixup': RUN,
    'cutmix': RUN,
    'smoothing': RUN,
    'augment': RUN + ' (--aa rand-m7-n4-mstd0.5-inc1, --reprob 0.25)',
    'min_crop': 'kinetics.py / ssv2.py (scale 0.08-1)',
    'flip': {'ssv2': 'ssv2.py (no flip)', 'k400': 'kinetics.py', 'ucf101': 'kinetics.py'},
    'sampling': {'ssv2': 'ssv2.py (segments)', 'k400': 'kinetics.py', 'ucf101': 'kinetics.py'},
    'stride': {'ssv2': 'ours (segment sampling: unused)', 'k400': 'finetune.sh', 'ucf101': 'finetune.sh'},
    'num_frames': 'finetune.sh',
    'test_views': 'finetune.sh (--test_num_segment x --test_num_crop)',
    'workers': RUN,
}


def value(v):
    return 'on' if v is True else 'off' if v in (False, None) else f'{v:g}' if isinstance(v, float) else str(v)


def table(title, rows, args):
    out = [f'| {title} | ' + ' | '.join(DATASETS) + ' |', '|---' * (len(DATASETS) + 1) + '|']
    for k, src in rows.items():
        cells = [f'{value(args[d][k])}, {src if isinstance(src, str) else src[d]}' for d in DATASETS]
        name = k.replace('_', ' ') if k in NOT_FLAGS else f"`--{k.replace('_', '-')}`"
        out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(out)


def tables():
    pre = {d: vars(pretrain.get_args(['--data', d])) for d in DATASETS}
    ft = {}
    for d in DATASETS:
        info = dataset_info(d)
        args = {k: v for k, v in vars(finetune.get_args(['--data', d, '--init', ''])).items() if v is not None}
        views = f"{info['test_clips']}x{info['test_crops']}"
        ft[d] = dict(info, sampling=info['finetune_sampling'], **args, test_views=views)
    return table('pretraining', PRETRAIN, pre) + '\n\n' + table('finetuning', FINETUNE, ft)


if __name__ == '__main__':
    print(tables())
