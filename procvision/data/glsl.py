"""Real GLSL fragment shaders (Shadertoy and TwiGL formats) rendered with moderngl (spec §2.1).

Image i: a uniformly drawn program of the folder, rendered at t ~ U(0.1, 10) in a headless OpenGL
context (EGL: Mesa llvmpipe on CPU machines, the vendor driver on GPU machines), flipped vertically
(OpenGL's row 0 is the bottom), alpha dropped. A program that fails to compile or render is logged
and recorded in `failures`; the next program of the folder takes its place, so the stream never
stops while one valid program exists. Rendering is one draw call per image on the CPU side of the
context; the result is moved to the requested device.

Formats, detected from the source:
- Shadertoy: defines `mainImage(out vec4, in vec2)`; uniforms iTime, iResolution=(R,R,R),
  iMouse=0, iFrame, iDate=(3,10,3,2021), iTimeDelta=1/fps. A Shadertoy JSON export
  (`{"renderpass": [...]}`) is accepted when it has exactly one render pass.
- TwiGL classic/geek (a full shader with `void main`): the shader declares its own uniforms
  `time|t`, `resolution|r`, `mouse|m`, `frame|f`, `backbuffer|b`; whichever exist are set.
- TwiGL geeker/geekest (only the body of main): wrapped with `FC`, the short uniforms, the geekest
  helpers (snoise2D/3D/4D, hsv, rotate2D, rotate3D, fsnoise, PI) and output `o` (300 es style) or
  gl_FragColor (WebGL 1 style).
WebGL sources are compiled as desktop GLSL (`#version` replaced, gl_FragColor and texture2D mapped).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from procvision.data.folder import (
    SourceFolderError,
    UnreadableFolderError,
    failure_summary,
    list_files,
)
from procvision.data.rng import randint, uniform
from procvision.data.source import Source
from procvision.errors import UserError

log = logging.getLogger(__name__)

SHADER_EXTENSIONS = (".frag", ".glsl", ".fs", ".fragment", ".json")
FPS = 10.0  # Shaders21k's renderer default; sets iFrame = floor(t * FPS) and iTimeDelta
T_RANGE = (0.1, 10.0)
_S_PROGRAM = 1
_S_TIME = 2

_VERTEX = """
in vec2 in_vert;
void main() { gl_Position = vec4(in_vert, 0.0, 1.0); }
"""

_SHADERTOY_HEADER = """
uniform vec3 iResolution;
uniform float iTime;
uniform float iTimeDelta;
uniform float iFrameRate;
uniform int iFrame;
uniform vec4 iMouse;
uniform vec4 iDate;
uniform float iSampleRate;
uniform float iChannelTime[4];
uniform vec3 iChannelResolution[4];
uniform sampler2D iChannel0;
uniform sampler2D iChannel1;
uniform sampler2D iChannel2;
uniform sampler2D iChannel3;
out vec4 pv_frag_out;
void mainImage(out vec4 fragColor, in vec2 fragCoord);
void main() {
    vec4 c = vec4(0.0, 0.0, 0.0, 1.0);
    mainImage(c, gl_FragCoord.xy);
    pv_frag_out = vec4(c.rgb, 1.0);
}
"""

# TwiGL's short-form environment, re-implemented from the helpers' definitions (spec §2.1):
# Ashima-style simplex noise in 2/3/4D, hsv -> rgb, 2D/3D rotation matrices.
_TWIGL_HEADER = """
#define FC gl_FragCoord
precision highp float;
uniform vec2 r;
uniform vec2 m;
uniform float t;
uniform float f;
uniform float s;
uniform sampler2D b;
const float PI = 3.141592653589793;
const float PI2 = PI * 2.0;
vec4 pv_mod289(vec4 x) { return x - floor(x / 289.0) * 289.0; }
vec3 pv_mod289(vec3 x) { return x - floor(x / 289.0) * 289.0; }
vec2 pv_mod289(vec2 x) { return x - floor(x / 289.0) * 289.0; }
float pv_mod289(float x) { return x - floor(x / 289.0) * 289.0; }
vec4 pv_perm(vec4 x) { return pv_mod289((x * 34.0 + 1.0) * x); }
vec3 pv_perm(vec3 x) { return pv_mod289((x * 34.0 + 1.0) * x); }
float pv_perm(float x) { return pv_mod289((x * 34.0 + 1.0) * x); }
vec4 pv_isqrt(vec4 x) { return 1.79284291400159 - 0.85373472095314 * x; }
float pv_isqrt(float x) { return 1.79284291400159 - 0.85373472095314 * x; }
float snoise2D(vec2 v) {
    const float K1 = 0.366025403784439;   // (sqrt(3) - 1) / 2: skew to the simplex lattice
    const float K2 = 0.211324865405187;   // (3 - sqrt(3)) / 6: unskew back
    vec2 i = floor(v + dot(v, vec2(K1)));
    vec2 x0 = v - i + dot(i, vec2(K2));
    vec2 o1 = x0.x > x0.y ? vec2(1.0, 0.0) : vec2(0.0, 1.0);
    vec2 x1 = x0 - o1 + K2;
    vec2 x2 = x0 - 1.0 + 2.0 * K2;
    i = pv_mod289(i);
    vec3 p = pv_perm(pv_perm(i.y + vec3(0.0, o1.y, 1.0)) + i.x + vec3(0.0, o1.x, 1.0));
    vec3 w = max(0.5 - vec3(dot(x0, x0), dot(x1, x1), dot(x2, x2)), 0.0);
    w = w * w; w = w * w;
    vec3 gx = 2.0 * fract(p / 41.0) - 1.0;      // 41 gradients on a diamond
    vec3 h = abs(gx) - 0.5;
    vec3 a0 = gx - floor(gx + 0.5);
    w *= 1.79284291400159 - 0.85373472095314 * (a0 * a0 + h * h);
    vec3 g = vec3(a0.x * x0.x + h.x * x0.y, a0.y * x1.x + h.y * x1.y, a0.z * x2.x + h.z * x2.y);
    return 130.0 * dot(w, g);
}
float snoise3D(vec3 v) {
    vec3 i = floor(v + dot(v, vec3(1.0 / 3.0)));
    vec3 x0 = v - i + dot(i, vec3(1.0 / 6.0));
    vec3 g = step(x0.yzx, x0.xyz);
    vec3 l = 1.0 - g;
    vec3 i1 = min(g, l.zxy);
    vec3 i2 = max(g, l.zxy);
    vec3 x1 = x0 - i1 + 1.0 / 6.0;
    vec3 x2 = x0 - i2 + 1.0 / 3.0;
    vec3 x3 = x0 - 0.5;
    i = pv_mod289(i);
    vec4 p = pv_perm(pv_perm(pv_perm(i.z + vec4(0.0, i1.z, i2.z, 1.0))
             + i.y + vec4(0.0, i1.y, i2.y, 1.0)) + i.x + vec4(0.0, i1.x, i2.x, 1.0));
    vec4 j = p - 49.0 * floor(p / 49.0);          // 7x7 gradients on an octahedron
    vec4 gx = floor(j / 7.0);
    vec4 gy = floor(j - 7.0 * gx);
    gx = gx * (2.0 / 7.0) + (1.0 / 7.0 - 1.0);
    gy = gy * (2.0 / 7.0) + (1.0 / 7.0 - 1.0);
    vec4 gz = 1.0 - abs(gx) - abs(gy);
    vec4 fold = -step(gz, vec4(0.0));
    gx += (floor(gx) * 2.0 + 1.0) * fold;
    gy += (floor(gy) * 2.0 + 1.0) * fold;
    vec3 g0 = vec3(gx.x, gy.x, gz.x), g1 = vec3(gx.y, gy.y, gz.y);
    vec3 g2 = vec3(gx.z, gy.z, gz.z), g3 = vec3(gx.w, gy.w, gz.w);
    vec4 nrm = pv_isqrt(vec4(dot(g0, g0), dot(g1, g1), dot(g2, g2), dot(g3, g3)));
    g0 *= nrm.x; g1 *= nrm.y; g2 *= nrm.z; g3 *= nrm.w;
    vec4 w = max(0.6 - vec4(dot(x0, x0), dot(x1, x1), dot(x2, x2), dot(x3, x3)), 0.0);
    w = w * w;
    return 42.0 * dot(w * w, vec4(dot(g0, x0), dot(g1, x1), dot(g2, x2), dot(g3, x3)));
}
vec4 pv_grad4(float j, vec4 ip) {
    vec4 p;
    p.xyz = floor(fract(vec3(j) * ip.xyz) * 7.0) * ip.z - 1.0;
    p.w = 1.5 - dot(abs(p.xyz), vec3(1.0));
    vec4 neg = vec4(lessThan(p, vec4(0.0)));
    p.xyz += (neg.xyz * 2.0 - 1.0) * neg.www;
    return p;
}
float snoise4D(vec4 v) {
    const float G4 = 0.138196601125011;            // (5 - sqrt(5)) / 20
    vec4 i = floor(v + dot(v, vec4(0.309016994374947451)));
    vec4 x0 = v - i + dot(i, vec4(G4));
    vec4 rank = vec4(0.0);                          // rank of each coordinate of x0
    vec3 isX = step(x0.yzw, x0.xxx);
    vec3 isYZ = step(x0.zww, x0.yyz);
    rank.x = isX.x + isX.y + isX.z;
    rank.yzw = 1.0 - isX;
    rank.y += isYZ.x + isYZ.y;
    rank.zw += 1.0 - isYZ.xy;
    rank.z += isYZ.z;
    rank.w += 1.0 - isYZ.z;
    vec4 i3 = clamp(rank, 0.0, 1.0);
    vec4 i2 = clamp(rank - 1.0, 0.0, 1.0);
    vec4 i1 = clamp(rank - 2.0, 0.0, 1.0);
    vec4 x1 = x0 - i1 + G4;
    vec4 x2 = x0 - i2 + 2.0 * G4;
    vec4 x3 = x0 - i3 + 3.0 * G4;
    vec4 x4 = x0 - 1.0 + 4.0 * G4;
    i = pv_mod289(i);
    float j0 = pv_perm(pv_perm(pv_perm(pv_perm(i.w) + i.z) + i.y) + i.x);
    vec4 j1 = pv_perm(pv_perm(pv_perm(pv_perm(i.w + vec4(i1.w, i2.w, i3.w, 1.0))
              + i.z + vec4(i1.z, i2.z, i3.z, 1.0)) + i.y + vec4(i1.y, i2.y, i3.y, 1.0))
              + i.x + vec4(i1.x, i2.x, i3.x, 1.0));
    vec4 ip = vec4(1.0 / 294.0, 1.0 / 49.0, 1.0 / 7.0, 0.0);
    vec4 p0 = pv_grad4(j0, ip), p1 = pv_grad4(j1.x, ip), p2 = pv_grad4(j1.y, ip);
    vec4 p3 = pv_grad4(j1.z, ip), p4 = pv_grad4(j1.w, ip);
    vec4 nrm = pv_isqrt(vec4(dot(p0, p0), dot(p1, p1), dot(p2, p2), dot(p3, p3)));
    p0 *= nrm.x; p1 *= nrm.y; p2 *= nrm.z; p3 *= nrm.w;
    p4 *= pv_isqrt(dot(p4, p4));
    vec3 w0 = max(0.6 - vec3(dot(x0, x0), dot(x1, x1), dot(x2, x2)), 0.0);
    vec2 w1 = max(0.6 - vec2(dot(x3, x3), dot(x4, x4)), 0.0);
    w0 = w0 * w0; w1 = w1 * w1;
    return 49.0 * (dot(w0 * w0, vec3(dot(p0, x0), dot(p1, x1), dot(p2, x2)))
                 + dot(w1 * w1, vec2(dot(p3, x3), dot(p4, x4))));
}
float fsnoise(vec2 c) { return fract(sin(dot(c, vec2(12.9898, 78.233))) * 43758.5453); }
float fsnoiseDigits(vec2 c) { return fract(sin(dot(c, vec2(0.129898, 0.78233))) * 437.585453); }
vec3 hsv(float h, float s, float v) {
    vec3 k = abs(fract(vec3(h) + vec3(1.0, 2.0 / 3.0, 1.0 / 3.0)) * 6.0 - 3.0);
    return v * mix(vec3(1.0), clamp(k - 1.0, 0.0, 1.0), s);
}
mat2 rotate2D(float a) { return mat2(cos(a), sin(a), -sin(a), cos(a)); }
mat3 rotate3D(float angle, vec3 axis) {
    vec3 a = normalize(axis);
    float s = sin(angle), c = cos(angle), k = 1.0 - c;
    return mat3(a.x * a.x * k + c, a.y * a.x * k + a.z * s, a.z * a.x * k - a.y * s,
                a.x * a.y * k - a.z * s, a.y * a.y * k + c, a.z * a.y * k + a.x * s,
                a.x * a.z * k + a.y * s, a.y * a.z * k - a.x * s, a.z * a.z * k + c);
}
"""

_FULLSCREEN = np.array([-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0], dtype="f4")
_RE_VERSION = re.compile(r"^[ \t]*#[ \t]*version[^\n]*", re.MULTILINE)
_RE_FRAGCOLOR = re.compile(r"\bgl_FragColor\b")
_RE_TEXTURE2D = re.compile(r"\btexture2D\b")
_RE_MAIN = re.compile(r"\bvoid\s+main\s*\(")
_RE_MAINIMAGE = re.compile(r"\bmainImage\s*\(")


class GLContextError(UserError, RuntimeError):
    """No headless OpenGL context on this machine; the message says what to install."""


class ShaderError(Exception):
    """A shader that cannot be used; the message is the reason recorded in `failures`."""


def read_shader(path: Path) -> str:
    """The fragment code of a shader file; Shadertoy JSON must have exactly one render pass."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() != ".json":
        return text
    try:
        passes = json.loads(text)["renderpass"]
    except (ValueError, KeyError, TypeError) as e:
        raise ShaderError(f"not a Shadertoy JSON export ({type(e).__name__}: {e})") from e
    if len(passes) != 1:
        raise ShaderError(f"{len(passes)} render passes; only single-pass shaders are supported")
    return passes[0]["code"]


