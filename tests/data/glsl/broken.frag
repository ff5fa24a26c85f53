// Does not compile: uses an undeclared variable.
void mainImage(out vec4 fragColor, in vec2 fragCoord) {
    fragColor = vec4(undeclared_variable, 1.0);
}
