"""Analysis tools built on top of the training engine (studies that instrument training, not replace it)."""
