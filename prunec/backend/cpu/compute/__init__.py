"""TE computes and Relax legalizations of the CPU kernels, one module per op family (the blocks
they name are what the schedule rules recognize)."""
