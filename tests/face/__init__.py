"""The face SDK on top of edgetvm (edgetvm/face)."""