def shader_format(code: str) -> str:
    """'shadertoy', 'twigl_full' (classic/geek) or 'twigl_body' (geeker/geekest)."""
    if _RE_MAINIMAGE.search(code):
        return "shadertoy"
    if _RE_MAIN.search(code):
        return "twigl_full"
    return "twigl_body"


def fragment_source(code: str, glsl_version: int) -> str:
    """Complete desktop-GLSL fragment shader for Shadertoy or TwiGL code."""
    kind = shader_format(code)
    body = _RE_TEXTURE2D.sub("texture", _RE_VERSION.sub("", code))
    head = f"#version {glsl_version}\n"
    if kind == "shadertoy":
        return head + _SHADERTOY_HEADER + "\n#line 1\n" + body
    uses_fragcolor = _RE_FRAGCOLOR.search(body) is not None
    body = _RE_FRAGCOLOR.sub("pv_frag_out", body)
    out_decl = "out vec4 pv_frag_out;\n" if uses_fragcolor else ""
    if kind == "twigl_full":
        return head + out_decl + "#line 1\n" + body
    if not uses_fragcolor:
        out_decl = "out vec4 o;\n"
    return head + _TWIGL_HEADER + out_decl + "void main() {\n#line 1\n" + body + "\n}\n"


def _uniform_values(size: int, t: float) -> dict[str, object]:
    """Values of every uniform name the formats use (spec §2.1)."""
    frame = int(t * FPS)
    r = float(size)
    return {
        "iTime": t, "iResolution": (r, r, r), "iMouse": (0.0, 0.0, 0.0, 0.0), "iFrame": frame,
        "iDate": (3.0, 10.0, 3.0, 2021.0), "iTimeDelta": 1.0 / FPS, "iFrameRate": FPS,
        "iSampleRate": 44100.0,
        "t": t, "time": t, "r": (r, r), "resolution": (r, r), "m": (0.0, 0.0),
        "mouse": (0.0, 0.0), "f": float(frame), "frame": float(frame), "b": 0, "backbuffer": 0,
    }  # fmt: skip


