    class Inner:
        pass
