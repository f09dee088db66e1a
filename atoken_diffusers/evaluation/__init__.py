"""Evaluation: parity with the official implementation, reconstruction quality."""
