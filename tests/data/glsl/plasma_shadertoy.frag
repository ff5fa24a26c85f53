// Shadertoy format: a time-animated plasma.
void mainImage(out vec4 fragColor, in vec2 fragCoord) {
    vec2 uv = (2.0 * fragCoord - iResolution.xy) / iResolution.y;
    float v = sin(uv.x * 5.0 + iTime) + sin(uv.y * 7.0 - iTime * 1.3) + sin(length(uv) * 9.0 + iTime);
    fragColor = vec4(0.5 + 0.5 * cos(v + vec3(0.0, 2.0, 4.0)), 1.0);
}
