"""Entry-point scripts (make demo, make gpu-check) and the GPU check's helpers."""
