"""Class bookkeeping shared by the plugins."""
from __future__ import annotations

from typing import Any, Set

__all__ = ["experience_classes"]


def experience_classes(experience: Any) -> Set[int]:
    """Classes of a training experience: its ``classes_in_this_experience``, else its dataset's targets."""
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        classes = experience.dataset.targets.uniques
    return {int(c) for c in classes}
