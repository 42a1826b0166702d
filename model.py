"""
MotionMAE: a video masked autoencoder that reconstructs, at every hidden token, both the pixels
(space) and the frame difference (time) of its tubelet. Yang et al., arXiv 2210.04154.

    model = MotionMAE(ModelConfig(**PRESETS['base']))    # ViT-B encoder + two decoders
    out = model(x, x_next)                               # x, x_next: normalized (B, 3, T, H, W)
    out['loss'].backward()                               # L = L_space + time_weight * L_time

With time_weight == 0 the time branch is not built and the model is exactly VideoMAE.

Symbols: B batch, C=3 channels, T frames, H×W pixels, u tubelet size, p patch size,
t=T/u, h=H/p, w=W/p, N=t·h·w tokens, N_vis visible tokens, N_hid hidden tokens, N_dec decoded hidden tokens,
D encoder width, D_d decoder width, K = u·p·p·C values per token target.

paper ↔ code (MotionMAE.forward runs these steps in this order)
    §3.1 tube masking                  tube_mask, random_mask; check_masks
    §3.1 ViT encoder on visible tokens MotionMAE.forward_encoder -> Encoder
    §3.2 two decoders / shared decoder MotionMAE.forward_decoder -> Decoder (decoder='separate' | 'shared')
    §3.2 appearance (space) target     space_target
    §3.2 motion (time) target          time_target (frame difference x_{i+g} - x_i)
    §3.2 L = L_space + λ L_time        MotionMAE.forward_loss (any targets: TARGETS, target_weights)
    §4   optimizer, finetuning         configure_optimizer, VideoClassifier
    beyond the paper [ours]            decoder_mask (decoder_mask_ratio), visible-only embedding and
                                       checkpoint_activations in Encoder.forward
"""
import argparse
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
torch.serialization.add_safe_globals([argparse.Namespace])  # VideoMAE's training checkpoints pickle their args

# -----------------------------------------------------------------------------
# config

class ConfigError(SystemExit):
    """A model config that cannot work; one line (uncaught, the script exits with it, status 1)."""

