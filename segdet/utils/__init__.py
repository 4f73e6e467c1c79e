"""Small utilities that are not part of the model: drawing predictions."""
