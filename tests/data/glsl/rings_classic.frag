precision highp float;
uniform vec2 resolution;
uniform vec2 mouse;
uniform float time;
uniform sampler2D backbuffer;
void main() {
    vec2 p = (gl_FragCoord.xy * 2.0 - resolution) / min(resolution.x, resolution.y);
    float d = length(p);
    gl_FragColor = vec4(0.5 + 0.5 * sin(d * 20.0 - time * 3.0), fract(d * 3.0), p.x * 0.5 + 0.5, 1.0);
}
