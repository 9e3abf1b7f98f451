"""Static analysis of a plugin's code at build, tied to what its manifest asks for."""
