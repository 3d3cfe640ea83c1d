class L:
    t = 1 + \
        2
    s = 'a \
b'
    n = (
'x')
