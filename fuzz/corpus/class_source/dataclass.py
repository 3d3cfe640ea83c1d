@dataclass(frozen=True)
class Point:
    """A point."""
    x: float
    y: float = 0.0

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5