def create_context():
    """A headless moderngl context: EGL first, then the platform default.

    Mesa's llvmpipe rasterizer threads do not survive fork(), so a DataLoader worker forked from
    a process that already rendered would hang on its first read. LP_NUM_THREADS=0 (rasterize in
    the calling thread; DataLoader workers supply the parallelism) makes that safe; it is set
    unless the user chose a value.
    """
    os.environ.setdefault("LP_NUM_THREADS", "0")
    import moderngl

    errors = []
    for kwargs in ({"backend": "egl"}, {}):
        try:
            return moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as e:  # noqa: BLE001 - any backend failure means "try the next"
            errors.append(f"{kwargs or 'default'}: {e}")
    raise GLContextError(
        "cannot create a headless OpenGL 3.3 context ("
        + "; ".join(errors)
        + "). On Debian/Ubuntu install libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"
    )


class GLSLSource(Source):
    """Shadertoy / TwiGL fragment shaders of a folder, rendered with OpenGL.

    Args:
        root: folder searched recursively for shader files.
        seed: seed of program choice and time.
        extensions: file suffixes accepted.
        cache_size: compiled programs kept alive (least recently used are released).
    Attributes:
        failures: shader name -> reason, for every program found unusable so far.
    """

    name = "glsl"

    def __init__(
        self,
        root: str | Path,
        seed: int = 0,
        extensions: tuple[str, ...] = SHADER_EXTENSIONS,
        cache_size: int = 256,
    ) -> None:
        super().__init__(seed)
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceFolderError(
                f"shader folder {str(self.root)!r} does not exist; pass root=<folder of shaders>"
            )
        self.files = list_files(self.root, tuple(extensions))
        if not self.files:
            raise SourceFolderError(
                f"shader folder {str(self.root)!r} has no files with suffix in {tuple(extensions)}"
            )
        self.cache_size = int(cache_size)
        self.failures: dict[str, str] = {}
        self._gl = None  # (ctx, vbo, glsl_version), created lazily in the rendering process
        self._gl_pid = -1
        self._programs: OrderedDict = OrderedDict()
        self._fbos: dict = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        # GL objects belong to one process: each DataLoader worker makes its own context.
        state = self.__dict__.copy()
        state.update(_gl=None, _programs=OrderedDict(), _fbos={})
        return state

    def times(self, indices: torch.Tensor) -> torch.Tensor:
        """Render time t ~ U(0.1, 10) per index, float64 [B]."""
        u = uniform(self.seed, torch.as_tensor(indices, dtype=torch.int64), _S_TIME).double()
        return T_RANGE[0] + (T_RANGE[1] - T_RANGE[0]) * u

    def drawn_programs(self, indices: torch.Tensor) -> torch.Tensor:
        """The uniformly drawn program per index, int64 [B] (before replacing failed ones)."""
        return randint(
            self.seed, torch.as_tensor(indices, dtype=torch.int64), _S_PROGRAM, len(self)
        )

    def _context(self):
        if self._gl is not None and self._gl_pid != os.getpid():
            # a forked worker inherited the parent's GL objects: they are not its own to use
            self._gl, self._programs, self._fbos = None, OrderedDict(), {}
        if self._gl is None:
            self._gl_pid = os.getpid()
            ctx = create_context()
            version = 430 if ctx.version_code >= 430 else 330
            self._gl = (ctx, ctx.buffer(_FULLSCREEN.tobytes()), version)
        return self._gl

    def _compile(self, p: int):
        """(program, vao) of file p, cached; raises ShaderError with the reason."""
        ctx, vbo, version = self._context()  # first: it drops GL objects inherited by a fork
        if p in self._programs:
            self._programs.move_to_end(p)
            return self._programs[p]
        try:
            code = read_shader(self.root / self.files[p])
            prog = ctx.program(
                vertex_shader=f"#version {version}\n{_VERTEX}",
                fragment_shader=fragment_source(code, version),
            )
        except ShaderError:
            raise
        except Exception as e:  # noqa: BLE001 - moderngl raises its own Error; all mean "skip"
            raise ShaderError(" ".join(str(e).split())[:500]) from e
        vao = ctx.vertex_array(prog, [(vbo, "2f", "in_vert")])
        self._programs[p] = (prog, vao)
        if len(self._programs) > self.cache_size:
            _, (old_prog, old_vao) = self._programs.popitem(last=False)
            old_vao.release()
            old_prog.release()
        return prog, vao

    def _fbo(self, size: int):
        ctx = self._context()[0]
        if size not in self._fbos:
            self._fbos[size] = ctx.simple_framebuffer((size, size), components=4)
        return self._fbos[size]

    def _draw(self, p: int, size: int, t: float) -> np.ndarray:
        """uint8 [size, size, 3] image of program p at time t (top row first)."""
        import moderngl

        prog, vao = self._compile(p)
        values = _uniform_values(size, t)
        for name in prog:
            member = prog[name]
            if isinstance(member, moderngl.Uniform) and name in values:
                v = values[name]
                member.value = int(v) if member.fmt.endswith("i") and member.dimension == 1 else v
        ctx = self._context()[0]
        fbo = self._fbo(size)
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 1.0)
        vao.render(moderngl.TRIANGLE_STRIP)
        err = ctx.error
        if err != "GL_NO_ERROR":
            raise ShaderError(f"render error {err}")
        data = np.frombuffer(fbo.read(components=3, alignment=1), dtype=np.uint8)
        return data.reshape(size, size, 3)[::-1]

    def _render_one(self, p: int, size: int, t: float) -> np.ndarray:
        """Image of the first usable program from p on (failures are recorded and skipped)."""
        n = len(self)
        for k in range(n):
            q = (p + k) % n
            name = self.files[q]
            if name in self.failures:
                continue
            try:
                return self._draw(q, size, t)
            except ShaderError as e:
                self.failures[name] = str(e)
                log.warning("skipping shader %s: %s", name, e)
        raise UnreadableFolderError(
            f"no shader in {str(self.root)!r} compiles and renders ({failure_summary(self.failures)}); "
            "fix the shaders or pass a --root with working ones"
        )

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        progs = self.drawn_programs(indices.cpu()).tolist()
        times = self.times(indices.cpu()).tolist()
        imgs = np.stack([self._render_one(p, size, t) for p, t in zip(progs, times, strict=True)])
        out = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
        return out.to(device)

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root), "n_programs": len(self)}
