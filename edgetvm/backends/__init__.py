"""Backends: the artifact on disk (TVM VM library, or standalone C module), and the LLVM IR rewrites for NEON."""
