class A:
    '''never closed
