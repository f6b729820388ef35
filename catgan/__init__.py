"""catgan: a reproducible DCGAN study on 64x64 cat faces."""
