vec2 p = (FC.xy * 2.0 - r) / min(r.x, r.y);
p *= rotate2D(t * 0.3);
for (int i = 0; i < 6; i++) { p = abs(p) / dot(p, p) - vec2(0.8 + 0.1 * cos(t)); }
float n = 0.5 * snoise2D(p * 2.0) + 0.3 * snoise3D(vec3(p, t)) + 0.2 * snoise4D(vec4(p, t, 1.0));
vec3 q = rotate3D(t, vec3(1.0, 1.0, 0.0)) * vec3(p, 1.0);
o = vec4(hsv(length(p) * 0.2 + n + q.z * 0.1, 0.8, 1.0), 1.0);
