"""Region proposal network."""
from .rpn import RPN, RPNHead

__all__ = ["RPN", "RPNHead"]
