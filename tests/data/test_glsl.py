"""GLSL shaders (Shadertoy and TwiGL formats) rendered headless with moderngl (EGL / llvmpipe)."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("moderngl")  # the optional `glsl` extra

from procvision.data.glsl import GLSLSource, shader_format  # noqa: E402

SHADERS = Path(__file__).parent / "glsl"

# The same picture in each format: R = x / width, G = y / height (y up), B = t / 10.
UV_SHADERS = {
    "shadertoy.frag": """
void mainImage(out vec4 fragColor, in vec2 fragCoord) {
    fragColor = vec4(fragCoord / iResolution.xy, iTime / 10.0, 1.0);
}""",
    "classic.frag": """
precision highp float;
uniform vec2 resolution;
uniform float time;
void main() { gl_FragColor = vec4(gl_FragCoord.xy / resolution, time / 10.0, 1.0); }""",
    "geek300.frag": """#version 300 es
precision highp float;
uniform vec2 r;
uniform float t;
out vec4 outColor;
void main() { outColor = vec4(gl_FragCoord.xy / r, t / 10.0, 1.0); }""",
    "geekest.frag": "o = vec4(FC.xy / r, t / 10.0, 1.0);",
    "geeker_webgl1.frag": "gl_FragColor = vec4(FC.xy / r, t / 10.0, 1.0);",
}


def _single(tmp_path: Path, name: str, code: str) -> GLSLSource:
    (tmp_path / name).write_text(code)
    return GLSLSource(tmp_path, seed=4)


@pytest.mark.parametrize("name", sorted(UV_SHADERS))
def test_formats_uniforms_and_orientation(tmp_path, name):
    src = _single(tmp_path, name, UV_SHADERS[name])
    idx = torch.tensor([0, 7, 19])
    x = src.render(idx, 16)
    assert src.failures == {}
    centre = (torch.arange(16) + 0.5) / 16
    tol = dict(atol=1 / 255, rtol=0)
    torch.testing.assert_close(x[:, 0], centre.expand(3, 16, 16), **tol)  # x grows rightwards
    torch.testing.assert_close(
        x[:, 1], centre.flip(0)[:, None].expand(3, 16, 16), **tol
    )  # top row: y max
    t = src.times(idx).float()
    assert torch.all((t >= 0.1) & (t <= 10.0))
    torch.testing.assert_close(x[:, 2], (t / 10)[:, None, None].expand(3, 16, 16), **tol)


def test_shader_format_detection():
    assert shader_format(UV_SHADERS["shadertoy.frag"]) == "shadertoy"
    assert shader_format(UV_SHADERS["classic.frag"]) == "twigl_full"
    assert shader_format(UV_SHADERS["geekest.frag"]) == "twigl_body"


def test_test_shaders_render_and_broken_one_is_skipped():
    src = GLSLSource(SHADERS, seed=0)
    assert len(src) == 5
    idx = torch.arange(24)
    x = src.render(idx, 32)
    assert x.shape == (24, 3, 32, 32) and torch.isfinite(x).all()
    assert list(src.failures) == ["broken.frag"]
    assert "undeclared_variable" in src.failures["broken.frag"]
    broken = src.files.index("broken.frag")
    assert (src.drawn_programs(idx) == broken).any()  # it was drawn, and replaced
    for p, name in enumerate(src.files):  # every other test shader compiles and is not flat
        if name != "broken.frag":
            img = src._render_one(p, 32, 1.5)
            assert img.std() > 5, name
    assert src.failures.keys() == {"broken.frag"}
    split = torch.cat([src.render(idx[:5], 32), src.render(idx[5:], 32)])
    assert torch.equal(x, split)
    # picklable for DataLoader workers: the copy makes its own GL context
    copy = pickle.loads(pickle.dumps(src))
    assert torch.equal(copy.render(idx[:4], 32), x[:4])


def test_twigl_helpers(tmp_path):
    code = """
float n2 = snoise2D(FC.xy * 0.2), n3 = snoise3D(vec3(FC.xy * 0.2, t)), n4 = snoise4D(vec4(FC.xy * 0.2, t, 1.0));
vec3 red = hsv(0.0, 1.0, 1.0), green = hsv(1.0 / 3.0, 1.0, 1.0);
vec2 q = rotate2D(PI / 2.0) * vec2(1.0, 0.0);
vec3 z = rotate3D(PI / 2.0, vec3(0.0, 0.0, 1.0)) * vec3(1.0, 0.0, 0.0);
bool ok = red == vec3(1.0, 0.0, 0.0) && green == vec3(0.0, 1.0, 0.0)
    && abs(q.x) < 1e-5 && abs(abs(q.y) - 1.0) < 1e-5 && abs(abs(z.y) - 1.0) < 1e-5;
o = FC.x < r.x * 0.5 ? vec4(0.5 + 0.5 * n2, 0.5 + 0.5 * n3, 0.5 + 0.5 * n4, 1.0)
                     : vec4(ok ? 1.0 : 0.0, 0.0, 0.0, 1.0);
"""
    x = _single(tmp_path, "helpers.frag", code).render(torch.arange(2), 32)
    assert torch.all(x[:, 0, :, 16:] == 1.0)  # hsv and rotations as defined
    noise = x[:, :, :, :16]
    assert noise.std() > 0.08 and 0.3 < noise.mean() < 0.7  # simplex noises in [-1, 1]


def test_shadertoy_json_single_pass_only(tmp_path):
    one = {"renderpass": [{"code": UV_SHADERS["shadertoy.frag"]}]}
    two = {"renderpass": [{"code": "x"}, {"code": "y"}]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(two))
    src = GLSLSource(tmp_path)
    x = src.render(torch.arange(8), 8)
    assert "render passes" in src.failures["two.json"]
    assert torch.isfinite(x).all()


def test_all_failing_folder_raises_naming_it(tmp_path):
    shutil.copy(SHADERS / "broken.frag", tmp_path)
    src = GLSLSource(tmp_path)
    with pytest.raises(RuntimeError, match=re.escape(str(tmp_path))):
        src.render(torch.arange(2), 8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        GLSLSource(tmp_path / "nowhere")


class _Images(torch.utils.data.Dataset):
    def __init__(self, src: GLSLSource) -> None:
        self.src = src

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.src.render([i], 16)[0]


def test_forked_worker_makes_its_own_context():
    src = GLSLSource(SHADERS, seed=2)
    parent = src.render(torch.arange(4), 16)  # the parent holds a GL context before forking
    loader = torch.utils.data.DataLoader(
        _Images(src), batch_size=4, num_workers=1, multiprocessing_context="fork"
    )
    assert torch.equal(next(iter(loader)), parent)
