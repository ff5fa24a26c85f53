"""StyleGAN-random ("StyleGAN-oriented", spec §2.3): an untrained StyleGAN2-style generator.

Re-implemented from the description of Baradad et al. 2021's `sparse_new` network with
`--same_noise_map`, `bias_range=0.2`, `random_configuration='chin-chout'`:
- mapping-free: w = LeakyReLU_0.2(N(0, I)) drawn independently per image and layer; styles are a
  random affine map of w with bias 1;
- 3x3 modulated, demodulated convolutions whose filters are oriented 3x3 "wavelets" (edges, lines,
  spots, and their negatives): a random subset of 5..40 of them, one per input channel ('chin'),
  times a N(0, 1) gain per output channel ('chout'); upsampling x2 per block, skip ToRGB outputs;
- per layer a "same noise map" (one pink-noise map with a Laplacian envelope, area-resized to every
  scale) with strength U(0, 0.3) per image, random biases U(-0.2, 0.2), LeakyReLU 0.2 (gain sqrt 2);
- output channels standardised, then given a random mean and std per channel, clipped to [0, 1].

What is random at which level follows the original code: the network (affine maps, constant
input) is re-drawn every `block` = 400 images, from derive_seed(seed, i // block); filters, biases,
ToRGB weights and the noise map were re-drawn at every forward pass of its batch of 2, so here they
are drawn per pair of images (i // 2); w and noise strengths per image.

With 'chin' filters and 'chout' gains, every output channel of a layer is the same map (a sum of
per-channel filtered inputs) times g_o * demod_o, so the convolution is computed exactly as one
depthwise 3x3 convolution and a channel sum: cheap enough for any channel count.
Channels are scaled down from StyleGAN2 (channel_base, channel_max) to keep CPU rendering cheap.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from procvision.data.rng import derive_seed, hash_coords
from procvision.data.source import Source

# Per-image colour statistics of the original colour normalisation: (mean mu, mean sd, std mu, std sd).
COLOUR_STATS = (
    (0.483, 0.145, 0.219, 0.063),
    (0.455, 0.142, 0.213, 0.062),
    (0.401, 0.161, 0.213, 0.069),
)
_N_WAVELETS = 40
# Stream ids (field streams are shifted by 20 bits, so fields hold up to 2**20 values).
_S_AFFINE, _S_CONST = 1, 2
_S_WSUB, _S_WNUM, _S_WCHOICE, _S_GAIN, _S_BIAS, _S_RGB = 10, 11, 12, 13, 14, 15
_S_PINK_ALPHA, _S_PINK_RE, _S_PINK_IM, _S_PINK_ENV = 20, 21, 22, 23
_S_W, _S_NOISE_STRENGTH, _S_COLOUR = 30, 31, 32
_LAYER_STRIDE = 64  # per-layer streams: base + layer * _LAYER_STRIDE + 100


def _field(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Uniform [0, 1) float32 [B, n] keyed by (seed, id, stream, j); n <= 2**20."""
    j = (torch.arange(n, device=ids.device, dtype=torch.int64) + (stream << 20)) & 0xFFFFFFFF
    h = hash_coords(seed, ids[:, None], j[None, :])
    return (h >> 8).to(torch.float32) / float(1 << 24)