@dataclass
class ModelConfig:
    img_size: int = 224
    num_frames: int = 16
    patch_size: int = 16          # p
    tubelet_size: int = 2         # u
    embed_dim: int = 768          # D
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 384  # D_d
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.9       # [VideoMAE] 0.9 (0.75 for UCF101)
    mask_type: str = 'tube'       # 'tube' | 'random'
    decoder: str = 'separate'     # [paper: decoder ablation] 'separate' (a decoder a target) | 'shared' (one trunk)
    time_weight: float = 1.0      # λ [paper]; 0 = no time branch = VideoMAE
    target_weights: dict = None   # [ours] {name: weight} over TARGETS, overriding {space: 1, time: λ}; 0 = not built
    motion_norm: str = 'clip'     # [ours] one scale per clip | 'patch' (per tubelet, like pixels) | 'none'
    drop_path: float = 0.0        # stochastic depth, max rate (finetuning: 0.1)
    decoder_mask_ratio: float = 0.0  # [VideoMAEv2-style, ours: random] share of hidden tokens the decoders skip
    checkpoint_activations: bool = False  # [ours] recompute each block (encoder, decoders) in backward

    def __post_init__(self):
        assert self.mask_type in ('tube', 'random') and self.decoder in ('separate', 'shared')
        assert self.motion_norm in ('clip', 'patch', 'none')
        if self.img_size % self.patch_size or self.num_frames % self.tubelet_size:
            raise ConfigError(f'img_size {self.img_size} / num_frames {self.num_frames} must be multiples of the '
                              f'patch size {self.patch_size} / tubelet size {self.tubelet_size}')

    @property
    def grid(self):  # (t, h, w) of the training input
        return (self.num_frames // self.tubelet_size, self.img_size // self.patch_size,
                self.img_size // self.patch_size)

# encoder D/depth/heads; decoder D_d/heads, depth 4 [VideoMAE]; 'tiny' is ours, for tests and the CPU demo
PRESETS = {
    'tiny': dict(patch_size=8, embed_dim=192, depth=4, num_heads=3, decoder_embed_dim=96, decoder_num_heads=3,
                 decoder_depth=2),
    'small': dict(embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=192, decoder_num_heads=3),
    'base': dict(embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=384, decoder_num_heads=6),
    'large': dict(embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_num_heads=8),
    'huge': dict(embed_dim=1280, depth=32, num_heads=16, decoder_embed_dim=640, decoder_num_heads=8),
}

# -----------------------------------------------------------------------------
# geometry: patchify, position tables

def patchify(x, u, p):
    """(B, C, T, H, W) -> (B, N, u*p*p*C), tokens in (t, h, w) raster order, values as (u, p, p, C)."""
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // u, u, H // p, p, W // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, t, h, w, u, p, p, C)
    return x.reshape(B, (T // u) * (H // p) * (W // p), u * p * p * C)

def unpatchify(x, u, p, grid):
    """(B, N, u*p*p*C) -> (B, C, T, H, W); the exact inverse of patchify for grid (t, h, w)."""
    t, h, w = grid
    B, C = x.shape[0], x.shape[2] // (u * p * p)
    x = x.reshape(B, t, h, w, u, p, p, C).permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, t, u, h, p, w, p)
    return x.reshape(B, C, t * u, h * p, w * p)

def sinusoid_table(n, d):
    """VideoMAE's fixed table (n, d): angle pos / 10000^(2(j//2)/d), sin on even j, cos on odd j.
    Computed in float64 then cast: float32 angles near pos=1500 are off by ~1e-4."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode='floor') / d)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()  # (n, d)

def resize_pos(table, src, dst):
    """Resize a (1, N, D) table from grid src=(t,h,w) to dst: bicubic over (h, w), linear over t.
    Returns the table untouched when the grids are equal, so the training grid stays exact."""
    if tuple(src) == tuple(dst):
        return table
    (t, h, w), (t2, h2, w2), D = src, dst, table.shape[-1]
    x = table.reshape(t, h, w, D).permute(0, 3, 1, 2).float()              # (t, D, h, w)
    x = F.interpolate(x, size=(h2, w2), mode='bicubic', align_corners=False)
    x = x.permute(2, 3, 1, 0).reshape(h2 * w2, D, t)                      # (h2·w2, D, t)
    x = F.interpolate(x, size=t2, mode='linear', align_corners=False)
    return x.permute(2, 0, 1).reshape(1, t2 * h2 * w2, D).to(table.dtype)  # (1, N', D)

# -----------------------------------------------------------------------------
# masking (True = hidden, VideoMAE's convention); static shapes: argsort + scatter, no boolean indexing

def tube_mask(B, grid, mask_ratio, device=None):
    """Hide the same int(h·w·ρ) spatial positions in every temporal slot. -> (B, N) bool."""
    t, h, w = grid
    n_hid = int(mask_ratio * h * w)
    ids = torch.rand(B, h * w, device=device).argsort(dim=1)  # random order of spatial positions
    hid = torch.zeros(B, h * w, dtype=torch.bool, device=device).scatter_(1, ids[:, :n_hid], True)
    return hid[:, None, :].expand(B, t, h * w).reshape(B, t * h * w)

def random_mask(B, grid, mask_ratio, device=None):
    """Hide int(N·ρ) tokens drawn independently per token (an ablation): a tube mask of one slot. -> (B, N) bool."""
    return tube_mask(B, (1, 1, math.prod(grid)), mask_ratio, device)

def num_hidden(cfg):
    t, h, w = cfg.grid
    return t * int(cfg.mask_ratio * h * w) if cfg.mask_type == 'tube' else int(cfg.mask_ratio * t * h * w)

def num_decoded(cfg):
    """Hidden tokens the decoders reconstruct: all but int(decoder_mask_ratio · N_hid)."""
    return num_hidden(cfg) - int(cfg.decoder_mask_ratio * num_hidden(cfg))

def decoder_mask(mask, n_dec):
    """A random n_dec of each clip's hidden tokens (mask True), drawn independently per clip. -> (B, N) bool"""
    score = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)  # visible tokens sort last
    return torch.zeros_like(mask).scatter_(1, score.argsort(dim=1)[:, :n_dec], True)

def check_masks(cfg, mask, dec_mask):
    """-> (N_hid, N_dec): every sample must hide the same N_hid tokens and decode the same N_dec of them (dec_mask a
    subset of mask), else ValueError. One device sync; none under torch.compile, where the config gives the counts."""
    if torch.compiler.is_compiling():
        return num_hidden(cfg), num_decoded(cfg)
    hid, dec, stray = torch.stack([mask.sum(1), dec_mask.sum(1), (dec_mask & ~mask).sum(1)]).tolist()
    if set(hid) != {hid[0]} or set(dec) != {dec[0]} or any(stray):
        raise ValueError('masks must hide (and decode) as many tokens in every sample; dec_mask within mask')
    return hid[0], dec[0]

# -----------------------------------------------------------------------------
# targets: pure functions of the normalized clips; computed on the device in fp32

def normalize_patches(v, C=3):
    """Per token and channel: subtract the mean, divide by (unbiased std + 1e-6) over u·p·p values."""
    B, N, K = v.shape
    v = v.reshape(B, N, K // C, C)
    v = (v - v.mean(dim=-2, keepdim=True)) / (v.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return v.reshape(B, N, K)

_STATS = {}  # device -> ImageNet (mean, std), each (3, 1, 1, 1) fp32: copied to a device once, not at every call

def imagenet_stats(device):
    """ImageNet (mean, std) as (3, 1, 1, 1) fp32 tensors on device, made once per device (in a compiled graph: its
    constants)."""
    if device in _STATS and not torch.compiler.is_compiling():
        return _STATS[device]
    stats = tuple(torch.tensor(v, device=device).view(3, 1, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    if not torch.compiler.is_compiling():
        _STATS[device] = stats
    return stats

def sync(device):
    """Wait for the device's queued work (CUDA), for timing."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)

def unnormalize(x):
    """ImageNet-normalized (B, C, T, H, W) -> [0, 1] pixels, as VideoMAE does before its targets."""
    mean, std = imagenet_stats(x.device)
    return x.float() * std + mean

def space_target(cfg, x, x_next=None):
    """[VideoMAE] the token's pixels in [0,1], normalised per tubelet and channel. -> (B, N, K)"""
    return normalize_patches(patchify(unnormalize(x), cfg.tubelet_size, cfg.patch_size))

MOTION_FLOOR = 2 / 255  # [ours] 2 grey levels: about the codec and sensor noise of still pixels in real video

def time_target(cfg, x, x_next):
    """[paper] motion m_i = x_{i+g} - x_i in [-1,1], cut into tubelets like pixels. -> (B, N, K). [ours] motion_norm
    'clip': one scale per clip and channel (EXPERIMENTS.md: Codec noise); 'patch' per tubelet; 'none'."""
    if x_next is None:
        raise ValueError('the time target needs x_next (the +motion_gap partner frames)')
    m = patchify(unnormalize(x_next) - unnormalize(x), cfg.tubelet_size, cfg.patch_size)
    if cfg.motion_norm == 'clip':                                         # / (RMS over the clip + MOTION_FLOOR)
        v = m.reshape(*m.shape[:2], -1, 3)                                # (B, N, u·p·p, C)
        return (v / (v.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + MOTION_FLOOR)).reshape(m.shape)
    if cfg.motion_norm == 'patch':
        return normalize_patches(m)
    return m

# A new pretext target is one function f(cfg, x, x_next) -> (B, N, K_f) fp32, any width K_f, and one entry here;
# `--target-weights NAME=W` trains it. Decoder heads, losses, logs, held-out scores and pictures follow this table.
TARGETS = {'space': space_target, 'time': time_target}

def target_weights(cfg):
    """{name: weight} of the targets trained, in TARGETS' order: space 1 and time λ unless cfg.target_weights says
    otherwise; a weight of 0 removes the target (and its decoder or head)."""
    w = {'space': 1.0, 'time': cfg.time_weight, **(cfg.target_weights or {})}
    unknown = sorted(set(w) - set(TARGETS))
    if unknown:
        raise ConfigError(f'unknown target {", ".join(unknown)}: model.TARGETS has {", ".join(TARGETS)}')
    return {n: float(w[n]) for n in TARGETS if w.get(n, 0) > 0}

# -----------------------------------------------------------------------------
# transformer blocks (VideoMAE parameter names, so its checkpoints load)

class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))  # [VideoMAE] k has no bias
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                 # (B, heads, N, C/heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))          # (B, N, C)

def drop_path(x, p, training):
    """Stochastic depth: the residual branch x dropped per sample with probability p, kept ones scaled by 1/(1-p)."""
    return x * F.dropout(x.new_ones(x.shape[0], *[1] * (x.ndim - 1)), p, training) if p > 0 and training else x

class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, drop_path=0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.ModuleDict(dict(fc1=nn.Linear(dim, hidden), fc2=nn.Linear(hidden, dim)))  # GELU between
        self.drop_path = drop_path

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        mlp = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + drop_path(mlp, self.drop_path, self.training)

def run_blocks(blocks, x, checkpoint=False):
    """x through the blocks; with checkpoint (and gradients on) each block keeps only its input and is recomputed in
    the backward pass, its drop paths replayed [ours: activation checkpointing, encoder and decoders]."""
    for blk in blocks:
        if checkpoint and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
        else:
            x = blk(x)
    return x

# -----------------------------------------------------------------------------
# encoder: embed -> add position -> keep visible tokens -> blocks -> norm

class Encoder(nn.Module):
    def __init__(self, cfg, final_norm=True):
        super().__init__()
        self.cfg = cfg
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)                # tubelet embedding: kernel = stride
        self.patch_embed = nn.ModuleDict(dict(proj=nn.Conv3d(3, cfg.embed_dim, kernel_size=k, stride=k)))
        table = sinusoid_table(math.prod(cfg.grid), cfg.embed_dim)[None]  # (1, N, D)
        self.register_buffer('pos_embed', table, persistent=False)        # [VideoMAE] fixed, not in checkpoints
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()         # rising linearly with depth
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, d) for d in dpr)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6) if final_norm else nn.Identity()

    def forward(self, x, ids_keep=None):
        """x (B, C, T, H, W) normalized; ids_keep (B, N_vis) visible token indices or None (all)."""
        B, _, T, H, W = x.shape
        u, p, D = self.cfg.tubelet_size, self.cfg.patch_size, self.cfg.embed_dim
        pos = resize_pos(self.pos_embed, self.cfg.grid, (T // u, H // p, W // p))  # (1, N, D)
        if ids_keep is None:
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)       # (B, N, D)
        else:  # [ours] only the visible tubelets are embedded: the Conv3d as one matmul over the gathered tubelets
            tub = torch.gather(patchify(x, u, p), 1, ids_keep[..., None].expand(-1, -1, 3 * u * p * p))  # (B, N_vis, K)
            w = self.patch_embed.proj.weight.permute(0, 2, 3, 4, 1).reshape(D, -1)  # (D, K): patchify's (u, p, p, C)
            x = F.linear(tub, w, self.patch_embed.proj.bias)               # (B, N_vis, D)
            pos = torch.gather(pos.expand(B, -1, -1), 1, ids_keep[..., None].expand(-1, -1, D))
        x = x + pos.to(x.dtype)
        x = run_blocks(self.blocks, x, self.cfg.checkpoint_activations)
        return self.norm(x)

# -----------------------------------------------------------------------------
# decoder: project -> visible tokens + mask tokens (+ position) -> blocks -> norm -> one head per target

class Decoder(nn.Module):
    """targets: {name: K_n}, one linear head each. Tokens go in as [visible, decoded hidden], each with its own position
    added, as VideoMAE does (attention ignores order: no unshuffle); predictions come out in ids_dec order."""
    def __init__(self, cfg, targets):
        super().__init__()
        self.cfg = cfg
        D, Dd = cfg.embed_dim, cfg.decoder_embed_dim
        self.proj = nn.Linear(D, Dd, bias=False)            # VideoMAE's encoder_to_decoder
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, Dd), std=0.02))
        self.register_buffer('pos_embed', sinusoid_table(math.prod(cfg.grid), Dd)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(Dd, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(Dd, eps=1e-6)
        self.heads = nn.ModuleDict({name: nn.Linear(Dd, K) for name, K in targets.items()})

    def forward(self, z, ids_keep, ids_dec):
        """z (B, N_vis, D) encoded visible tokens -> {target: (B, N_dec, K)} at the decoded hidden tokens ids_dec."""
        z = self.proj(z)                                                   # (B, N_vis, D_d)
        B, N_vis, Dd = z.shape
        pos = self.pos_embed.to(z.dtype).expand(B, -1, -1)                 # (B, N, D_d)
        pos_vis = torch.gather(pos, 1, ids_keep[..., None].expand(-1, -1, Dd))
        pos_dec = torch.gather(pos, 1, ids_dec[..., None].expand(-1, -1, Dd))
        x = torch.cat([z + pos_vis, self.mask_token.to(z.dtype) + pos_dec], dim=1)  # (B, N_vis + N_dec, D_d)
        x = run_blocks(self.blocks, x, self.cfg.checkpoint_activations)
        x = self.norm(x[:, N_vis:])                                        # (B, N_dec, D_d)
        return {name: head(x) for name, head in self.heads.items()}       # (B, N_dec, K) each

# -----------------------------------------------------------------------------
# MotionMAE: encoder + decoder(s) + L = L_space + λ L_time over hidden tokens

def init_linears(module, init):
    """Every Linear of module: weight init(weight), bias 0 [VideoMAE]; LayerNorms keep PyTorch's (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

class MotionMAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weights = target_weights(cfg)                                 # {'space': 1, 'time': λ, ...}
        self.encoder = Encoder(cfg)
        zero = torch.zeros(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
        dims = {n: TARGETS[n](cfg, zero, zero).shape[-1] for n in self.weights}  # {name: K_n}, values per token
        if cfg.decoder == 'separate':                                      # one independent decoder per target
            self.decoders = nn.ModuleDict({n: Decoder(cfg, {n: K}) for n, K in dims.items()})
        else:                                                              # one trunk, one head per target
            self.decoders = nn.ModuleDict({'shared': Decoder(cfg, dims)})
        init_linears(self, nn.init.xavier_uniform_)                       # [VideoMAE] pretraining init

    def draw_mask(self, B, device):
        fn = tube_mask if self.cfg.mask_type == 'tube' else random_mask
        return fn(B, self.cfg.grid, self.cfg.mask_ratio, device)

    def forward_encoder(self, x, mask, dec_mask):
        """Order the tokens: visible, then the decoded hidden ones, then the skipped ones (raster order within each);
        encode the visible. -> z (B, N_vis, D), ids_keep (B, N_vis), ids_dec (B, N_dec)."""
        n_hid, n_dec = check_masks(self.cfg, mask, dec_mask)
        ids = torch.argsort(mask.to(torch.int8) * 2 - dec_mask.to(torch.int8), dim=1, stable=True)
        N_vis = ids.shape[1] - n_hid
        ids_keep, ids_dec = ids[:, :N_vis], ids[:, N_vis:N_vis + n_dec]
        return self.encoder(x, ids_keep), ids_keep, ids_dec

    def forward_decoder(self, z, ids_keep, ids_dec):
        """Every decoder (one per target, or the shared trunk) -> {target: (B, N_dec, K)} at ids_dec."""
        return {n: p for dec in self.decoders.values() for n, p in dec(z, ids_keep, ids_dec).items()}

    def forward_targets(self, x, x_next):
        """{target: (B, N, K)} in fp32, without gradients, whatever the autocast around."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return {n: TARGETS[n](self.cfg, x, x_next) for n in self.weights}

    def forward_loss(self, targets, pred, ids_dec):
        """Per target the MSE over the decoded hidden tokens; loss = Σ weight · loss_n (L_space + λ L_time)."""
        out, loss = {}, 0.0
        for n, w in self.weights.items():
            tgt = torch.gather(targets[n], 1, ids_dec[..., None].expand(-1, -1, targets[n].shape[-1]))  # (B, N_dec, K)
            out[f'loss_{n}'] = F.mse_loss(pred[n].float(), tgt)
            out[f'pred_{n}'] = pred[n]
            loss = loss + w * out[f'loss_{n}']
        out['loss'] = loss
        return out

    def forward(self, x, x_next=None, mask=None, dec_mask=None):
        """x, x_next: normalized (B, 3, T, H, W), x_next[:, :, i] motion_gap raw frames after x[:, :, i]. mask (B, N):
        True = hidden, drawn when None; dec_mask: the hidden tokens decoded and scored, drawn when None (or = mask)."""
        if mask is None:
            mask = self.draw_mask(x.shape[0], x.device)                    # 1. mask
        if dec_mask is None:
            dec_mask = decoder_mask(mask, num_decoded(self.cfg)) if self.cfg.decoder_mask_ratio > 0 else mask
        z, ids_keep, ids_dec = self.forward_encoder(x, mask, dec_mask)    # 2. encode: (B, N_vis, D)
        pred = self.forward_decoder(z, ids_keep, ids_dec)                 # 3. decode: {name: (B, N_dec, K)}
        targets = self.forward_targets(x, x_next)                         # 4. targets: {name: (B, N, K)}
        return dict(self.forward_loss(targets, pred, ids_dec), mask=mask)  # 5. loss

# -----------------------------------------------------------------------------
# finetuning: encoder without masking -> mean pool -> fc_norm -> dropout -> head [VideoMAE]

class VideoClassifier(nn.Module):
    def __init__(self, cfg, num_classes, dropout=0.0, init_scale=0.001):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, final_norm=False)                      # [VideoMAE] mean pooling: no final norm
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cfg.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        init_linears(self, lambda w: nn.init.trunc_normal_(w, std=0.02))   # [VideoMAE] finetuning init
        for p in self.head.parameters():                                   # [VideoMAE] init_scale 0.001
            p.data.mul_(init_scale)

    def forward(self, x):
        x = self.encoder(x).mean(dim=1)                                    # (B, D)
        return self.head(self.dropout(self.fc_norm(x)))                    # (B, num_classes)

# -----------------------------------------------------------------------------
# optimizer: AdamW parameter groups of either model, for pretraining and finetuning (nanoGPT's configure_optimizers)

def configure_optimizer(model, lr, weight_decay, betas, layer_decay=1.0, fused=False):
    """AdamW, no weight decay on biases, norms and mask tokens [VideoMAE]. Layer-wise lr decay [BEiT, VideoMAE]: block
    i of L gets 'lr_scale' layer_decay^(L - i), the embedding layer_decay^(L + 1), the rest 1 (times the lr)."""
    L, groups = model.cfg.depth, {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim == 1 or name.endswith('mask_token')
        if name.startswith('encoder.blocks.'):
            layer = int(name.split('.')[2]) + 1
        elif name.startswith('encoder.patch_embed'):
            layer = 0
        else:
            layer = L + 1
        scale = layer_decay ** (L + 1 - layer)
        group = groups.setdefault((scale, no_wd), dict(params=[], weight_decay=0.0 if no_wd else weight_decay,
                                                       lr_scale=scale))
        group['params'].append(p)
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, fused=fused)

# -----------------------------------------------------------------------------
# checkpoints: ours ({'model', 'config', ...}) and VideoMAE's pretrain / finetune layouts

# VideoMAE key prefix -> ours, then the separate decoders' space trunk <-> the shared one; first match wins
RENAMES = [('encoder_to_decoder.', 'decoders.space.proj.'), ('mask_token', 'decoders.space.mask_token'),
           ('decoder.head.', 'decoders.space.heads.space.'), ('decoder.', 'decoders.space.'),
           ('patch_embed.', 'encoder.patch_embed.'), ('blocks.', 'encoder.blocks.'),
           ('pos_embed', 'encoder.pos_embed'), ('norm.', 'encoder.norm.'),
           ('decoders.space.', 'decoders.shared.'), ('decoders.shared.', 'decoders.space.')]
RETIRED = {'learned_pos': False}  # config fields older checkpoints carry, at the value that changes nothing

class CheckpointError(SystemExit):
    """A checkpoint that cannot be used. Its message is one line naming the file and the problem; uncaught, the
    script exits with that line and status 1 instead of a traceback."""

def read_checkpoint(path):
    """torch.load(weights_only=True) -> dict; VideoMAE's training checkpoints also pickle an argparse.Namespace.
    A file that is missing, unreadable, truncated or not a checkpoint raises CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path}: not found')
    try:
        ck = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # the zip reader or unpickler ran out of bytes; else UnpicklingError, KeyError, OSError, ..
        what = 'truncated or corrupt' if isinstance(e, (RuntimeError, EOFError)) else 'not a PyTorch checkpoint'
        why = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:80]}'
        raise CheckpointError(f'checkpoint {path}: {what} ({why})') from None
    if not isinstance(ck, dict):
        raise CheckpointError(f'checkpoint {path}: not a checkpoint (holds a {type(ck).__name__}, not a dict)')
    return ck

def checkpoint_config(ck, path):
    """The ModelConfig saved in one of our checkpoints, or None (VideoMAE's carry none)."""
    if 'config' not in ck:
        return None
    config = {k: v for k, v in ck['config'].items() if not (k in RETIRED and RETIRED[k] == v)}
    unknown = sorted(set(config) - set(ModelConfig.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f'checkpoint {path}: its config has fields this code does not know: {", ".join(unknown)}')
    return ModelConfig(**config)

def load_checkpoint(model, ckpt, verbose=True, path='checkpoint'):
    """Load ours or a VideoMAE pretrain/finetune checkpoint (a path, or a dict read from `path`) into a MotionMAE or a
    VideoClassifier. Every encoder tensor must load, else CheckpointError names the first misfit; the rest may be new
    (initialised) or left over, and one line says which. -> (missing, unexpected keys; misfits among the latter)."""
    if isinstance(ckpt, str):
        path, ckpt = ckpt, read_checkpoint(ckpt)
    for k in ('model', 'module', 'state_dict'):
        if isinstance(ckpt.get(k), dict):
            ckpt = ckpt[k]
            break
    if not any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f'{path}: holds no model weights (keys: {", ".join(list(ckpt)[:5])})')
    own = model.state_dict()
    sd, unexpected = {}, []
    for key, v in ckpt.items():
        key = key.replace('module.', '').replace('_orig_mod.', '')
        for _ in range(2):                                             # VideoMAE's -> ours -> the other decoder layout
            if key not in own:
                key = next((new + key[len(old):] for old, new in RENAMES if key.startswith(old)), key)
        if key in own and own[key].shape == v.shape:
            sd[key] = v
        else:                                                          # left over, or a shape misfit
            unexpected.append(f'{key} (checkpoint {tuple(v.shape)} vs model {tuple(own[key].shape)})' if key in own
                              else key)
    missing = [k for k in own if k not in sd]
    encoder = [k for k in own if k.startswith('encoder.')]
    bad = [k for k in encoder if k in missing]
    if bad:
        why = next((u for u in unexpected if u.startswith(bad[0] + ' (')), f'{bad[0]} (not in the checkpoint)')
        raise CheckpointError(f'{path} does not fit this model: {len(encoder) - len(bad)}/{len(encoder)} encoder '
                              f'tensors match; first misfit {why}')
    model.load_state_dict(sd, strict=False)
    if verbose:
        print(f'load_checkpoint: {path}: encoder {len(encoder)}/{len(encoder)} tensors, {len(sd)}/{len(own)} in all; '
              f'new (initialised): {_groups(missing)}; not used: {_groups(unexpected)}')
    return missing, unexpected

def _groups(keys):  # 'decoders.time.blocks.0.attn.qkv.weight' -> 'decoders.time'; 'head.weight' -> 'head'
    names = {'.'.join(k.split('.')[:2]) if k.startswith(('decoders.', 'encoder.')) else k.split('.')[0] for k in keys}
    return ', '.join(sorted(names)) or 'none'
