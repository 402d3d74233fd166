"""Torch-free image foundations: file I/O, MATLAB-compatible bicubic resize, BT.601 colour, PSNR/SSIM, benchmark datasets."""