def _gauss(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Standard normal float32 [B, n] by Box-Muller over two fields."""
    u1 = _field(seed, ids, 2 * stream + 1, n).clamp_min(1e-7)
    u2 = _field(seed, ids, 2 * stream + 2, n)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def _layer_stream(base: int, layer: int) -> int:
    return 100 + base + layer * _LAYER_STRIDE


def _rotated_centre(pattern: np.ndarray, degrees: float) -> np.ndarray:
    """Centre 3x3 of `pattern` rotated by `degrees` about its centre pixel (bilinear)."""
    c = (pattern.shape[0] - 1) / 2
    th = math.radians(degrees)
    out = np.zeros((3, 3))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            # inverse rotation: where does the output pixel come from
            sx = c + math.cos(th) * dx - math.sin(th) * dy
            sy = c + math.sin(th) * dx + math.cos(th) * dy
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            fx, fy = sx - x0, sy - y0
            out[dy + 1, dx + 1] = (
                pattern[y0, x0] * (1 - fx) * (1 - fy)
                + pattern[y0, x0 + 1] * fx * (1 - fy)
                + pattern[y0 + 1, x0] * (1 - fx) * fy
                + pattern[y0 + 1, x0 + 1] * fx * fy
            )
    return out


def wavelets() -> torch.Tensor:
    """The 40 3x3 filters: 8 edge and 8 line orientations (zero mean), 4 spots, and negatives."""
    edge = np.ones((11, 11))
    edge[:, 5] = 0
    edge[:, 6:] = -1
    line = np.ones((11, 11))
    line[:, 5] = -1
    bank = []
    for pattern in (edge, line):
        for k in range(8):
            f = _rotated_centre(pattern, k * 180.0 / 8)
            bank.append(f - f.mean())
    dot = np.zeros((3, 3))
    dot[1, 1] = 1
    centre_surround = -np.ones((3, 3))
    centre_surround[1, 1] = 1
    plus = np.ones((3, 3))
    plus[[0, 0, 2, 2], [0, 2, 0, 2]] = 0
    bank += [dot, centre_surround, plus, np.sign(plus - 0.5)]
    bank += [-f for f in bank]
    return torch.tensor(np.stack(bank), dtype=torch.float32)


def pink_noise(seed: int, ids: torch.Tensor, size: int) -> torch.Tensor:
    """Pink noise maps [B, size, size] (1/f^a spectrum, a ~ U(0.5, 1.5)), Laplacian envelope, std 1.

    The envelope is a 4x4 Laplace(0, 1) field resized bicubically to size.
    """
    dev = ids.device
    alpha = 0.5 + _field(seed, ids, _S_PINK_ALPHA, 1)[:, :, None]  # [B, 1, 1]
    fr = torch.fft.fftfreq(size, device=dev) * 2.0  # in [-1, 1), like a linspace(-1, 1) grid
    rad = torch.sqrt(fr[:, None] ** 2 + fr[None, :] ** 2).clamp_min(1e-5)
    mag = rad[None] ** (-alpha)
    mag[:, 0, 0] = 0.0  # no DC
    re = _gauss(seed, ids, _S_PINK_RE, size * size).view(-1, size, size)
    im = _gauss(seed, ids, _S_PINK_IM, size * size).view(-1, size, size)
    f = torch.fft.ifft2(torch.complex(mag * re, mag * im)).real
    f = f - f.mean(dim=(1, 2), keepdim=True)
    u = _field(seed, ids, _S_PINK_ENV, 16).clamp(1e-7, 1 - 1e-7) - 0.5
    lap = -torch.sign(u) * torch.log1p(-2.0 * u.abs())  # Laplace(0, 1) by inverse CDF
    env = F.interpolate(
        lap.view(-1, 1, 4, 4), size=(size, size), mode="bicubic", align_corners=False
    )
    f = f * env[:, 0]
    return f / f.flatten(1).std(1).clamp_min(1e-8)[:, None, None]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class StyleGANRandomSource(Source):
    """Images of random untrained StyleGAN2-style generators (see module docstring).

    Args:
        seed: seed of networks, filters and latents.
        resolution_base: side of the constant input (StyleGAN2: 4); blocks double it up to the
            smallest power-of-two multiple >= the requested size, then resize (antialiased).
        block: images per network (paper: 400).
        pair: images per filter draw (original code: its batch size, 2).
        channel_base, channel_max: channels at resolution r are min(channel_base // r, channel_max).
        w_dim: latent width.
        bias_range: biases ~ U(-bias_range, bias_range).
        noise_max: per-image noise strength ~ U(0, noise_max).
    """

    name = "stylegan"

    def __init__(
        self,
        seed: int = 0,
        resolution_base: int = 4,
        block: int = 400,
        pair: int = 2,
        channel_base: int = 4096,
        channel_max: int = 128,
        w_dim: int = 64,
        bias_range: float = 0.2,
        noise_max: float = 0.3,
    ) -> None:
        super().__init__(seed)
        if resolution_base < 2 or block < 1 or pair < 1:
            raise ValueError("resolution_base must be >= 2, and block and pair >= 1")
        self.resolution_base, self.block, self.pair = int(resolution_base), int(block), int(pair)
        self.channel_base, self.channel_max, self.w_dim = channel_base, channel_max, int(w_dim)
        self.bias_range, self.noise_max = float(bias_range), float(noise_max)
        self._wavelets = wavelets()
        self._net_cache: OrderedDict = OrderedDict()

    def network_ids(self, indices: torch.Tensor) -> torch.Tensor:
        """Network of each image, int64 [B]: images i and j share weights iff equal."""
        return torch.as_tensor(indices, dtype=torch.int64) // self.block

    def resolutions(self, size: int) -> list[int]:
        """Block resolutions for an output of side `size`."""
        res = [self.resolution_base]
        while res[-1] < size:
            res.append(res[-1] * 2)
        return res

    def _channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))

    def _layers(self, size: int) -> list[tuple[int, int, int, bool]]:
        """Conv layers as (cin, cout, res, upsample); ToRGB follows the last conv of each res."""
        layers = []
        prev = self._channels(self.resolution_base)
        for r in self.resolutions(size):
            c = self._channels(r)
            if r != self.resolution_base:
                layers.append((prev, c, r, True))
            layers.append((c, c, r, False))
            prev = c
        return layers

    def network(self, net_id: int, size: int) -> dict[str, object]:
        """Weights of network `net_id` for outputs of side `size`, from derive_seed(seed, net_id).

        Returns {'const': [C, r0, r0], 'affine': [A_l [cin_l, w_dim] per conv layer],
        'rgb_affine': [[C_r, w_dim] per resolution]}; layers are keyed by position, so a larger
        size only appends layers.
        """
        key = (net_id, size)
        if key in self._net_cache:
            self._net_cache.move_to_end(key)
            return self._net_cache[key]
        s = derive_seed(self.seed, net_id)
        one = torch.zeros(1, dtype=torch.int64)
        r0 = self.resolution_base
        c0 = self._channels(r0)
        net = {
            "const": _gauss(s, one, _S_CONST, c0 * r0 * r0).view(c0, r0, r0),
            "affine": [
                _gauss(s, one, _layer_stream(_S_AFFINE, k), cin * self.w_dim).view(cin, self.w_dim)
                for k, (cin, _, _, _) in enumerate(self._layers(size))
            ],
            "rgb_affine": [
                _gauss(
                    s, one, _layer_stream(_S_AFFINE, 40 + k), self._channels(r) * self.w_dim
                ).view(self._channels(r), self.w_dim)
                for k, r in enumerate(self.resolutions(size))
            ],
        }
        self._net_cache[key] = net
        if len(self._net_cache) > 8:
            self._net_cache.popitem(last=False)
        return net

    def _styles(self, aff: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Affine styles 1 + A w / sqrt(w_dim): aff [B, C, D], w [B, D] -> [B, C]."""
        return 1.0 + (aff * w[:, None, :]).sum(-1) / math.sqrt(self.w_dim)

    def _conv(self, x, styles, layer, pairs, noise, strength, upsample):
        """One modulated/demodulated wavelet conv + noise + bias + LeakyReLU; x [B, cin, H, W]."""
        b, cin, _, _ = x.shape
        cout = layer[1]
        k = _layer_stream(0, layer[4])
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        # wavelet subset of 5..40 filters (random order), one filter per input channel
        keys = _field(self.seed, pairs, k + _S_WSUB, _N_WAVELETS)
        order = torch.argsort(keys, dim=1)
        n_sub = 5 + (_field(self.seed, pairs, k + _S_WNUM, 1) * (_N_WAVELETS - 4)).long()
        pick = (_field(self.seed, pairs, k + _S_WCHOICE, cin) * n_sub).long()  # [B, cin]
        filt = self._wavelets.to(x.device)[order.gather(1, pick)]  # [B, cin, 3, 3]
        gain = _gauss(self.seed, pairs, k + _S_GAIN, cout)  # [B, cout]
        bias = (2.0 * _field(self.seed, pairs, k + _S_BIAS, cout) - 1.0) * self.bias_range
        xs = (x * styles[:, :, None, None]).reshape(1, b * cin, h, w)
        y = F.conv2d(xs, filt.reshape(b * cin, 1, 3, 3), padding=1, groups=b * cin)
        y = y.view(b, cin, h, w).sum(1, keepdim=True)  # [B, 1, H, W]
        energy = (styles**2 * filt.square().sum((2, 3))).sum(1)  # [B]
        demod = gain * torch.rsqrt(gain**2 * energy[:, None] + 1e-8)  # [B, cout]
        nmap = F.interpolate(noise, size=(h, w), mode="area") * strength[:, None, None, None]
        out = demod[:, :, None, None] * y + nmap + bias[:, :, None, None]
        return _lrelu(out)

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        b = indices.numel()
        res = self.resolutions(size)
        layers = [(*lay, k) for k, lay in enumerate(self._layers(size))]
        net_ids, net_inv = torch.unique(self.network_ids(indices), return_inverse=True)
        nets = [self.network(int(n), size) for n in net_ids.tolist()]

        def per_image(getter):
            return torch.stack([getter(n) for n in nets]).to(device)[net_inv.to(device)]

        pairs = indices // self.pair
        upairs, pinv = torch.unique(pairs, return_inverse=True)
        noise = pink_noise(self.seed, upairs, res[-1])[pinv][:, None]  # [B, 1, R, R]
        n_layers = len(layers) + len(res)
        ws = F.leaky_relu(_gauss(self.seed, indices, _S_W, n_layers * self.w_dim), 0.2)
        ws = ws.view(b, n_layers, self.w_dim)
        strength = _field(self.seed, indices, _S_NOISE_STRENGTH, len(layers)) * self.noise_max

        x = per_image(lambda n: n["const"])
        img = None
        for ri, r in enumerate(res):
            for lay in layers:
                if lay[2] != r:
                    continue
                aff = per_image(lambda n, k=lay[4]: n["affine"][k])
                styles = self._styles(aff, ws[:, lay[4]])
                x = self._conv(x, styles, lay, pairs, noise, strength[:, lay[4]], lay[3])
            aff = per_image(lambda n, k=ri: n["rgb_affine"][k])
            styles = self._styles(aff, ws[:, len(layers) + ri]) / math.sqrt(x.shape[1])
            wrgb = _gauss(self.seed, pairs, _layer_stream(_S_RGB, ri), 3 * x.shape[1])
            wmod = wrgb.view(b, 3, x.shape[1]) * styles[:, None, :]  # no demodulation
            y = torch.bmm(wmod, x.flatten(2)).view(b, 3, r, r)
            img = y if img is None else F.interpolate(img, scale_factor=2, mode="bilinear") + y
        if img.shape[-1] != size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
        return self._colour(img, indices)

    def _colour(self, img: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Standardise each channel, then give it a random mean and std (spec §2.3)."""
        flat = img.flatten(2)
        z = (flat - flat.mean(2, keepdim=True)) / flat.std(
            2, unbiased=False, keepdim=True
        ).clamp_min(1e-8)
        g = _gauss(self.seed, indices, _S_COLOUR, 6).view(-1, 3, 2)
        st = torch.tensor(COLOUR_STATS, device=img.device)
        mean = st[:, 0] + st[:, 1] * g[..., 0]
        std = st[:, 2] + st[:, 3] * g[..., 1]
        return (z * std[..., None] + mean[..., None]).view_as(img)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "block": self.block,
            "pair": self.pair,
            "resolution_base": self.resolution_base,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "w_dim": self.w_dim,
            "bias_range": self.bias_range,
            "noise_max": self.noise_max,
        }
