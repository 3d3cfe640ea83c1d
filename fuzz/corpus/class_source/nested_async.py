class O:
    class I:
        pass
    async def f(self):
        async with x as y:
            await y
