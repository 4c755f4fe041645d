"""Training: pretraining data (``training.pretraining``: documents, NSP pairs, masking) and the loop
(``training.trainer``)."""
