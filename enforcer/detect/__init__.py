"""Detection: sensor events checked against profiles, research rules and feeds; alerts
folded into incidents, stored and published."""

from .alerts import FOLD_WINDOW, AlertBook
from .detector import Detector

__all__ = ["AlertBook", "Detector", "FOLD_WINDOW"]
