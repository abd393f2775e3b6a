"""TIR kernel definitions and microkernels (fp32 and int8, NEON and x86)."""
