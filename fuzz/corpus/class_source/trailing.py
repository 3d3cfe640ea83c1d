class A:
    pass
if __name__ == '__main__':
    A()
