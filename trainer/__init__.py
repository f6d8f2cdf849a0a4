"""The trainer: data from events and judgments, negatives, losses, training, evaluation, export, publish."""
