# c
@register(
    name="r",  # comment
    tags=['a', "b"],
)
@total_ordering
class R(Base, metaclass=Meta):
    items = {}
