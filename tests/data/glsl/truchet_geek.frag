#version 300 es
precision highp float;
uniform vec2 r;
uniform float t;
out vec4 o;
void main() {
    vec2 p = gl_FragCoord.xy / r.y * 6.0 + vec2(t, 0.0);
    vec2 c = floor(p);
    float h = fract(sin(dot(c, vec2(12.9898, 78.233))) * 43758.5453);
    vec2 g = fract(p) - 0.5;
    float d = h > 0.5 ? abs(abs(g.x + g.y) - 0.5) : abs(abs(g.x - g.y) - 0.5);
    o = vec4(smoothstep(0.15, 0.0, d) * vec3(h, 0.6, 1.0 - h) + 0.1, 1.0);
}
